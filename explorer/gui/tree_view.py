"""The token tree of one query group, drawn live with pyqtgraph: where rollouts branch and how probable each step was.

x is the token position, each rollout owns a lane (lane i = the i-th rollout), nodes are coloured by the raw model
probability pi(token | prefix) and sized by how many rollouts pass through them; faded ghosts are the top-N
alternatives no rollout took. Only a handful of plot items exist whatever the size of the tree: a scatter for taken
tokens, one for ghosts, a curve per edge-width bucket, a highlight curve, and a small pool of labels.

Branching convention (what branch_requested carries, and what engine.branch(group, rollout_id, position,
forced_token, k) expects): the new rollouts keep the first `position` tokens of `rollout_id`, then force
`forced_token` when it is not None, then sample. Branching at a taken node keeps the path up to and including it
(position = its depth + 1, forced_token = None); branching at a ghost keeps its parent's path and forces the ghost's
token (position = the ghost's depth, forced_token = its id). Branching at the root starts over from the prompt.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QPoint, Qt, Signal
from PySide6.QtGui import QCursor, QPalette
from PySide6.QtWidgets import QFileDialog, QHBoxLayout, QMenu, QMessageBox, QToolTip, QVBoxLayout, QWidget

from explorer.core.tree import ROOT, TokenTree
from explorer.core.tree_layout import color_levels, colormap_lut, describe_node
from explorer.gui.elided_label import ElidedLabel
from explorer.gui.grid_axis import FastGridAxis
from explorer.gui.style import blend, widget_is_dark
from explorer.gui.tree_items import (EdgeLayer, LabelPool, NodeLayer, RangeExtent, cache_axes, export_graphics,
                                     label_entries, node_menu, rollout_polylines, stepped_end, tool_button)

N_LEVELS = 32  # colour buckets: one reusable brush each
MAX_LABELS = 40  # branch-point / chain labels shown at once (hovered and selected come on top)
GHOST_LOD = 8000  # ghosts are drawn once no more than this many fall in the visible x range
HOVER_RADIUS_PX = 9


class TokenTreeView(QWidget):
    node_selected = Signal(str, object)  # group id, list of rollout ids through the node
    token_selected = Signal(str, int)  # rollout id, position: one rollout through the clicked node
    branch_requested = Signal(str, str, int, object)  # group id, rollout id, position, forced token id or None
    tree_refreshed = Signal()  # after a refresh that drew something new, or another tree was set

    def __init__(self, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self._tree: Optional[TokenTree] = None
        self._version = -1
        self._layout = None
        self._chains = None
        self._collapsed = False
        self._show_ghosts = True
        self._ghosts_in_view = True
        self._ghost_edges_version = -1
        self._selected = -1
        self._hovered = -1
        self._highlighted: list[str] = []
        self._candidates = np.zeros(0, np.int64)
        self._lanes_labelled = -1
        self.branch_k = 4

        bar = QHBoxLayout()
        self.fit_button = tool_button("Fit", "Show the whole tree, and follow it as it grows", bar)
        self.collapse_button = tool_button("Collapse chains", "Draw each run of tokens without a fork as one "
                                           "labelled edge", bar, checkable=True)
        self.ghosts_button = tool_button("Alternatives", "Show the top-N tokens no rollout took (faded; drawn "
                                         "once zoomed in enough)", bar, checkable=True, checked=True)
        self.export_button = tool_button("Export…", "Save the tree as PNG or SVG", bar)
        self.info_label = ElidedLabel("")
        self.info_label.setMinimumWidth(1)  # its growing text must not widen the view (and resize the plots)
        bar.addStretch(1)
        bar.addWidget(self.info_label)
        self.fit_button.clicked.connect(self.fit)
        self.collapse_button.toggled.connect(self.set_collapsed)
        self.ghosts_button.toggled.connect(self.set_show_ghosts)
        self.export_button.clicked.connect(self._export_dialog)

        self.graphics = pg.GraphicsLayoutWidget()
        self.plot: pg.PlotItem = self.graphics.addPlot(row=0, col=0, axisItems={"bottom": FastGridAxis("bottom")})
        self.plot.invertY(True)
        self.plot.setMenuEnabled(False)
        self.plot.hideButtons()
        self.plot.setLabel("bottom", "token position")
        self.plot.showGrid(x=True, y=False, alpha=0.12)
        self.colorbar = pg.ColorBarItem(values=(0, 1), interactive=False, width=14, label="π(token | prefix)",
                                        colorMapMenu=False)
        self.graphics.addItem(self.colorbar, row=0, col=1)
        self.colorbar.getAxis("right").setWidth(48)  # fixed, so a linked side plot can line up with the tree
        self.plot.getAxis("left").setWidth(52)

        self.ghost_edges = EdgeLayer(pg.PlotCurveItem())
        self.edges = [EdgeLayer(pg.PlotCurveItem()) for _ in range(3)]  # one rollout, a few, many
        self.highlight = pg.PlotCurveItem()
        self.ghost_nodes = NodeLayer(pg.ScatterPlotItem(pxMode=True, symbol="o"))
        self.nodes = NodeLayer(pg.ScatterPlotItem(pxMode=True, symbol="o"))
        self.marks = pg.ScatterPlotItem(pxMode=True, brush=None)
        for z, item in enumerate([self.ghost_edges.curve, *(e.curve for e in self.edges), self.highlight,
                                  self.ghost_nodes.scatter, self.nodes.scatter, self.marks]):
            item.setZValue(z)
            self.plot.addItem(item)
        self.labels = LabelPool(self.plot, MAX_LABELS + 3)
        self.extent = RangeExtent()
        self.plot.addItem(self.extent)
        self._growing = False
        self._settling = False
        self.plot.vb.setDefaultPadding(0.04)
        cache_axes(self.plot.getAxis("left"), self.plot.getAxis("bottom"), self.colorbar.getAxis("right"))

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(bar)
        layout.addWidget(self.graphics, 1)
        self.graphics.scene().sigMouseMoved.connect(self._on_mouse_moved)
        self.graphics.scene().sigMouseClicked.connect(self._on_mouse_clicked)
        self.plot.vb.sigRangeChanged.connect(self._on_range_changed)
        self._apply_palette()

    # -- feeding -----------------------------------------------------------------------------------------------------
    @property
    def tree(self) -> Optional[TokenTree]:
        return self._tree

    @property
    def plot_item(self) -> pg.PlotItem:
        return self.plot

    def right_margin(self) -> float:
        """Pixels between the tree plot's right edge and the widget's: the colour bar and the layout spacing."""
        return self.colorbar.preferredWidth() + self.graphics.ci.layout.horizontalSpacing()

    def set_tree(self, tree: Optional[TokenTree]) -> None:
        """Show another group's tree (None clears the view); the next refresh() draws it whole and fits it."""
        self._tree = tree
        self._version = -1
        self._selected = self._hovered = -1
        self._highlighted = []
        self.nodes.clear()
        self.ghost_nodes.clear()
        self._lanes_labelled = -1
        self.refresh()
        if tree is not None:  # an empty view keeps its range: fitting nothing only redraws every axis
            self.fit()

    def set_growing(self, growing: bool) -> None:
        """While the tree grows (a run streams), the followed x range steps ahead of it; after, it fits exactly."""
        self._growing = growing
        if not growing:
            self.extent.set_end(None)

    def is_stale(self) -> bool:
        """Whether refresh() has something new to draw."""
        return self._version != (self._tree.version if self._tree is not None else -2)

    def refresh(self) -> bool:
        """Redraw what changed since the last call; a no-op (False) when the tree did not change."""
        tree = self._tree
        if tree is None:
            if self._version != -2:
                self._clear_items()
                self._version = -2
                self.tree_refreshed.emit()
            return False
        if tree.version == self._version:
            return False
        self._version = tree.version
        lay = self._layout = tree.layout()
        x, y = lay.positions[:, 0], lay.positions[:, 1]
        self.extent.set_end(stepped_end(float(x.max())) if self._growing and len(x) else None)
        sizes = np.round(lay.sizes).astype(np.float64)
        levels = color_levels(lay.probs, N_LEVELS).astype(np.float64)
        if self._collapsed:
            self._chains = tree.collapse_chains()
            shown = np.zeros(len(tree), bool)
            shown[self._chains.kept] = True
            ghosts = np.zeros(len(tree), bool)
        else:
            self._chains = None
            shown, ghosts = ~lay.ghost, lay.ghost
        self.nodes.sync(x, y, sizes, levels, shown)
        self.ghost_nodes.sync(x, y, sizes, levels, ghosts)
        self._draw_edges()
        # settle the followed range now: settled by the paint, it would change there and make the view paint twice
        self._settling = True  # the calls below bring ghosts, labels and info up to date for the settled range
        try:
            self.plot.vb.prepareForPaint()
        finally:
            self._settling = False
        self._update_ghost_visibility()
        self._draw_highlight()
        self._label_lanes()
        self._update_labels()
        self._update_marks()
        self._update_info()
        self.tree_refreshed.emit()
        return True

    def _clear_items(self) -> None:
        self.nodes.clear()
        self.ghost_nodes.clear()
        for layer in (*self.edges, self.ghost_edges):
            layer.set_segments(np.zeros(0), np.zeros(0))
        self.highlight.setData([], [])
        self.marks.clear()
        self.labels.show([], "w", (0, 0, 0, 0))
        self.info_label.setText("")

    def _draw_edges(self) -> None:
        lay = self._layout
        total = max(int(lay.counts[0]), 1)
        many = max(3, int(np.ceil(total / 4)))
        if self._chains is not None:
            # A chain runs on one lane (all its nodes carry the same rollouts): fork step, then straight along.
            chains = self._chains
            first = chains.starts
            pairs = np.concatenate([np.stack([chains.edges[:, 0], first], 1), np.stack([first, chains.edges[:, 1]], 1)])
            counts = np.concatenate([chains.counts, chains.counts])
        else:
            real = ~lay.edge_ghost
            pairs, counts = lay.edges[real], lay.edge_counts[real]
        buckets = [counts <= 1, (counts > 1) & (counts < many), counts >= many]
        for layer, mask in zip(self.edges, buckets):
            pts = lay.positions[pairs[mask].reshape(-1)]
            layer.set_segments(pts[:, 0], pts[:, 1])
        self._ghost_edges_version = -1

    def _update_ghost_visibility(self) -> None:
        lay = self._layout
        if lay is None:
            return
        want = self._show_ghosts and not self._collapsed
        if want:
            (x0, x1), _ = self.plot.vb.viewRange()
            gx = lay.positions[lay.ghost, 0]
            self._ghosts_in_view = int(np.count_nonzero((gx >= x0) & (gx <= x1))) <= GHOST_LOD
        visible = want and self._ghosts_in_view
        self.ghost_nodes.scatter.setVisible(visible)
        self.ghost_edges.curve.setVisible(visible)
        if visible and self._ghost_edges_version != self._version:
            x, y = lay.segments(lay.edge_ghost)
            self.ghost_edges.set_segments(x, y)
            self._ghost_edges_version = self._version
        parts = [self.nodes.nodes]
        if visible:
            parts.append(self.ghost_nodes.nodes)
        self._candidates = np.concatenate(parts)

    # -- options -----------------------------------------------------------------------------------------------------
    def set_collapsed(self, collapsed: bool) -> None:
        """Collapse maximal linear chains into one labelled edge each (ghosts are hidden in this mode)."""
        if collapsed != self.collapse_button.isChecked():
            self.collapse_button.setChecked(collapsed)  # re-enters through toggled
            return
        self._collapsed = collapsed
        self._version = -1
        self.refresh()

    def set_show_ghosts(self, show: bool) -> None:
        if show != self.ghosts_button.isChecked():
            self.ghosts_button.setChecked(show)
            return
        self._show_ghosts = show
        self._update_ghost_visibility()
        self._update_info()

    def set_branch_k(self, k: int) -> None:
        self.branch_k = max(1, int(k))

    def fit(self) -> None:
        """Show the whole tree, and keep following it as it grows until the user zooms or pans."""
        # autoRange() fits the data's bounds, and re-enabled auto-range then refits with the markers' pixel sizes:
        # both settle here, and ghosts and labels follow once, for the final range, not for each step
        self._settling = True
        try:
            self.plot.vb.autoRange(padding=0.04)
            self.plot.vb.enableAutoRange(pg.ViewBox.XYAxes, True)
            self.plot.vb.prepareForPaint()
        finally:
            self._settling = False
        self._on_range_changed()

    def _on_range_changed(self, *_args) -> None:
        if self._settling:
            return
        was = self._ghosts_in_view
        self._update_ghost_visibility()
        self._update_labels()
        if was != self._ghosts_in_view:
            self._update_info()

    # -- hover, selection, branching ---------------------------------------------------------------------------------
    def node_near(self, x: float, y: float, radius_px: float = HOVER_RADIUS_PX) -> int:
        """The drawn node nearest to the view point (x, y) within radius_px pixels, or -1."""
        if self._layout is None or len(self._candidates) == 0:
            return -1
        psx, psy = self.plot.vb.viewPixelSize()
        pos = self._layout.positions[self._candidates]
        d2 = ((pos[:, 0] - x) / max(psx, 1e-12)) ** 2 + ((pos[:, 1] - y) / max(psy, 1e-12)) ** 2
        best = int(np.argmin(d2))
        return int(self._candidates[best]) if d2[best] <= radius_px ** 2 else -1

    def _node_at_scene(self, scene_pos) -> int:
        if not self.plot.vb.sceneBoundingRect().contains(scene_pos):
            return -1
        point = self.plot.vb.mapSceneToView(scene_pos)
        return self.node_near(point.x(), point.y())

    def _on_mouse_moved(self, scene_pos) -> None:
        node = self._node_at_scene(scene_pos)
        if node != self._hovered:
            self.set_hovered(node)
            if node >= 0:
                QToolTip.showText(QCursor.pos(), self.hover_text(node), self.graphics)
            else:
                QToolTip.hideText()

    def _on_mouse_clicked(self, event) -> None:
        node = self._node_at_scene(event.scenePos())
        if event.button() == Qt.MouseButton.LeftButton and not event.double():
            self.select_node(node)
            event.accept()
        elif node >= 0 and (event.button() == Qt.MouseButton.RightButton or event.double()):
            screen = event.screenPos()
            self.node_menu(node).popup(QPoint(int(screen.x()), int(screen.y())))
            event.accept()

    def set_hovered(self, node: int) -> None:
        self._hovered = node
        self._update_marks()
        self._update_labels()

    @property
    def hovered_node(self) -> int:
        return self._hovered

    @property
    def selected_node(self) -> int:
        return self._selected

    @property
    def highlighted_rollouts(self) -> list[str]:
        return list(self._highlighted)

    def hover_text(self, node: int) -> str:
        """What hovering a node tells: token, pi, empirical frequency, count, entropy, cumulative logprob."""
        return describe_node(self._tree, node) if self._tree is not None else ""

    def select_node(self, node: int, emit: bool = True) -> None:
        """Select a node (-1 clears): highlight the rollouts through it and say so."""
        tree = self._tree
        if tree is None or not 0 <= node < len(tree):
            node = -1
        self._selected = node
        self._highlighted = tree.rollouts_through(node) if node >= 0 else []
        self._draw_highlight()
        self._update_marks()
        self._update_labels()
        if emit and tree is not None and node >= 0:
            self.node_selected.emit(tree.group_id, list(self._highlighted))
            if self._highlighted and node != ROOT:
                self.token_selected.emit(self._highlighted[0], int(tree.depths[node]))

    def select_token(self, rollout_id: str, position: int) -> None:
        """Select the node of a rollout's token (a click in a pane); emits node_selected, not token_selected."""
        tree = self._tree
        if tree is None or rollout_id not in tree or not 0 <= position < tree.rollout_length(rollout_id):
            return
        self.select_node(tree.node_at(rollout_id, position), emit=False)
        self.node_selected.emit(tree.group_id, list(self._highlighted))

    def node_menu(self, node: int) -> QMenu:
        """The context menu of a node or ghost; its "branch" action emits branch_requested."""
        return node_menu(self, node)

    # -- drawing helpers ---------------------------------------------------------------------------------------------
    def _draw_highlight(self) -> None:
        tree, lay = self._tree, self._layout
        if tree is None or lay is None or not self._highlighted:
            self.highlight.setData([], [])
            return
        x, y, connect = rollout_polylines(tree, lay.positions, self._highlighted)
        self.highlight.setData(x, y, connect=connect)

    def _update_marks(self) -> None:
        lay = self._layout
        spots = []
        if lay is not None:
            for node, pen, size in ((self._selected, self._accent_pen, 20), (self._hovered, self._hover_pen, 16)):
                if 0 <= node < len(lay.positions):
                    spots.append({"pos": tuple(lay.positions[node]), "pen": pen, "size": size, "brush": None})
        self.marks.setData(spots)

    def _label_lanes(self) -> None:
        tree = self._tree
        n = len(tree.rollout_ids) if tree is not None else 0
        if n == self._lanes_labelled:
            return
        self._lanes_labelled = n
        ids = tree.rollout_ids if tree is not None else []
        ticks = [(i, rid.rsplit(".", 1)[-1]) for i, rid in enumerate(ids)] if n <= 64 else None
        self.plot.getAxis("left").setTicks([ticks] if ticks else None)

    def _update_labels(self) -> None:
        tree, lay = self._tree, self._layout
        if tree is None or lay is None:
            self.labels.show([], self._fg, self._label_fill)
            return
        psx = self.plot.vb.viewPixelSize()[0] or 1.0
        entries = label_entries(tree, lay, self._chains, psx, (self._selected, self._hovered), MAX_LABELS)
        self.labels.show(entries, self._fg, self._label_fill)

    def label_texts(self) -> list[str]:
        return self.labels.shown_texts()

    def _update_info(self) -> None:
        lay, tree = self._layout, self._tree
        if lay is None or tree is None:
            self.info_label.setText("")
            self.info_label.setToolTip("")
            return
        n_ghost = int(np.count_nonzero(lay.ghost))
        text = (f"{len(tree.rollout_ids)} rollouts · {len(lay.ghost) - 1 - n_ghost} tokens · "
                f"{len(tree.branch_points())} branch points · {n_ghost} alternatives")
        if self._show_ghosts and not self._collapsed and not self._ghosts_in_view:
            text += " (zoom in to see them)"
        self.info_label.setText(text)
        self.info_label.setToolTip(text)  # the label elides when the bar is narrow

    # -- palette, export ---------------------------------------------------------------------------------------------
    def _apply_palette(self) -> None:
        pal = self.palette()
        dark = widget_is_dark(self)
        bg, fg = pal.color(QPalette.ColorRole.Base), pal.color(QPalette.ColorRole.Text)
        self._fg = fg
        self._label_fill = (bg.red(), bg.green(), bg.blue(), 190)
        # Keep the colormap's ends off the background: no near-black purple on dark, no pale yellow on light.
        lut = colormap_lut(0.12, 1.0, N_LEVELS) if dark else colormap_lut(0.0, 0.88, N_LEVELS)
        self.graphics.setBackground(bg)
        for name in ("left", "bottom"):
            self.plot.getAxis(name).setPen(blend(bg, fg, 0.5))
            self.plot.getAxis(name).setTextPen(fg)
        self.colorbar.setColorMap(pg.ColorMap(np.linspace(0, 1, N_LEVELS), lut))
        self.colorbar.getAxis("right").setTextPen(fg)
        self.colorbar.getAxis("right").setPen(blend(bg, fg, 0.5))
        self.nodes.scatter.setPen(pg.mkPen(bg, width=1))
        self.nodes.set_brushes([pg.mkBrush(*row) for row in lut])
        self.ghost_nodes.scatter.setPen(None)
        self.ghost_nodes.set_brushes([pg.mkBrush(int(r), int(g), int(b), 120) for r, g, b, _ in lut])
        edge = blend(bg, fg, 0.45)
        for layer, width in zip(self.edges, (1.0, 2.0, 3.5)):
            layer.curve.setPen(pg.mkPen(edge, width=width))
        self.ghost_edges.curve.setPen(pg.mkPen(blend(bg, fg, 0.18), width=1))
        accent = pal.color(QPalette.ColorRole.Highlight)
        self._accent_pen = pg.mkPen(accent, width=2.5)
        self._hover_pen = pg.mkPen(fg, width=1.5)
        self.highlight.setPen(pg.mkPen(accent, width=2.5))
        self._version = -1
        self.refresh()

    def changeEvent(self, event) -> None:
        if event.type() == QEvent.Type.PaletteChange and hasattr(self, "labels"):
            self._apply_palette()
        super().changeEvent(event)

    def export_image(self, path: str | Path) -> None:
        """Write the tree view (with its colour bar) as a PNG or SVG file, chosen by the file's suffix."""
        export_graphics(self.graphics.ci, path)

    def _export_dialog(self) -> None:
        name, _ = QFileDialog.getSaveFileName(self, "Export the tree", "tree.png", "PNG image (*.png);;SVG (*.svg)")
        if name:
            try:
                self.export_image(name)
            except (OSError, ValueError) as exc:
                QMessageBox.warning(self, "Export failed", str(exc))
