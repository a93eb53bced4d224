"""The icicle's one graphics item: every box of a token tree, drawn for the pixels there are.

Level of detail, decided per paint from the pixels a box gets (nothing per node is a Python object; every step is a
numpy expression over the boxes in view):

- A run (a chain of tokens without a fork) is one box in one colour, the mean per token of its tokens' values
  (explorer.core.tree.measures), with its text once it has room for a word. Its tokens are drawn one by one, each in
  its own colour with its own text, only once a token is wide enough for its text (STRIPE_CHARS characters) and the
  run tall enough for a line: narrower, per-token stripes are colour without a name, the mosaic a zoomed-out tree
  used to be. A chain's alternatives (model heights) are per-token detail too, drawn with its tokens; a fork's are
  structure and always drawn.
- Boxes under a pixel are merged as a profiler merges slices: per pixel row and column the tallest box is drawn, one
  pixel tall. No drawn box is under a pixel in either direction.
- Labels by importance: the shared prefix from the prompt first (its text and pi(prefix | x)), then the forks, the
  largest share first (the height drawn), each right of its fork, as low in the fork's extent as it finds room. A
  label never overlaps another; a fork whose label finds no free place stops every smaller fork from being
  labelled, so a larger fork is never unlabelled while a smaller one is.

The last paint leaves a record (`painted`) the tests and the benchmark read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pyqtgraph as pg
from pyqtgraph.Qt import compat
from pyqtgraph.Qt.internals import PrimitiveArray
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QFontMetricsF, QPainter, QPen, QPolygonF

from explorer.core.tree.icicle import (Icicle, fork_branches, fork_order, join_fork_label, root_prefix_label,
                                       root_prefix_run, run_text)
from explorer.core.tree.layout import display_token
from explorer.core.tree.token_tree import ROOT

STRIPE_CHARS = 5  # a run is drawn token by token once a token is this many average characters wide (and padding)
WORD_CHARS = 4  # a run's text is written once this much of it shows (or all of it, when shorter)
FORK_LABEL_LINES = 2  # a fork is labelled once its extent is this many lines of text tall: room for its label and
# for the boxes the label names (lower, the tree would be more label than tree; the hover names any fork)
OUTLINE_MIN_PX = 4  # runs at least this tall get an outline, so neighbouring runs of one colour read apart
MAX_TEXTS = 1500  # texts drawn per paint at most, the tallest first
TEXT_PAD_PX = 3
HATCH_MIN_PX = 5  # token columns narrower than this get no hatch over their alternatives (only their faded fill)
EMPTY_TOKENS = 16  # the x range of a tree without rollouts: the prompt's column and room for the tokens to come
# Where the two policies prefer different next tokens, on the right edge of the box after which the next token is
# chosen. At a fork (where the rollouts part) always: a bar over the fork's extent with a triangle on top. Along a
# chain a small triangle only, and only once a token is MARK_CHAIN_MIN_PX wide: a zoomed-out tree of 32 x 256 tokens
# would be all marks, and a full-height bar there would read as a box outline.
MARK_PX = 3  # the bar's width; a halo of the background colour, one pixel each side, keeps it off any fill
MARK_HALO_MIN_PX = 8  # below this token width the bar is thinner (0.4 of a token, 1 px at least) and has no halo:
# a zoomed-out tree whose rollouts part early would otherwise get a wall of bars over its first columns
MARK_TRIANGLE_PX = 9
MARK_CHAIN_TRIANGLE_PX = 6
MARK_CHAIN_MIN_PX = 14


@dataclass
class PaintRecord:
    """What the last paint drew, in device pixels."""

    boxes: int = 0  # filled rectangles
    min_width: float = 0.0  # the narrowest and the lowest of them
    min_height: float = 0.0
    runs: int = 0  # runs drawn as one box
    striped_runs: int = 0  # runs drawn token by token
    labels: list = field(default_factory=list)  # (node, QRectF, text): the root prefix (its head node), then forks
    forks_in_view: list = field(default_factory=list)  # forks whose label had a place in view, by importance
    texts: list = field(default_factory=list)  # every text written, labels first


def _snap(x0, y0, x1, y1, order_key):
    """Boxes on whole device pixels, none under a pixel: a box thinner than a pixel becomes one pixel tall, and of
    those that fall in one pixel row and column only the tallest (the largest `order_key`) is kept. Returns the
    indices kept and their snapped edges."""
    left = np.floor(x0 + 0.5)
    right = np.maximum(np.floor(x1 + 0.5), left + 1.0)
    top = np.floor(y0 + 0.5)
    bottom = np.floor(y1 + 0.5)
    thin = bottom - top < 1.0
    keep = np.flatnonzero(~thin)
    thin_at = np.flatnonzero(thin)
    if len(thin_at):
        row = np.floor((y0[thin_at] + y1[thin_at]) / 2.0)
        col = left[thin_at]
        cell = (row - row.min()) * (col.max() - col.min() + 1.0) + (col - col.min())
        # one sort: by cell, then by height within it (heights under a pixel, scaled into [0, 0.5))
        height = np.clip(order_key[thin_at], 0.0, None)
        scaled = height / (2.0 * height.max()) if height.max() > 0 else height
        order = np.argsort(cell + scaled, kind="stable")
        last = np.ones(len(order), bool)
        last[:-1] = cell[order][1:] != cell[order][:-1]
        winners = thin_at[order[last]]
        top[winners] = np.floor((y0[winners] + y1[winners]) / 2.0)
        keep = np.concatenate([keep, winners])
    bottom = np.maximum(bottom, top + 1.0)
    return keep, left[keep], top[keep], right[keep], bottom[keep]


class IcicleItem(pg.GraphicsObject):
    """All boxes of one icicle. set_data() hands it the arrays; paint() draws what is in view."""

    def __init__(self):
        super().__init__()
        self.tree = None
        self.ice: Optional[Icicle] = None
        self.node_styles = np.zeros(0, np.int64)  # every node's colour (an index into the fills)
        self.run_styles = np.zeros(0, np.int64)  # every run's colour: its tokens' mean value
        self.marks = np.zeros(0, np.int64)  # nodes after which the two policies prefer different next tokens
        self.mark_colour = QColor("black")
        self.mark_halo = QColor("white")
        self.drawn_marks: list[int] = []  # the marks the last paint drew (tests read it)
        self.show_ghosts = True
        self.hint = ""  # written over a tree without rollouts
        self.fills: list[QBrush] = []
        self.ghost_fills: list[QBrush] = []
        self.hatch = QBrush()
        self.rest_brush = QBrush()
        self.outline = QPen()
        self.fg = QColor("black")
        self.tag_brush = QBrush()
        self.tag_border = QPen()
        self.painted = PaintRecord()
        self._rects = PrimitiveArray(QRectF, 4)
        self._bounds = QRectF(-1.0, 0.0, EMPTY_TOKENS + 1.0, 1.0)
        self._fork_parts: dict[int, tuple] = {}  # fork -> ((count, children), label parts)
        self._order = np.zeros(0, np.int64)  # forks by importance
        self._root_run = -1
        self._root_label = ""
        self._taken = self._taken_run = np.zeros(0, np.int64)  # taken nodes and their runs
        self._ghosts = self._ghost_run = np.zeros(0, np.int64)  # drawn alternatives, and the chain run they detail
        self._rest_run = np.zeros(0, np.int64)
        self.setFlag(self.GraphicsItemFlag.ItemUsesExtendedStyleOption)

    def set_style(self, hatch, rest_brush, outline, fg, tag_brush, tag_border: QPen, mark: QColor,
                  mark_halo: QColor) -> None:
        self.hatch, self.rest_brush, self.outline, self.fg = hatch, rest_brush, outline, fg
        self.tag_brush, self.tag_border = tag_brush, tag_border
        self.mark_colour, self.mark_halo = QColor(mark), QColor(mark_halo)
        self.update()

    def set_colours(self, fills: list[QBrush], ghost_fills: list[QBrush]) -> None:
        """One brush per colour of the scale drawn: the styles set_data is given index them."""
        self.fills, self.ghost_fills = fills, ghost_fills
        self.update()

    def set_data(self, tree, ice: Optional[Icicle], node_styles: np.ndarray, run_styles: np.ndarray,
                 marks: Optional[np.ndarray] = None) -> None:
        if tree is not self.tree:
            self._fork_parts = {}
        self.tree, self.ice = tree, ice
        self.node_styles, self.run_styles = node_styles, run_styles
        self.marks = marks if marks is not None else np.zeros(0, np.int64)
        has_rollouts = tree is not None and ice is not None and len(tree.rollout_ids) > 0 and len(ice) > 1
        right = ice.extent[1] if has_rollouts else float(EMPTY_TOKENS)
        if ice is not None and len(ice):
            self._order = fork_order(tree, ice)
            self._root_run = root_prefix_run(ice)
            self._root_label = root_prefix_label(tree, ice)
            self._taken = np.flatnonzero(ice.run_of >= 0)
            self._taken_run = ice.run_of[self._taken]
            parents = np.asarray(tree.parents, dtype=np.int64)
            structure = ice.n_children >= 2  # a fork's alternatives are structure; a chain's, detail of its run
            structure[ROOT] = True
            self._ghosts = np.flatnonzero(ice.ghost & (ice.height > 0))
            gp = parents[self._ghosts]
            self._ghost_run = np.where(structure[gp], -1, ice.run_of[gp])
            rp = ice.rest_parent
            self._rest_run = np.where(structure[rp], -1, ice.run_of[rp])
        bounds = QRectF(-1.0, 0.0, right + 1.0, 1.0)
        if bounds != self._bounds:
            self.prepareGeometryChange()
            self._bounds = bounds
            self.informViewBoundsChanged()
        self.update()

    def boundingRect(self):  # noqa: N802 (Qt override)
        return QRectF(self._bounds)

    def dataBounds(self, ax, frac=1.0, orthoRange=None):  # noqa: N802, N803 (pyqtgraph's names)
        b = self._bounds
        return (b.left(), b.right()) if ax == 0 else (0.0, 1.0)

    def fork_parts(self, node: int) -> list[str]:
        # a fork's label changes only when a rollout passes it (its count) or a new token forks off it
        key = (int(self.tree.counts[node]), int(self.ice.n_children[node]))
        cached = self._fork_parts.get(node)
        if cached is None or cached[0] != key:
            cached = self._fork_parts[node] = (key, fork_branches(self.tree, node))
        return cached[1]

    def fork_label(self, node: int) -> str:
        return join_fork_label(self.fork_parts(node), 4)

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
        self.painted = record = PaintRecord()
        ice, tree = self.ice, self.tree
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
        area = tuple(sorted((vx0 * sx + dx, vx1 * sx + dx)))
        rows = tuple(sorted((vy0 * sy + dy, vy1 * sy + dy)))
        fm = QFontMetricsF(painter.font())
        if ice is not None and tree is not None and len(ice):
            frame = _Frame(self, ice, sx, sy, dx, dy, area, rows, fm)
            self._paint_boxes(painter, frame, record)
            marked = self._paint_marks(painter, frame)
            self._paint_texts(painter, frame, record, marked)
        if self.hint and (tree is None or not tree.rollout_ids):
            painter.setPen(self.fg)
            painter.drawText(QRectF(area[0], rows[0], area[1] - area[0], rows[1] - rows[0]),
                             Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap, self.hint)
            record.texts.append(self.hint)
        painter.restore()

    def _paint_boxes(self, painter: QPainter, f: "_Frame", record: PaintRecord) -> None:
        """Runs as boxes, striped runs token by token, alternatives and remainders: one array of every box in view,
        snapped to the pixels and sorted by style, drawn with one drawRects call per style."""
        ice = self.ice
        n_fills = len(self.fills)
        parts = []  # (x0, y0, x1, y1, style, height in data units)
        whole = np.flatnonzero(f.run_visible & ~f.striped)
        parts.append((f.rx0[whole], f.rtop[whole], f.rx1[whole], f.rbottom[whole], self.run_styles[whole],
                      ice.run_height[whole]))
        record.runs, record.striped_runs = len(whole), int(np.count_nonzero(f.striped))
        nodes = [np.zeros(0, np.int64)]
        if record.striped_runs:
            nodes.append(self._taken[f.striped[self._taken_run]])
        if ice.height[ROOT] > 0:
            nodes.append(np.array([ROOT]))
        nodes = np.concatenate(nodes)
        ghosts = np.zeros(0, np.int64)
        if self.show_ghosts and len(self._ghosts):
            detail = np.append(f.striped, True)  # index -1 (a fork's alternative): always drawn
            ghosts = self._ghosts[detail[self._ghost_run]]
        for group, styles in ((nodes, self.node_styles[nodes]), (ghosts, n_fills + self.node_styles[ghosts])):
            if not len(group):
                continue
            x0, y0, h = ice.x0[group], ice.y0[group], ice.height[group]
            vis = (x0 + 1.0 > f.vx0) & (x0 < f.vx1) & (y0 + h > f.vy0) & (y0 < f.vy1)
            group, styles = group[vis], styles[vis]
            a, b = f.px(ice.x0[group], ice.y0[group])
            c, d = f.px(ice.x0[group] + 1.0, ice.y0[group] + ice.height[group])
            parts.append((a, np.minimum(b, d), c, np.maximum(b, d), styles, ice.height[group]))
        if self.show_ghosts and len(ice.rest_parent):
            detail = np.append(f.striped, True)
            keep = detail[self._rest_run]
            rx = ice.x0[ice.rest_parent] + 1.0
            ry, rh = ice.rest_y0, ice.rest_height
            keep &= (rx + 1.0 > f.vx0) & (rx < f.vx1) & (ry + rh > f.vy0) & (ry < f.vy1)
            a, b = f.px(rx[keep], ry[keep])
            c, d = f.px(rx[keep] + 1.0, ry[keep] + rh[keep])
            parts.append((a, np.minimum(b, d), c, np.maximum(b, d), np.full(len(a), 2 * n_fills), rh[keep]))
        x0, y0, x1, y1, style, height = (np.concatenate(column) for column in zip(*parts))
        # off-view parts cut at the view's edges (one pixel beyond), so a box is sized by what shows of it
        left, right = f.area[0] - 1.0, f.area[1] + 1.0
        top, bottom = f.rows[0] - 1.0, f.rows[1] + 1.0
        keep, x0, y0, x1, y1 = _snap(np.clip(x0, left, right), np.clip(y0, top, bottom), np.clip(x1, left, right),
                                     np.clip(y1, top, bottom), height)
        style = style[keep]
        order = np.argsort(style, kind="stable")
        self._load(x0[order], y0[order], x1[order], y1[order])
        bounds = np.searchsorted(style[order], np.arange(2 * n_fills + 2))
        brushes = self.fills + self.ghost_fills + [self.rest_brush]
        for st in np.flatnonzero(np.diff(bounds)).tolist():
            painter.setBrush(brushes[st])
            self._draw_slice(painter, int(bounds[st]), int(bounds[st + 1]))
        if abs(f.sx) >= HATCH_MIN_PX and bounds[2 * n_fills] > bounds[n_fills]:
            painter.setBrush(self.hatch)  # the alternatives are one slice: hatch them in one call
            self._draw_slice(painter, int(bounds[n_fills]), int(bounds[2 * n_fills]))
        record.boxes = len(x0)
        if len(x0):
            record.min_width, record.min_height = float((x1 - x0).min()), float((y1 - y0).min())
        # outlines, so neighbouring runs (and the prompt) read apart
        lined = np.flatnonzero(f.run_visible & (f.rbottom - f.rtop >= OUTLINE_MIN_PX))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.setPen(self.outline)
        ox0, oy0, ox1, oy1 = f.rx0[lined], f.rtop[lined], f.rx1[lined], f.rbottom[lined]
        if ice.height[ROOT] > 0 and f.vx0 < 0.0:
            a, b = f.px(np.array([-1.0]), np.array([0.0]))
            c, d = f.px(np.array([0.0]), np.array([1.0]))
            ox0, oy0 = np.append(ox0, a), np.append(oy0, np.minimum(b, d))
            ox1, oy1 = np.append(ox1, c), np.append(oy1, np.maximum(b, d))
        self._fill(painter, np.floor(ox0 + 0.5), np.floor(oy0 + 0.5), np.floor(ox1 + 0.5) - 1,
                   np.floor(oy1 + 0.5) - 1)

    def _paint_marks(self, painter: QPainter, f: "_Frame") -> set[int]:
        """Bars (and at forks triangles) where the two policies prefer different next tokens; returns the forks
        marked, whose labels step right of the bar."""
        self.drawn_marks = []
        ice, marks = self.ice, self.marks
        if not len(marks):
            return set()
        sx = f.sx
        edge = ice.x0[marks] + 1.0  # the column boundary where the next token is chosen
        y0, h = ice.y0[marks], ice.height[marks]
        fork = ice.n_children[marks] >= 2
        keep = (edge > f.vx0) & (edge < f.vx1) & (y0 + h > f.vy0) & (y0 < f.vy1) & (h * abs(f.sy) >= 2)
        # a chain's mark is per-token detail: only on a chain drawn token by token, with a token MARK_CHAIN_MIN_PX
        # wide and a box twice the triangle's height
        striped = np.append(f.striped, False)[ice.run_of[marks]]
        keep &= fork | (striped & (abs(sx) >= MARK_CHAIN_MIN_PX) & (h * abs(f.sy) >= 2 * MARK_CHAIN_TRIANGLE_PX))
        if not keep.any():
            return set()
        marks, fork = marks[keep], fork[keep]
        x = edge[keep] * sx + f.dx
        ya, yb = y0[keep] * f.sy + f.dy, (y0[keep] + h[keep]) * f.sy + f.dy
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

    # -- text --------------------------------------------------------------------------------------------------------
    def _tag(self, painter: QPainter, box: QRectF, text: str, record: PaintRecord, node: Optional[int]) -> None:
        """A label on a background of its own (it lies over other boxes)."""
        painter.setPen(self.tag_border)
        painter.setBrush(self.tag_brush)
        painter.drawRect(box.adjusted(0, 0, -1, -1))
        painter.setPen(self.fg)
        painter.drawText(box, Qt.AlignmentFlag.AlignCenter, text)
        record.texts.append(text)
        if node is not None:
            record.labels.append((node, QRectF(box), text))

    def _paint_texts(self, painter: QPainter, f: "_Frame", record: PaintRecord, marked: set[int]) -> None:
        placed: list[QRectF] = []
        self._paint_root_label(painter, f, record, placed)
        self._paint_fork_labels(painter, f, record, marked, placed)
        if record.striped_runs:
            self._paint_token_texts(painter, f, record, placed)
        self._paint_run_texts(painter, f, record, placed)

    def _paint_root_label(self, painter, f: "_Frame", record: PaintRecord, placed: list[QRectF]) -> None:
        """The shared prefix's text and pi, always: inside its box when it fits, else over what follows."""
        run = self._root_run
        if run < 0 or not f.run_visible[run] or not self._root_label:
            return
        top, bottom = max(f.rtop[run], f.rows[0]), min(f.rbottom[run], f.rows[1])
        if bottom - top < f.line:
            return
        x = max(f.rx0[run], f.area[0]) + 1
        room = f.area[1] - x - 2 * TEXT_PAD_PX
        text, pi = self._root_label.rsplit("  ", 1)
        pi_width = f.fm.horizontalAdvance("  " + pi)
        text = f.fm.elidedText(text, Qt.TextElideMode.ElideRight, max(room - pi_width, 0.0)) + "  " + pi
        box = QRectF(x, (top + bottom - f.line) / 2, min(f.fm.horizontalAdvance(text), room) + 2 * TEXT_PAD_PX,
                     f.line)
        self._tag(painter, box, text, record, int(self.ice.run_head[run]))
        placed.append(box)

    def _paint_fork_labels(self, painter, f: "_Frame", record: PaintRecord, marked: set[int],
                           placed: list[QRectF]) -> None:
        ice = self.ice
        smallest_failed = None
        x0, y0, height = ice.x0, ice.y0, ice.height
        for fork in self._order.tolist():
            share = float(height[fork])
            if smallest_failed is not None and share < smallest_failed:
                break  # a larger fork found no place: no smaller one is labelled
            a, b = y0[fork] * f.sy + f.dy, (y0[fork] + share) * f.sy + f.dy
            top, bottom = max(min(a, b), f.rows[0]), min(max(a, b), f.rows[1])
            if abs(b - a) < FORK_LABEL_LINES * f.line:
                break  # this fork and every smaller one has no room for a label and the boxes it names
            at = (x0[fork] + 1.0) * f.sx + f.dx
            if bottom - top < f.line or at < f.area[0] or at >= f.area[1] - TEXT_PAD_PX:
                continue  # its place is out of view: it neither counts nor blocks
            record.forks_in_view.append(fork)
            if fork in marked:
                at += MARK_TRIANGLE_PX / 2 + 1  # right of the mark's triangle
            parts = self.fork_parts(fork)
            width_max = f.area[1] - f.area[0] - 2
            for shown in range(min(4, len(parts)), 0, -1):  # as many branches as the room takes, the likeliest first
                text = join_fork_label(parts, shown)
                width = f.fm.horizontalAdvance(text) + 2 * TEXT_PAD_PX
                if at + 1 + width <= f.area[1] or shown == 1:
                    break
            if width > width_max:
                text = f.fm.elidedText(text, Qt.TextElideMode.ElideRight, width_max - 2 * TEXT_PAD_PX)
                width = width_max
            box = _free_place(QRectF(min(at + 1, f.area[1] - width - 1), bottom - f.line - 1, width, f.line), placed,
                              top, f.area[1])
            if box is None:
                smallest_failed = share
                continue
            placed.append(box)
            self._tag(painter, box, text, record, fork)

    def _paint_run_texts(self, painter, f: "_Frame", record: PaintRecord, placed: list[QRectF]) -> None:
        """Each run drawn whole gets its text where a word of it fits, the tallest first."""
        ice, tree, fm = self.ice, self.tree, f.fm
        runs = np.flatnonzero(f.run_visible & ~f.striped & (f.rbottom - f.rtop >= f.text_px))
        runs = runs[np.argsort(-(f.rbottom[runs] - f.rtop[runs]), kind="stable")][:MAX_TEXTS]
        painter.setPen(self.fg)
        for r in runs.tolist():
            if r == self._root_run or len(record.texts) >= MAX_TEXTS:
                continue
            start_px = max(f.rx0[r], f.area[0])
            room = min(f.rx1[r], f.area[1]) - start_px - 2 * TEXT_PAD_PX
            if room < WORD_CHARS * f.char:
                continue
            raw = run_text(tree, ice, r, (start_px - f.dx) / f.sx, limit=int(room / f.char) + 8)
            shown = display_token(raw, 10 ** 6).replace("\u2423", " ")
            text = fm.elidedText(shown, Qt.TextElideMode.ElideRight, room)
            if text != shown and len(text.rstrip("\u2026").strip()) < WORD_CHARS:
                continue  # "T…" says nothing; the hover does
            top, bottom = max(f.rtop[r], f.rows[0]), min(f.rbottom[r], f.rows[1])
            box = _trimmed(QRectF(start_px + TEXT_PAD_PX, top, fm.horizontalAdvance(text) + 2, bottom - top), placed)
            if box.height() < f.text_px:
                continue
            painter.drawText(box, Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft, text)
            record.texts.append(text)

    def _paint_token_texts(self, painter, f: "_Frame", record: PaintRecord, placed: list[QRectF]) -> None:
        """In runs drawn token by token, every token's own text."""
        ice, tree, fm = self.ice, self.tree, f.fm
        nodes = self._taken[f.striped[self._taken_run]]
        x0 = ice.x0[nodes]
        nodes = nodes[(x0 + 1.0 > f.vx0) & (x0 < f.vx1)]
        a, b = f.px(ice.x0[nodes], ice.y0[nodes])
        c, d = f.px(ice.x0[nodes] + 1.0, ice.y0[nodes] + ice.height[nodes])
        top = np.maximum(np.minimum(b, d), f.rows[0])
        bottom = np.minimum(np.maximum(b, d), f.rows[1])
        tall = np.flatnonzero(bottom - top >= f.text_px)
        tall = tall[np.argsort(-(bottom[tall] - top[tall]), kind="stable")][:MAX_TEXTS]
        painter.setPen(self.fg)
        for i in tall.tolist():
            left = max(a[i], f.area[0]) + TEXT_PAD_PX
            box = QRectF(left, top[i], min(c[i], f.area[1]) - TEXT_PAD_PX - left, bottom[i] - top[i])
            if box.width() < 2 * f.char:
                continue
            box = _trimmed(box, placed)
            if box.height() < f.text_px:
                continue
            shown = display_token(tree.text(int(nodes[i])), 40)
            text = fm.elidedText(shown, Qt.TextElideMode.ElideRight, box.width())
            if text != shown and len(text.strip("\u2026\u2423 ")) < 2:
                continue  # "␣…" says nothing; the hover does
            painter.drawText(box, Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft, text)
            record.texts.append(text)


LABEL_GAP_PX = 12  # between a label and one in its way that it had to move along the line past


def _free_place(box: QRectF, placed: list[QRectF], top: float, right: float) -> Optional[QRectF]:
    """A place for a label that overlaps no placed label (with a pixel between them), from `box` (at the bottom of
    its fork's extent) up a line at a time to `top`; None when there is none. Bottom first: the forks nested in a
    fork's first, most probable child all start at its top and end apart, so a larger fork's label low in its
    extent leaves the top lines to the smaller forks inside it. Only where every line is taken at the fork does the
    label move along a line, past the labels in its way (left of `right`)."""
    # plain floats: this runs for every label of every paint, over every label placed before it
    others = [(p.left() - 1, p.top() - 1, p.right() + 1, p.bottom() + 1) for p in placed]
    x0, width, height = box.left(), box.width(), box.height()

    def blocking(x: float, y: float) -> list[tuple]:
        return [o for o in others if o[0] < x + width and x < o[2] and o[1] < y + height and y < o[3]]

    for along in (False, True):
        y = box.top()
        while y >= top:
            x = x0
            while x + width <= right:
                in_way = blocking(x, y)
                if not in_way:
                    return QRectF(x, y, width, height)
                if not along:
                    break
                x = max(o[2] for o in in_way) + LABEL_GAP_PX
            in_way = blocking(x0, y)
            y = (min(o[1] for o in in_way) if in_way else y) - height - 2
    return None


def _trimmed(box: QRectF, placed: list[QRectF]) -> QRectF:
    """`box` cut clear of the labels that cross it: from above where a label lies in its upper half, from below
    where in its lower half."""
    box = QRectF(box)
    for tag in placed:
        if tag.intersects(box):
            if tag.center().y() < box.center().y():
                box.setTop(tag.bottom() + 1)
            else:
                box.setBottom(tag.top() - 1)
    return box


class _Frame:
    """One paint's geometry: the view in data and device units, the font's measures, every run's device box and
    which runs are drawn token by token."""

    def __init__(self, item: IcicleItem, ice: Icicle, sx, sy, dx, dy, area, rows, fm: QFontMetricsF):
        self.sx, self.sy, self.dx, self.dy = sx, sy, dx, dy
        self.area, self.rows, self.fm = area, rows, fm
        self.vx0, self.vx1 = sorted(((area[0] - dx) / sx, (area[1] - dx) / sx))
        self.vy0, self.vy1 = sorted(((rows[0] - dy) / sy, (rows[1] - dy) / sy))
        self.line = fm.height()
        self.text_px = self.line - 2  # a box's text needs its letters' height, not a label's full line
        self.char = max(fm.averageCharWidth(), 1.0)
        self.rx0, ry0 = self.px(ice.run_x0, ice.run_y0)
        self.rx1, ry1 = self.px(ice.run_x1, ice.run_y0 + ice.run_height)
        self.rtop, self.rbottom = np.minimum(ry0, ry1), np.maximum(ry0, ry1)
        self.run_visible = ((self.rx1 > area[0]) & (self.rx0 < area[1]) & (self.rbottom > rows[0])
                            & (self.rtop < rows[1]) & (ice.run_height > 0))
        stripes = abs(sx) >= STRIPE_CHARS * self.char + 2 * TEXT_PAD_PX
        self.striped = self.run_visible & (self.rbottom - self.rtop >= self.line) if stripes else np.zeros(
            len(ice.run_head), bool)

    def px(self, x, y):
        return x * self.sx + self.dx, y * self.sy + self.dy
