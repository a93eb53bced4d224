"""What the token tree view draws with besides the icicle's own item (explorer.gui.tree.icicle_item): its view box
(wheel zooms x; with Ctrl or Shift, y), the followed range, and the export and menu helpers.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import pyqtgraph as pg
from pyqtgraph import exporters
from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QGuiApplication, QPainter
from PySide6.QtSvg import QSvgGenerator
from PySide6.QtWidgets import QGraphicsItem, QMenu, QToolButton

from explorer.core.tree.layout import display_token
from explorer.core.tree.token_tree import ROOT


class IcicleViewBox(pg.ViewBox):
    """The wheel zooms along x (token positions); with Ctrl or Shift held, along y (shares)."""

    def wheelEvent(self, ev, axis=None):  # noqa: N802 (pyqtgraph override)
        mods = ev.modifiers()
        vertical = bool(mods & (Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier))
        super().wheelEvent(ev, axis=1 if vertical else 0)


class RangeExtent(pg.GraphicsObject):
    """Draws nothing; widens the auto-range to x = `end` (None: no effect). While a tree grows, the followed range
    then moves in steps ahead of it (stepped_end) instead of at every refresh: each move redraws the axes and the
    x-linked side plot, about two thirds of a refresh's drawing."""

    def __init__(self):
        super().__init__()
        self.end: Optional[float] = None
        self.setFlag(self.GraphicsItemFlag.ItemHasNoContents)

    def set_end(self, end: Optional[float]) -> None:
        if end != self.end:
            self.end = end
            self.informViewBoundsChanged()

    def dataBounds(self, ax, frac=1.0, orthoRange=None):  # noqa: N802, N803 (pyqtgraph's names)
        return (self.end, self.end) if ax == 0 and self.end is not None else None

    def boundingRect(self):  # noqa: N802 (Qt override)
        return QRectF()

    def paint(self, *args) -> None:
        pass


def stepped_end(x_max: float) -> float:
    """Past x_max, on a grid of 8 tokens or a quarter of the largest power of two under x_max, whichever is more."""
    step = max(8.0, 2.0 ** math.floor(math.log2(max(x_max, 1.0))) / 4.0)
    return math.ceil((x_max + 1.0) / step) * step


def cache_axes(*axes) -> None:
    """Keep each axis drawn in a pixmap until it changes. pyqtgraph replays an axis's recorded QPicture on every
    paint of its view, and replaying tick labels costs ~1-2 ms per axis: while a run streams, the views repaint
    several times a second, mostly for the data, not the axes. No SI prefixes either (positions, probabilities
    and nats never need one): the prefix check re-lays out the axis label's HTML at every range change."""
    for axis in axes:
        axis.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        axis.enableAutoSIPrefix(False)


@contextmanager
def _uncached(scene):
    """Items drawn directly while exporting: a cached item would go into an SVG as a bitmap."""
    cached = [(it, it.cacheMode()) for it in scene.items() if it.cacheMode() != QGraphicsItem.CacheMode.NoCache]
    for it, _ in cached:
        it.setCacheMode(QGraphicsItem.CacheMode.NoCache)
    try:
        yield
    finally:
        for it, mode in cached:
            it.setCacheMode(mode)


def export_graphics(item, path) -> None:
    """Write a graphics item (and what it holds) as PNG or SVG, chosen by the file's suffix."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".png", ".svg"):
        raise ValueError(f"cannot export the tree as {path.name!r}: use a .png or .svg file name")
    if not path.parent.is_dir():
        raise OSError(f"cannot export the tree to {path}: folder {path.parent} does not exist")
    if suffix == ".png":
        exporters.ImageExporter(item).export(str(path))
    else:
        with _uncached(item.scene()):
            try:
                exporters.SVGExporter(item).export(str(path))
            except ValueError:
                # pyqtgraph's SVG post-processing cannot parse the closing "Z" of the clip paths Qt >= 6.10
                # writes; QSvgGenerator renders the same scene into a valid SVG instead.
                _render_svg(item, path)
    if not path.is_file():
        raise OSError(f"cannot export the tree to {path}: the file was not written")


def _render_svg(item, path: Path) -> None:
    source = item.sceneBoundingRect()
    generator = QSvgGenerator()
    generator.setFileName(str(path))
    generator.setSize(QSize(int(source.width()), int(source.height())))
    generator.setViewBox(QRectF(0, 0, source.width(), source.height()))
    generator.setTitle("Token tree")
    views = item.scene().views()
    if views:  # cached QPictures (the axes) replay scaled by the ratio of recording and target resolutions
        generator.setResolution(views[0].logicalDpiX())
    painter = QPainter(generator)
    # Export mode makes scatters draw each marker as a shape (not pixmap fragments from the symbol atlas).
    items = [it for it in item.scene().items() if hasattr(it, "setExportMode")]
    try:
        if views:
            painter.fillRect(QRectF(0, 0, source.width(), source.height()), views[0].backgroundBrush())
        for it in items:
            it.setExportMode(True, {"antialias": True, "background": None, "painter": painter})
        item.scene().render(painter, QRectF(0, 0, source.width(), source.height()), source)
    finally:
        painter.end()
        for it in items:
            it.setExportMode(False)


def node_menu(view, node: int) -> QMenu:
    """The context menu of a tree view's node or ghost; its "branch" action emits the view's branch_requested."""
    tree = view.tree
    menu = QMenu(view)
    prefix = tree.branch_prefix(node)
    k = view.branch_k()
    if prefix.forced_token is not None:
        text = f"Branch here ({k} rollouts, forcing “{display_token(tree.text(node))}”)"
    elif node == ROOT:
        text = f"Branch here ({k} new rollouts from the prompt)"
    else:
        text = f"Branch here ({k} rollouts after “{display_token(tree.text(node))}”)"
    branch = menu.addAction(text)
    branch.setData("branch")
    branch.triggered.connect(lambda: view.branch_requested.emit(
        tree.group_id, prefix.rollout_id, prefix.position, prefix.forced_token))
    select = menu.addAction("Select the rollouts through it")
    select.setData("select")
    select.triggered.connect(lambda: view.select_node(node))
    copy = menu.addAction("Copy the text up to here")
    copy.setData("copy")
    copy.triggered.connect(lambda: QGuiApplication.clipboard().setText(tree.prefix_text(node)))
    return menu


def tool_button(text: str, tip: str, bar, checkable: bool = False, checked: bool = False) -> QToolButton:
    button = QToolButton()  # as wide as its text: the bar must not set the tree's minimum width
    button.setText(text)
    button.setToolTip(tip)
    button.setCheckable(checkable)
    button.setChecked(checked)
    bar.addWidget(button)
    return button



