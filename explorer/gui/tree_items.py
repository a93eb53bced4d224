"""The few pyqtgraph items the token tree view draws with, kept in sync with a growing tree cheaply.

A ScatterPlotItem given 40k points through setData() spends ~100 ms looking up one symbol-atlas entry per point. The
tree only ever has a few hundred distinct (size, colour) styles, so NodeLayer resolves each distinct style once and
fans the atlas coordinates out with numpy, and while the tree streams it touches only the points that are new or
changed since the last refresh. It writes into the scatter's record array (`data`) the way addPoints() does; that
layout has been stable across pyqtgraph 0.12-0.14, and any mismatch falls back to plain setData().
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import numpy as np
import pyqtgraph as pg
from pyqtgraph import exporters
from PySide6.QtCore import QPointF, QRectF, QSize
from PySide6.QtGui import QGuiApplication, QPainter
from PySide6.QtSvg import QSvgGenerator
from PySide6.QtWidgets import QGraphicsItem, QMenu, QPushButton

from explorer.core.tree import ROOT
from explorer.core.tree_layout import display_token


class NodeLayer:
    """One ScatterPlotItem showing a subset of the tree's nodes (e.g. the real ones, or the ghosts)."""

    def __init__(self, scatter: pg.ScatterPlotItem):
        self.scatter = scatter
        self.brushes = np.empty(0, dtype=object)  # style level -> QBrush, reused so the atlas can cache
        self._nodes = np.zeros(0, np.int64)  # scatter row -> tree node
        self._row = np.zeros(0, np.int64)  # tree node -> scatter row, -1 when not shown
        self._state = np.zeros((0, 4), np.float64)  # per row: x, y, size, level as last written
        self._visible = np.zeros(0, bool)
        self._buffer: np.ndarray | None = None  # the last record array, reused by the next rebuild
        self.last_mode = "none"

    def set_brushes(self, brushes: list) -> None:
        self.brushes = np.empty(len(brushes), dtype=object)
        self.brushes[:] = brushes
        self.clear()

    def clear(self) -> None:
        if len(self.scatter.data) > len(self._buffer if self._buffer is not None else ()):
            self._buffer = self.scatter.data
        self.scatter.clear()
        self._nodes = np.zeros(0, np.int64)
        self._row = np.zeros(0, np.int64)
        self._state = np.zeros((0, 4), np.float64)
        self._visible = np.zeros(0, bool)

    @property
    def nodes(self) -> np.ndarray:
        """Tree nodes currently drawn by this layer."""
        return self._nodes[self._visible]

    def sync(self, x: np.ndarray, y: np.ndarray, size: np.ndarray, level: np.ndarray, member: np.ndarray) -> str:
        """Show exactly the nodes in `member` with these positions/styles; returns 'full', 'update' or 'none'."""
        self.last_mode = self._sync(x, y, size, level, member)
        return self.last_mode

    def _sync(self, x, y, size, level, member) -> str:
        if not member.any():  # an empty layer holds no records at all (all-NaN rows would trouble the bounds)
            if len(self._nodes) == 0:
                return "none"
            self.clear()
            return "full"
        n = len(member)
        if len(self._row) < n:
            self._row = np.concatenate([self._row, np.full(n - len(self._row), -1, np.int64)])
        rows = self._row[:n]
        present = rows >= 0
        want = np.stack([x, y, size, level], axis=1)
        new = np.flatnonzero(member & ~present)
        old = np.flatnonzero(present)
        old_rows = rows[old]
        shown_now = member[old]
        changed = (self._visible[old_rows] != shown_now) | np.any(self._state[old_rows] != want[old], axis=1)
        touched = old[changed]
        if len(new) + len(touched) == 0:
            return "none"
        hidden_after = int(np.count_nonzero(~self._visible)) + int(np.count_nonzero(~shown_now[changed]))
        if len(self._nodes) == 0 or len(new) + len(touched) > 0.3 * n or hidden_after > 0.25 * max(len(self._nodes), 1):
            self._rebuild(want, np.flatnonzero(member), n)
            return "full"
        try:
            self._update(want, touched, member[touched], new)
        except (KeyError, ValueError, AttributeError, IndexError):  # a pyqtgraph whose record layout differs
            self._rebuild(want, np.flatnonzero(member), n, fast=False)
            return "full"
        return "update"

    # -- internals ---------------------------------------------------------------------------------------------------
    def _rebuild(self, want: np.ndarray, nodes: np.ndarray, n: int, fast: bool = True) -> None:
        self._nodes = nodes.astype(np.int64)
        self._row = np.full(n, -1, np.int64)
        self._row[nodes] = np.arange(len(nodes))
        self._state = want[nodes].copy()
        self._visible = np.ones(len(nodes), bool)
        sp = self.scatter
        if not fast:
            sp.setData(x=want[nodes, 0], y=want[nodes, 1], size=want[nodes, 2],
                       brush=self.brushes[want[nodes, 3].astype(np.int64)])
            return
        if len(sp.data) > len(self._buffer if self._buffer is not None else ()):
            self._buffer = sp.data
        sp.data = self._allocate(len(nodes) + len(nodes) // 2 + 256)
        self._write(np.arange(len(nodes)), want[nodes], np.ones(len(nodes), bool))
        self._finish()

    def _allocate(self, capacity: int) -> np.ndarray:
        """A record array with room to grow: spare rows sit at NaN, which pyqtgraph culls and leaves out of bounds.

        Allocating object-field records is slow (~10 ms for 40k), so a rebuild reuses the last array when it is
        big enough and a growing tree doubles it."""
        buffer, self._buffer = self._buffer, None
        if buffer is not None and len(buffer) >= capacity and buffer.dtype == self.scatter.data.dtype:
            data = buffer
            data["item"] = None
        else:
            # np.empty sets object fields to None row by row (~0.35 us a row); zeros then one None per field is ~6x faster
            dtype = self.scatter.data.dtype
            data = np.zeros(capacity, dtype=dtype)
            for name in dtype.names:
                if dtype[name].hasobject:
                    data[name] = None
        data["x"] = np.nan
        data["y"] = np.nan
        data["size"] = 1
        data["visible"] = True
        data["hovered"] = False
        # A non-empty source rect keeps updateSpots() from resolving a style per spare row.
        data["sourceRect"]["w"] = 1
        data["sourceRect"]["h"] = 1
        return data

    def _update(self, want: np.ndarray, touched: np.ndarray, touched_shown: np.ndarray, new: np.ndarray) -> None:
        sp = self.scatter
        if len(new):
            start = len(self._nodes)
            if start + len(new) > len(sp.data):
                grown = self._allocate(2 * (start + len(new)))
                grown[:start] = sp.data[:start]
                grown["item"][:start] = None  # SpotItems cache rows of the old array; they are rebuilt on demand
                sp.data = grown
            self._nodes = np.concatenate([self._nodes, new])
            self._row[new] = np.arange(start, start + len(new))
            self._state = np.concatenate([self._state, want[new]])
            self._visible = np.concatenate([self._visible, np.ones(len(new), bool)])
        rows = np.concatenate([self._row[touched], self._row[new]]).astype(np.int64)
        shown = np.concatenate([touched_shown, np.ones(len(new), bool)])
        nodes = np.concatenate([touched, new]).astype(np.int64)
        self._state[rows] = want[nodes]
        self._visible[rows] = shown
        self._write(rows, want[nodes], shown)
        self._finish()

    def _write(self, rows: np.ndarray, values: np.ndarray, shown: np.ndarray) -> None:
        """Fill records, resolving each distinct (size, level) style in the symbol atlas only once.

        A hidden row keeps its record with NaN coordinates (paint and bounds skip NaN), so rows never shift."""
        sp = self.scatter
        data = sp.data
        levels = values[:, 3].astype(np.int64)
        sizes = values[:, 2]
        data["x"][rows] = np.where(shown, values[:, 0], np.nan)
        data["y"][rows] = np.where(shown, values[:, 1], np.nan)
        data["size"][rows] = sizes
        data["brush"][rows] = self.brushes[levels]
        data["pen"][rows] = None
        data["symbol"][rows] = None
        data["data"][rows] = None
        if len(rows) == 0:
            return
        key = sizes * 4096.0 + levels
        unique, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        symbol, pen = sp.opts["symbol"], sp.opts["pen"]
        styles = [(symbol, float(sizes[i]), pen, self.brushes[levels[i]]) for i in first]
        coords = np.array(sp.fragmentAtlas[styles], dtype=np.int64).reshape(len(unique), 4)
        rects = data["sourceRect"]
        for j, name in enumerate(("x", "y", "w", "h")):
            rects[name][rows] = coords[inverse.reshape(-1), j]

    def _finish(self) -> None:
        sp = self.scatter
        sp.prepareGeometryChange()
        sp.informViewBoundsChanged()
        sp.bounds = [None, None]
        sp.updateSpots()
        sp.invalidate()


class EdgeLayer:
    """Edges drawn as disconnected point pairs in one PlotCurveItem (connect='pairs'), one pen for all."""

    def __init__(self, curve: pg.PlotCurveItem):
        self.curve = curve
        self.n_segments = 0

    def set_segments(self, x: np.ndarray, y: np.ndarray) -> None:
        self.n_segments = len(x) // 2
        if len(x) == 0:
            self.curve.setData([], [])
        else:
            self.curve.setData(x, y, connect="pairs", skipFiniteCheck=True)


LABEL_MARGIN = 3  # px of a label's box that is blank document margin, allowed to touch a neighbour's


class LabelPool:
    """A fixed number of TextItems reused for labels, so the view never makes one item per node."""

    def __init__(self, plot: pg.PlotItem, size: int, z: float = 20):
        self.vb = plot.vb
        self.items: list[pg.TextItem] = []
        for _ in range(size):
            item = pg.TextItem("", anchor=(0.0, 1.0))
            item.setZValue(z)
            item.hide()
            plot.addItem(item, ignoreBounds=True)
            self.items.append(item)

    def show(self, entries: list[tuple[float, float, str, tuple[float, float], bool]], color, fill) -> None:
        """entries: (x, y, text, anchor, always), in priority order. A label that is not `always` is left out when its
        box would overlap one already placed or stick out of the data area above or below; surplus items are hidden."""
        area = self.vb.sceneBoundingRect()
        placed: list[QRectF] = []
        for x, y, text, anchor, always in entries:
            if len(placed) == len(self.items):
                break
            item = self.items[len(placed)]
            if item.toPlainText() != text:
                item.setText(text)
            box = self._screen_box(item, x, y, anchor)
            if not area.isEmpty():  # (not laid out yet: nothing to check against)
                # slid sideways into the data area rather than over the lane names or the colour bar
                shift = max(area.left() - box.left(), 0.0) or min(area.right() - box.right(), 0.0)
                if shift:
                    anchor = (anchor[0] - shift / max(item.textItem.boundingRect().width(), 1.0), anchor[1])
                    box.translate(shift, 0.0)
                inside = area.top() <= box.top() and box.bottom() <= area.bottom()
            else:
                inside = True
            if not always and (not inside or any(box.intersects(other) for other in placed)):
                continue
            placed.append(box)
            item.setColor(color)
            item.fill = pg.mkBrush(fill)
            item.setAnchor(anchor)
            item.setPos(x, y)
            item.show()
        for item in self.items[len(placed):]:
            item.hide()

    def _screen_box(self, item: pg.TextItem, x: float, y: float, anchor: tuple[float, float]) -> QRectF:
        """The label's box in scene pixels (labels do not scale with the view), less the text's blank margin."""
        size = item.textItem.boundingRect()
        at = self.vb.mapViewToScene(QPointF(x, y))
        box = QRectF(at.x() - anchor[0] * size.width(), at.y() - anchor[1] * size.height(),
                     size.width(), size.height())
        return box.adjusted(LABEL_MARGIN, LABEL_MARGIN, -LABEL_MARGIN, -LABEL_MARGIN)

    def shown_texts(self) -> list[str]:
        return [item.toPlainText() for item in self.items if item.isVisible()]


def label_entries(tree, lay, chains, px_width: float, marked: tuple[int, ...], limit: int) -> list:
    """Which labels to draw, most wanted first: the hovered / selected nodes (always shown), branch points (most
    rollouts first) or, collapsed, chain texts cut to the room their edge has at this zoom, then the prompt."""
    pos = lay.positions
    entries = [(pos[node, 0], pos[node, 1], display_token(tree.text(node), 40), (0.0, -0.25), True)
               for node in dict.fromkeys(marked) if 0 < node < len(pos)]  # hovered may be the selected
    if chains is not None:
        order = np.lexsort((-chains.lengths, -chains.counts))[:limit]
        for i in order.tolist():
            upper, lower = chains.edges[i]
            first_x = pos[upper, 0] + 1
            room = int((pos[lower, 0] - first_x + 1) / px_width / 7)  # ~7 px per character
            if room >= 3:
                text = display_token(chains.labels[i], room).replace("\u2423", " ")
                entries.append((first_x, pos[lower, 1], text, (0.0, 1.0), False))
    else:
        branch = tree.branch_points()
        branch = branch[branch != 0]
        branch = branch[np.argsort(-lay.counts[branch], kind="stable")][:limit]
        entries += [(pos[b, 0], pos[b, 1], display_token(tree.text(b)), (0.5, 1.25), False) for b in branch.tolist()]
    # Above the root, not left of it where the lane names are; last, so it gives way to any branch label.
    entries.append((pos[0, 0], pos[0, 1], "prompt", (0.5, 1.25), False))
    return entries


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
    k = view.branch_k
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


def tool_button(text: str, tip: str, bar, checkable: bool = False, checked: bool = False) -> QPushButton:
    button = QPushButton(text)
    button.setToolTip(tip)
    button.setCheckable(checkable)
    button.setChecked(checked)
    bar.addWidget(button)
    return button


def rollout_polylines(tree, positions: np.ndarray, rollout_ids: list[str]):
    """x, y and a connect mask drawing each rollout's path from the root, as one curve."""
    parts = []
    for rid in rollout_ids:
        nodes = tree.path(rid)
        parts.append(np.concatenate([[0], nodes[nodes < len(positions)]]))
    pts = positions[np.concatenate(parts)]
    connect = np.ones(len(pts), bool)
    connect[np.cumsum([len(p) for p in parts]) - 1] = False  # no line from one rollout's end to the next root
    return pts[:, 0], pts[:, 1], connect
