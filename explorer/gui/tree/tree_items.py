"""The pyqtgraph items the token tree view draws with: the icicle (every box in one item, fed numpy arrays), its
view box (wheel zooms x; with Ctrl or Shift, y), and the range, export and menu helpers.

IcicleItem draws in device pixels: per paint it culls the boxes to the visible range with numpy, fills the taken
tokens with one drawRects call per colour level (QRectF arrays written straight from numpy), hatches the ghosts and
remainders in one call each, outlines runs, and draws text only where it fits. Nothing per node is a Python object.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import numpy as np
import pyqtgraph as pg
from pyqtgraph import exporters
from pyqtgraph.Qt import compat
from pyqtgraph.Qt.internals import PrimitiveArray
from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QBrush, QColor, QFontMetricsF, QGuiApplication, QPainter, QPen, QPolygonF
from PySide6.QtSvg import QSvgGenerator
from PySide6.QtWidgets import QGraphicsItem, QMenu, QToolButton

from explorer.core.tree.icicle import Icicle, fork_label, run_text
from explorer.core.tree.token_tree import ROOT
from explorer.core.tree.layout import display_token

MIN_BOX_PX = 0.6  # boxes thinner than this are not drawn (a column of them would only smear)
MAX_TEXTS = 1500  # texts drawn per paint at most, the tallest first
TEXT_PAD_PX = 3
HATCH_MIN_PX = 5  # token columns narrower than this get no hatch over their ghosts (only their faded fill)
# Where the two policies prefer different next tokens (issue 11), on the right edge of the box after which the next
# token is chosen. At a fork (where the rollouts part) always: a bar over the fork's extent with a triangle on top.
# Along a chain a small triangle only, and only once a token is MARK_CHAIN_MIN_PX wide: a zoomed-out tree of 32 x 256
# tokens would be all marks, and a full-height bar there would read as a box outline.
MARK_PX = 3  # the bar's width; a halo of the background colour, one pixel each side, keeps it off any fill
MARK_HALO_MIN_PX = 8  # below this token width the bar is thinner (0.4 of a token, 1 px at least) and has no halo:
# a zoomed-out tree whose rollouts part early would otherwise get a wall of bars over its first columns
MARK_TRIANGLE_PX = 9
MARK_CHAIN_TRIANGLE_PX = 6
MARK_CHAIN_MIN_PX = 14


class IcicleViewBox(pg.ViewBox):
    """The wheel zooms along x (token positions); with Ctrl or Shift held, along y (shares)."""

    def wheelEvent(self, ev, axis=None):  # noqa: N802 (pyqtgraph override)
        mods = ev.modifiers()
        vertical = bool(mods & (Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier))
        super().wheelEvent(ev, axis=1 if vertical else 0)


class IcicleItem(pg.GraphicsObject):
    """All boxes of one icicle. set_data() hands it the arrays; paint() draws what is in view."""

    def __init__(self):
        super().__init__()
        self.tree = None
        self.ice: Optional[Icicle] = None
        self.levels = np.zeros(0, np.int64)  # colour level of every node
        self.marks = np.zeros(0, np.int64)  # nodes after which the two policies prefer different next tokens
        self.mark_colour = QColor("black")
        self.mark_halo = QColor("white")
        self.drawn_marks: list[int] = []  # the marks the last paint drew (tests read it)
        self.show_ghosts = True
        self.brushes: list[QBrush] = []
        self.ghost_brushes: list[QBrush] = []
        self.text_colours: list[QColor] = []  # per level: dark or light text, whichever reads on that fill
        self.hatch = QBrush()
        self.rest_brush = QBrush()
        self.outline = QPen()
        self.fg = QColor("black")
        self.tag_brush = QBrush()
        self._rects = PrimitiveArray(QRectF, 4)
        self._bounds = QRectF(-1.0, 0.0, 1.0, 1.0)
        self._fork_labels: dict[int, tuple] = {}  # fork -> ((count, children), label)
        self._area = (0.0, 0.0)  # device x range of the view, set by paint
        self._sy, self._dy = 1.0, 0.0
        self.drawn_texts: list[str] = []  # what the last paint wrote (tests and the screenshots read it)
        self.setFlag(self.GraphicsItemFlag.ItemUsesExtendedStyleOption)

    def set_style(self, hatch, rest_brush, outline, fg, tag_brush, mark: QColor, mark_halo: QColor) -> None:
        self.hatch, self.rest_brush, self.outline, self.fg, self.tag_brush = (hatch, rest_brush, outline, fg,
                                                                            tag_brush)
        self.mark_colour, self.mark_halo = QColor(mark), QColor(mark_halo)
        self.update()

    def set_colours(self, brushes, ghost_brushes, text_colours) -> None:
        """One brush (and text colour) per colour level: the levels set_data is given index them."""
        self.brushes, self.ghost_brushes, self.text_colours = brushes, ghost_brushes, text_colours
        self.update()

    def set_data(self, tree, ice: Optional[Icicle], levels: np.ndarray, marks: Optional[np.ndarray] = None) -> None:
        if tree is not self.tree:
            self._fork_labels = {}
        self.tree, self.ice, self.levels = tree, ice, levels
        self.marks = marks if marks is not None else np.zeros(0, np.int64)
        right = ice.extent[1] if ice is not None and len(ice) else 0.0
        bounds = QRectF(-1.0, 0.0, right + 1.0, 1.0)
        if bounds != self._bounds:
            self.prepareGeometryChange()
            self._bounds = bounds
            self.informViewBoundsChanged()
        self.update()

    def boundingRect(self):  # noqa: N802 (Qt override)
        return QRectF(self._bounds)

    def dataBounds(self, ax, frac=1.0, orthoRange=None):  # noqa: N802, N803 (pyqtgraph's names)
        if self.ice is None:
            return None
        b = self._bounds
        return (b.left(), b.right()) if ax == 0 else (0.0, 1.0)

    def fork_label(self, node: int) -> str:
        # a fork's label changes only when a rollout passes it (its count) or a new token forks off it
        key = (int(self.tree.counts[node]), int(self.ice.n_children[node]))
        cached = self._fork_labels.get(node)
        if cached is None or cached[0] != key:
            cached = self._fork_labels[node] = (key, fork_label(self.tree, node))
        return cached[1]

    # -- painting ----------------------------------------------------------------------------------------------------
    def _load(self, x0, y0, x1, y1) -> None:
        """Write rectangles into the shared QRectF array (device pixels)."""
        self._rects.resize(len(x0))
        if len(x0):
            arr = self._rects.ndarray()
            arr[:, 0] = x0
            arr[:, 1] = y0
            arr[:, 2] = x1 - x0
            arr[:, 3] = y1 - y0

    def _draw_slice(self, painter: QPainter, start: int, stop: int) -> None:
        """drawRects on rows start:stop of the loaded array, without copying them."""
        if stop <= start:
            return
        if self._rects.use_ptr_to_array:
            base = self._rects.ndarray().ctypes.data
            painter.drawRects(compat.wrapinstance(base + start * 32, QRectF), stop - start)  # 4 doubles a row
        else:
            painter.drawRects(list(self._rects.instances())[start:stop])

    def _fill(self, painter: QPainter, x0, y0, x1, y1) -> None:
        self._load(x0, y0, x1, y1)
        self._draw_slice(painter, 0, len(x0))

    def paint(self, painter: QPainter, option, widget=None) -> None:
        self.drawn_texts = []
        ice, tree = self.ice, self.tree
        if ice is None or tree is None or not len(ice):
            return
        t = painter.transform()
        sx, sy, dx, dy = t.m11(), t.m22(), t.m31(), t.m32()
        if sx == 0 or sy == 0:
            return
        view = self.viewRect()
        vx0, vx1 = sorted((view.left(), view.right()))
        vy0, vy1 = sorted((view.top(), view.bottom()))
        painter.save()
        painter.resetTransform()  # device pixels from here: hatches, outlines and text do not scale with the view
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        painter.setPen(Qt.PenStyle.NoPen)

        def px(x, y):
            a, b = x * sx + dx, y * sy + dy
            return a, b

        x0, y0, h = ice.x0, ice.y0, ice.height
        vis = (x0 + 1.0 > vx0) & (x0 < vx1) & (y0 + h > vy0) & (y0 < vy1) & (h * abs(sy) >= MIN_BOX_PX)
        nodes = np.flatnonzero(vis)
        gx0, gy0 = px(x0[nodes], y0[nodes])
        gx1, gy1 = px(x0[nodes] + 1.0, y0[nodes] + h[nodes])
        top, bottom = np.minimum(gy0, gy1), np.maximum(gy0, gy1)
        ghost = ice.ghost[nodes]
        levels = self.levels[nodes]
        real = ~ghost
        # One array of every box, sorted by style (taken tokens by colour level, then ghosts by level), drawn with
        # one drawRects call per style on its slice.
        n_levels = len(self.brushes)
        style = np.where(ghost, n_levels + levels, levels)
        if not self.show_ghosts:
            style = np.where(ghost, -1, style)
        order = np.argsort(style, kind="stable")
        sorted_style = style[order]
        bounds = np.searchsorted(sorted_style, np.arange(2 * n_levels + 1))
        self._load(gx0[order], top[order], gx1[order], bottom[order])
        brushes = self.brushes + self.ghost_brushes
        for st in np.flatnonzero(np.diff(bounds)).tolist():
            painter.setBrush(brushes[st])
            self._draw_slice(painter, int(bounds[st]), int(bounds[st + 1]))
        if self.show_ghosts and abs(sx) >= HATCH_MIN_PX and bounds[2 * n_levels] > bounds[n_levels]:
            painter.setBrush(self.hatch)  # the ghosts are one slice: hatch them in one call
            self._draw_slice(painter, int(bounds[n_levels]), int(bounds[2 * n_levels]))
        # remainders: the distribution's untaken mass
        if self.show_ghosts and len(ice.rest_parent):
            rx = ice.x0[ice.rest_parent] + 1.0
            ry, rh = ice.rest_y0, ice.rest_height
            rv = (rx + 1.0 > vx0) & (rx < vx1) & (ry + rh > vy0) & (ry < vy1) & (rh * abs(sy) >= MIN_BOX_PX)
            if rv.any():
                ax0, ay0 = px(rx[rv], ry[rv])
                ax1, ay1 = px(rx[rv] + 1.0, ry[rv] + rh[rv])
                painter.setBrush(self.rest_brush)
                self._fill(painter, ax0, np.minimum(ay0, ay1), ax1, np.maximum(ay0, ay1))
        # run outlines, so a chain reads as one box
        rx0, ry0 = px(ice.run_x0, ice.run_y0)
        rx1, ry1 = px(ice.run_x1, ice.run_y0 + ice.run_height)
        rtop, rbottom = np.minimum(ry0, ry1), np.maximum(ry0, ry1)
        self._area = tuple(sorted((vx0 * sx + dx, vx1 * sx + dx)))
        self._sy, self._dy = sy, dy
        ytop, ybottom = sorted((vy0 * sy + dy, vy1 * sy + dy))
        rvis = ((rx1 > self._area[0]) & (rx0 < self._area[1]) & (rbottom > ytop) & (rtop < ybottom)
                & (rbottom - rtop >= 4))
        runs = np.flatnonzero(rvis)
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.setPen(self.outline)
        self._fill(painter, rx0[runs], rtop[runs], rx1[runs] - 1, rbottom[runs] - 1)
        marked = self._paint_marks(painter, sx, dx, vx0, vx1, vy0, vy1)
        self._paint_texts(painter, nodes, gx0, gx1, top, bottom, real, levels, runs, rx0, rx1, rtop, rbottom, sx, dx,
                          marked)
        painter.restore()

    def _paint_marks(self, painter: QPainter, sx, dx, vx0, vx1, vy0, vy1) -> set[int]:
        """Bars (and at forks triangles) where the two policies prefer different next tokens; returns the forks
        marked, whose labels step right of the bar."""
        self.drawn_marks = []
        ice, marks = self.ice, self.marks
        if not len(marks):
            return set()
        edge = ice.x0[marks] + 1.0  # the column boundary where the next token is chosen
        y0, h = ice.y0[marks], ice.height[marks]
        fork = ice.n_children[marks] >= 2
        keep = (edge > vx0) & (edge < vx1) & (y0 + h > vy0) & (y0 < vy1) & (h * abs(self._sy) >= 2)
        # a chain's mark needs room: a token MARK_CHAIN_MIN_PX wide and a box twice the triangle's height
        keep &= fork | ((abs(sx) >= MARK_CHAIN_MIN_PX) & (h * abs(self._sy) >= 2 * MARK_CHAIN_TRIANGLE_PX))
        if not keep.any():
            return set()
        marks, fork = marks[keep], fork[keep]
        x = edge[keep] * sx + dx
        ya, yb = y0[keep] * self._sy + self._dy, (y0[keep] + h[keep]) * self._sy + self._dy
        top, bottom = np.minimum(ya, yb), np.maximum(ya, yb)
        bar_x, bar_top, bar_bottom = x[fork], top[fork], bottom[fork]
        painter.setPen(Qt.PenStyle.NoPen)
        half = min(MARK_PX, max(1.0, 0.4 * abs(sx))) / 2
        if abs(sx) >= MARK_HALO_MIN_PX:
            painter.setBrush(self.mark_halo)
            self._fill(painter, bar_x - half - 1, bar_top, bar_x + half + 1, bar_bottom)
        painter.setBrush(self.mark_colour)
        self._fill(painter, bar_x - half, bar_top, bar_x + half, bar_bottom)
        painter.setPen(QPen(self.mark_halo, 1))
        for xi, ti, at_fork in zip(x.tolist(), top.tolist(), fork.tolist()):
            size = MARK_TRIANGLE_PX if at_fork else MARK_CHAIN_TRIANGLE_PX
            painter.drawPolygon(QPolygonF([QPointF(xi - size / 2, ti), QPointF(xi + size / 2, ti),
                                           QPointF(xi, ti + size)]))
        self.drawn_marks = marks.tolist()
        return set(marks[fork].tolist())

    def _paint_texts(self, painter, nodes, gx0, gx1, top, bottom, real, levels, runs, rx0, rx1, rtop, rbottom,
                     sx, dx, marked: set[int]) -> None:
        ice, tree = self.ice, self.tree
        fm = QFontMetricsF(painter.font())
        line = fm.height()
        char = max(fm.averageCharWidth(), 1.0)
        left_edge, right_edge = self._area
        token_px = abs(sx)
        texts = 0
        placed: list[QRectF] = []
        # fork labels first, biggest forks first: a tag just right of the fork, at the top of its extent (over the
        # top of the first child, whose own text is centred and steps below the tag)
        fork_rows = {int(ice.run_of[f]): int(f) for f in ice.forks.tolist() if f != ROOT}
        order = sorted(runs.tolist(), key=lambda r: -(rbottom[r] - rtop[r]))
        forks = [(r, fork_rows[r]) for r in order if r in fork_rows]
        if ROOT in ice.forks:
            forks.insert(0, (-1, ROOT))
        ty0, ty1 = sorted(y * self._sy + self._dy for y in (0.0, 1.0))
        for r, fork in forks:
            f_top, f_bottom = (ty0, ty1) if r < 0 else (rtop[r], rbottom[r])
            if f_bottom - f_top < line:
                continue
            text = self.fork_label(fork)
            width = fm.horizontalAdvance(text) + 2 * TEXT_PAD_PX
            at = (ice.x0[fork] + 1.0) * sx + dx
            if fork in marked:
                at += MARK_TRIANGLE_PX / 2 + 1  # right of the mark's triangle
            box = QRectF(max(at, left_edge) + 1, f_top + 1, width, line)
            if box.right() > right_edge or any(box.intersects(o) for o in placed):
                continue
            placed.append(box)
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(self.tag_brush)
            painter.drawRect(box)
            painter.setPen(self.fg)
            painter.drawText(box, Qt.AlignmentFlag.AlignCenter, text)
            self.drawn_texts.append(text)
            texts += 1

        per_token = token_px >= 4 * char + 2 * TEXT_PAD_PX
        if per_token:
            tall = np.flatnonzero(real & (bottom - top >= line))
            tall = tall[np.argsort(-(bottom[tall] - top[tall]), kind="stable")][:MAX_TEXTS]
            for i in tall.tolist():
                box = QRectF(max(gx0[i], left_edge) + TEXT_PAD_PX, top[i], min(gx1[i], right_edge) - max(
                    gx0[i], left_edge) - 2 * TEXT_PAD_PX, bottom[i] - top[i])
                if box.width() < 2 * char:
                    continue
                for tag in placed:
                    if tag.intersects(box):
                        box.setTop(tag.bottom())
                if box.height() < line:
                    continue
                text = fm.elidedText(display_token(tree.text(int(nodes[i])), 40), Qt.TextElideMode.ElideRight,
                                     box.width())
                painter.setPen(self.text_colours[levels[i]])
                painter.drawText(box, Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft, text)
                self.drawn_texts.append(text)
            return
        for r in order:
            if texts >= MAX_TEXTS or rbottom[r] - rtop[r] < line:
                continue
            start_px = max(rx0[r], left_edge)
            end_px = min(rx1[r], right_edge)
            room = end_px - start_px - 2 * TEXT_PAD_PX
            if room < 3 * char:
                continue
            start_x = (start_px - dx) / sx
            raw = run_text(tree, ice, r, start_x, limit=int(room / char) + 8)
            text = fm.elidedText(display_token(raw, 10 ** 6).replace("\u2423", " "), Qt.TextElideMode.ElideRight,
                                 room)
            if len(text.rstrip("\u2026")) < 3:  # "T…" or a lone "…" says nothing; the hover does
                continue
            box = QRectF(start_px + TEXT_PAD_PX, (rtop[r] + rbottom[r] - line) / 2, fm.horizontalAdvance(text) + 2,
                         line)
            for tag in placed:
                if tag.intersects(box):
                    box.moveTop(tag.bottom() + 1)
            if box.bottom() > rbottom[r] or any(tag.intersects(box) for tag in placed):
                continue
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(self.tag_brush)
            painter.drawRect(box.adjusted(-2, 0, 2, 0))
            painter.setPen(self.fg)
            painter.drawText(box, Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft, text)
            self.drawn_texts.append(text)
            texts += 1


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


def tool_button(text: str, tip: str, bar, checkable: bool = False, checked: bool = False) -> QToolButton:
    button = QToolButton()  # as wide as its text: the bar must not set the tree's minimum width
    button.setText(text)
    button.setToolTip(tip)
    button.setCheckable(checkable)
    button.setChecked(checked)
    bar.addWidget(button)
    return button



