"""The token tree of one query group as an icicle (a flame graph of the policy), drawn live with pyqtgraph.

x is the token position; every node is a box whose height is its share of the group, children stacked inside their
parent, taken tokens first and most probable first (explorer.core.tree.icicle has the maths). Heights are either the
empirical share (rollouts through the node) or the model's (pi(token | prefix) at every fork, ghosts as hatched boxes,
the distribution's untaken remainder left visible). Boxes are coloured by pi(token | prefix) or by entropy; a chain
of tokens without a fork is one box with its text; a fork is labelled with its diverging tokens, pi and counts.

With a reference policy pi_ref (issue 11) boxes can be coloured by the log-ratio log pi - log pi_ref of their token
or by KL(pi || pi_ref) at their position, and where the two policies prefer different next tokens the place is
marked (a bar on the box edge where the next token is chosen, with a triangle at a fork). The facts are node columns
of the TokenTree (explorer.core.tree.token_tree), which the session's trees take with the tokens when the reference follows a
run and from the session's rollouts when it evaluates them later (take_reference); this view only reads them
(show_reference after they changed). Boxes no evaluated rollout passes through (not evaluated yet, ghosts) are grey
in those colourings.

Mouse: the wheel zooms along x, Ctrl/Shift + wheel along y, drag pans; hover tells a box's numbers; click selects the
rollouts through it (node_selected); right-click or double-click opens Branch here (forcing a ghost's token).

Branching convention (what branch_requested carries, and what engine.branch(group, rollout_id, position,
forced_token, k) expects): the new rollouts keep the first `position` tokens of `rollout_id`, then force
`forced_token` when it is not None, then sample. Branching at a taken node keeps the path up to and including it
(position = its depth + 1, forced_token = None); branching at a ghost keeps its parent's path and forces the ghost's
token (position = the ghost's depth, forced_token = its id). Branching at the root starts over from the prompt.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QObject, QPoint, QRectF, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QCursor, QPalette, QPen
from PySide6.QtWidgets import (QComboBox, QFileDialog, QGraphicsRectItem, QHBoxLayout, QLabel, QMenu, QMessageBox,
                               QToolTip, QVBoxLayout, QWidget)

from explorer.core.tree.icicle import MODES, Icicle, compute_icicle, describe_box, describe_rest
from explorer.core.tree.layout import SCALE_QUANTILE, data_full_scale
from explorer.core.tree.measures import COLOURINGS, REFERENCE_COLOURINGS, RUN_MEAN_WORDS, node_values, run_values
from explorer.core.tree.token_tree import ROOT, TokenTree
from explorer.gui.tree.icicle_item import IcicleItem
from explorer.gui.tree.tree_items import (IcicleViewBox, RangeExtent, cache_axes, export_graphics, node_menu,
                                          stepped_end, tool_button)
from explorer.gui.widgets.elided_label import ElidedLabel
from explorer.gui.widgets.grid_axis import FastGridAxis
from explorer.gui.widgets.style import KL_FULL_SCALE, LOG_RATIO_FULL_SCALE, SCALES, ColourScale, blend

MIN_WIDTH = 240  # px
COLOUR_BY = COLOURINGS
REFERENCE_COLOURS = REFERENCE_COLOURINGS
EMPTY_HINT = "No rollouts yet: Run samples k of them, and the tree shows where they part"
NO_REFERENCE_TIP = "needs a reference policy: choose one and evaluate this query's rollouts under it"
NO_KL_TIP = "unavailable: the policy is on a server, which sends no full rows of logits"
MOUSE_HELP = ("<b>The token tree</b>: x is the token position; each box is a token, its height its share of the "
              "group (sampled) or of the policy's mass (model π: hatched boxes are top-N alternatives no rollout "
              "took, the dotted gap the mass outside them). A fork's label names the tokens that part there, "
              "their π and how many rollouts took each; forks are labelled largest first (by the share drawn), and "
              "where no place is left the smaller ones go without. A chain of tokens without a fork is one box "
              "coloured by its mean per token (for π the geometric mean, exp(mean log π)) and drawn token by token "
              "once its tokens are wide enough for their text.<br><br>"
              "<b>Wheel</b>: zoom along the tokens · <b>Ctrl/Shift + wheel</b>: zoom along the shares · "
              "<b>drag</b>: pan · <b>Fit</b>: show it all<br>"
              "<b>Hover</b>: a box's numbers · <b>click</b>: select the rollouts through it (table and panes) · "
              "<b>click empty space</b>: clear<br>"
              "<b>Right-click or double-click</b> a box or a hatched alternative: Branch here (k new rollouts, "
              "forcing the alternative)<br><br>"
              "<b>With a reference policy π_ref</b>: colour by the log-ratio log π − log π_ref (green: π favours the "
              "token, pink: π_ref does) or by KL(π ‖ π_ref) at each position; grey boxes have no reference facts "
              "(not evaluated yet, alternatives). A bar on a box's edge (with ▼ at a fork) marks where the two "
              "policies prefer different next tokens.")
_CHAIN_MEAN = {"prob": "chains: geometric mean"}  # what the colour bar says a chain's colour is (default: the mean)


class TokenTreeView(QWidget):
    node_selected = Signal(str, object)  # group id, rollout ids through the selected box ([] when cleared)
    token_selected = Signal(str, int)  # rollout id, position: one rollout through the clicked box
    branch_requested = Signal(str, str, int, object)  # group id, rollout id, position, forced token id or None
    tree_refreshed = Signal()  # after a refresh that drew something new, or another tree was set

    def __init__(self, parent: Optional[QWidget] = None, branch_k: Callable[[], int] = lambda: 4):
        """branch_k: how many rollouts a branch samples (the side panel's k), asked when a box's menu opens."""
        super().__init__(parent)
        self._tree: Optional[TokenTree] = None
        self._version = -1
        self._ice: Optional[Icicle] = None
        self._mode = "empirical"
        self._colour_by = "prob"  # the user's choice; shown_colour is what is drawn (a reference one needs facts)
        self._shown_reference = False  # whether the colour box offers the reference colourings
        self._scale_shown: Optional[ColourScale] = None  # the scale the brushes and the colour bar are made for
        self._show_ghosts = True
        self._selected = -1
        self._hovered = -1
        self._highlighted: list[str] = []
        self._n_rollouts = 0
        self._growing = False
        self._settling = False
        self.branch_k = branch_k

        bar = QHBoxLayout()
        bar.setSpacing(4)
        self.fit_button = tool_button("Fit", "Show the whole tree, and follow it as it grows", bar)
        self.mode_box = QComboBox()
        self.mode_box.addItem("sampled", "empirical")
        self.mode_box.addItem("model π", "model")
        self.mode_box.setToolTip("Box heights: the share of the sampled rollouts through each token, or the policy's "
                                 "own mass (π(token | prefix) at every fork; hatched: the top-N alternatives no "
                                 "rollout took; blank: the mass outside them)")
        bar.addWidget(QLabel("heights"))
        bar.addWidget(self.mode_box)
        self.colour_box = QComboBox()
        self.colour_box.addItem("π", "prob")
        self.colour_box.addItem("entropy", "entropy")
        self.colour_box.addItem("log π/π_ref", "log_ratio")
        self.colour_box.addItem("KL(π‖π_ref)", "kl")
        self.colour_box.setToolTip("Box colours, the panes' colours: π(token | prefix), or the entropy of the "
                                   "distribution it was drawn from; with a reference policy, the log-ratio log π − "
                                   f"log π_ref of the token (±{LOG_RATIO_FULL_SCALE:g} nats full scale) or "
                                   "KL(π ‖ π_ref) at its position (grey: no reference facts). A chain drawn as one "
                                   "box takes the mean per token of its tokens (π: exp(mean log π), 1 / their "
                                   "perplexity)")
        bar.addWidget(QLabel("colour"))
        bar.addWidget(self.colour_box)
        self.ghosts_button = tool_button("Alternatives", "With model heights: show the top-N tokens no rollout took "
                                         "(hatched) and the untaken remainder", bar, checkable=True, checked=True)
        self.export_button = tool_button("Export…", "Save the tree as PNG or SVG", bar)
        self.mouse_help = QLabel("?")
        self.mouse_help.setToolTip(MOUSE_HELP)
        self.mouse_help.setStyleSheet("color: palette(mid);")
        bar.addWidget(self.mouse_help)
        self.info_label = ElidedLabel("")
        self.info_label.setMinimumWidth(1)  # its growing text must not widen the view (and resize the plots)
        bar.addStretch(1)
        bar.addWidget(self.info_label)
        self.fit_button.clicked.connect(self.fit)
        self.mode_box.currentIndexChanged.connect(lambda _i: self.set_mode(self.mode_box.currentData()))
        self.colour_box.currentIndexChanged.connect(lambda _i: self.set_colour_by(self.colour_box.currentData()))
        self.ghosts_button.toggled.connect(self.set_show_ghosts)
        self.export_button.clicked.connect(self._export_dialog)

        self.graphics = pg.GraphicsLayoutWidget()
        self.plot: pg.PlotItem = self.graphics.addPlot(row=0, col=0, viewBox=IcicleViewBox(),
                                                       axisItems={"bottom": FastGridAxis("bottom",
                                                                                         integer_ticks=True)})
        self.plot.invertY(True)
        self.plot.setMenuEnabled(False)
        self.plot.hideButtons()
        self.plot.setLabel("bottom", "token position")
        self.plot.setLabel("left", "share")
        self.plot.vb.setLimits(yMin=-0.02, yMax=1.02, minYRange=1e-4)
        self.colorbar = pg.ColorBarItem(values=(0, 1), interactive=False, width=14, label=SCALES["prob"].label,
                                        colorMapMenu=False)
        self.graphics.addItem(self.colorbar, row=0, col=1)
        self.colorbar.getAxis("right").setWidth(48)  # fixed, so a linked side plot can line up with the tree
        self.plot.getAxis("left").setWidth(52)

        self.icicle = IcicleItem()
        self.icicle.hint = EMPTY_HINT
        self.plot.addItem(self.icicle)
        self.hover_ring = QGraphicsRectItem()
        self.select_ring = QGraphicsRectItem()
        self.subtree_ring = QGraphicsRectItem()
        for z, ring in enumerate((self.subtree_ring, self.select_ring, self.hover_ring), start=10):
            ring.setZValue(z)
            ring.hide()
            self.plot.addItem(ring, ignoreBounds=True)
        self.extent = RangeExtent()
        self.plot.addItem(self.extent)
        self.plot.vb.setDefaultPadding(0.01)
        cache_axes(self.plot.getAxis("left"), self.plot.getAxis("bottom"), self.colorbar.getAxis("right"))

        # below the bar's own width (a narrow window) the bar's right end is cut rather than the window widened
        self.setMinimumWidth(MIN_WIDTH)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(bar)
        layout.addWidget(self.graphics, 1)
        self.graphics.scene().sigMouseMoved.connect(self._on_mouse_moved)
        self.graphics.scene().sigMouseClicked.connect(self._on_mouse_clicked)
        self.plot.vb.sigRangeChanged.connect(self._on_range_changed)
        self._leave_watch = _LeaveWatch(self)
        self.graphics.viewport().installEventFilter(self._leave_watch)
        self._apply_palette()
        self._show_colour_choices()

    # -- feeding -----------------------------------------------------------------------------------------------------
    @property
    def tree(self) -> Optional[TokenTree]:
        return self._tree

    @property
    def plot_item(self) -> pg.PlotItem:
        return self.plot

    @property
    def icicle_layout(self) -> Optional[Icicle]:
        """The boxes last drawn (None before a tree is shown)."""
        return self._ice

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def colour_by(self) -> str:
        """The colouring chosen (a reference one stays chosen while a tree without facts is shown)."""
        return self._colour_by

    @property
    def shown_colour(self) -> str:
        """The colouring drawn: the one chosen, or π where it needs reference facts the tree does not have."""
        if self._colour_by in REFERENCE_COLOURS and not self._offers(self._colour_by):
            return "prob"
        return self._colour_by

    def _offers(self, colour: str) -> bool:
        """Whether the shown tree has the facts a reference colouring needs (a server's policy gives no KL)."""
        if not self.has_reference:
            return False
        return colour != "kl" or bool((~np.isnan(self._tree.kls[1:])).any())

    @property
    def has_reference(self) -> bool:
        """Whether the shown tree has reference facts (some of its rollouts were evaluated under pi_ref)."""
        return self._tree is not None and self._tree.has_reference

    def show_reference(self) -> None:
        """The reference facts of the shown tree changed (annotated, cleared): re-read them, offer or withdraw the
        colourings that need them, and redraw."""
        self._show_colour_choices()
        self._version = -1
        self.refresh()

    def right_margin(self) -> float:
        """Pixels between the tree plot's right edge and the widget's: the colour bar and the layout spacing."""
        return self.colorbar.preferredWidth() + self.graphics.ci.layout.horizontalSpacing()

    def set_tree(self, tree: Optional[TokenTree]) -> None:
        """Show another group's tree (None clears the view); it is drawn whole and fitted."""
        self._tree = tree
        self._version = -1
        self._selected = self._hovered = -1
        self._highlighted = []
        self._n_rollouts = len(tree.rollout_ids) if tree is not None else 0
        self._show_colour_choices()
        self.refresh()
        if tree is not None:
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
                self._ice = None
                self.icicle.set_data(None, None, np.zeros(0, np.int64), np.zeros(0, np.int64))
                self._update_rings()
                self.info_label.setText("")
                self._version = -2
                self.tree_refreshed.emit()
            return False
        if tree.version == self._version:
            return False
        self._version = tree.version
        ice = self._ice = compute_icicle(tree, self._mode)
        if self.has_reference != self._shown_reference:
            self._show_colour_choices()  # the first evaluated rollouts of a tree that had none (or the last gone)
        marks = np.flatnonzero(tree.next_top_disagreement()) if tree.has_reference else np.zeros(0, np.int64)
        self._apply_colour_scale()  # a no-op unless the scale changed (a data-fitted one may, with the data)
        node_styles, run_styles = self._styles(tree, ice)
        self.icicle.set_data(tree, ice, node_styles, run_styles, marks)
        self.extent.set_end(stepped_end(ice.extent[1]) if self._growing else None)
        n_rollouts = len(tree.rollout_ids)
        branched = n_rollouts > self._n_rollouts and self._n_rollouts > 0
        self._n_rollouts = n_rollouts
        self._settling = True  # settle the followed range now, not in the paint (which would then paint twice)
        try:
            self.plot.vb.prepareForPaint()
        finally:
            self._settling = False
        if branched:
            self.fit()  # a branch: new rollouts joined, show where they went
        self._update_rings()
        self._update_info()
        self.tree_refreshed.emit()
        return True

    def colour_scale(self) -> ColourScale:
        """The colour scale of the colouring drawn (the panes' scale for the same quantity). The KL's follows the
        tree shown: full colour at its 99th percentile of KL, rounded up (layout.data_full_scale): a reference as
        close as the exact float copy (a mean KL of 0.004 nats) would be one pale colour on a fixed scale, a system
        prompt's (2 nats) one dark one; KL_FULL_SCALE where the tree has no finite KL."""
        scale = SCALES[self.shown_colour]
        if scale.key == "kl" and self._tree is not None:
            scale = scale.with_bounds(0.0, data_full_scale(self._tree.kls[~self._tree.ghost_mask], KL_FULL_SCALE))
        return scale

    def _styles(self, tree: TokenTree, ice: Icicle) -> tuple[np.ndarray, np.ndarray]:
        """Every node's and every run's colour (an index into the scale's colours), from the node columns: no walk
        over the rollouts. A run is coloured by its tokens' mean value; boxes without a value get the scale's
        unknown colour (no reference facts, an alternative in a reference colouring)."""
        scale = self._scale_shown
        colour = scale.key
        nodes = scale.level_indices(node_values(tree, colour))
        runs = scale.level_indices(run_values(tree, ice, colour))
        unknown = len(scale.levels)
        if colour in REFERENCE_COLOURS:
            nodes[np.asarray(tree.ghost_mask)] = unknown
            nodes[ROOT] = unknown
        else:
            nodes[ROOT] = scale.levels.index(0)  # the prompt is given: nothing to colour
        return nodes, runs

    # -- options -----------------------------------------------------------------------------------------------------
    def set_mode(self, mode: str) -> None:
        """Box heights: "empirical" (share of the sampled rollouts) or "model" (the policy's mass)."""
        if mode not in MODES:
            raise ValueError(f"unknown tree heights {mode!r}; expected one of {', '.join(MODES)}")
        if self.mode_box.currentData() != mode:
            self.mode_box.setCurrentIndex(MODES.index(mode))  # re-enters through currentIndexChanged
            return
        if mode != self._mode:
            self._mode = mode
            self._version = -1
            self.refresh()

    def set_colour_by(self, what: str) -> None:
        """Colour the boxes by "prob", "entropy", "log_ratio" or "kl". A reference colouring chosen while the tree
        has no facts stays chosen and is drawn as soon as it has them (π until then)."""
        if what not in COLOUR_BY:
            raise ValueError(f"unknown tree colouring {what!r}; expected one of {', '.join(COLOUR_BY)}")
        if what != self._colour_by:
            self._colour_by = what
            self._show_colour_choices()
            self._version = -1
            self.refresh()

    def _show_colour_choices(self) -> None:
        """The colour box and the colour scale say what is drawn; the reference colourings are offered only while
        the tree has reference facts (disabled, with the reason as their tooltip, otherwise)."""
        self._shown_reference = self.has_reference
        model = self.colour_box.model()
        for what in REFERENCE_COLOURS:
            i = COLOUR_BY.index(what)
            available = self._offers(what)
            why = NO_REFERENCE_TIP if not self.has_reference else NO_KL_TIP
            model.item(i).setEnabled(available)
            self.colour_box.setItemData(i, None if available else f"{SCALES[what].label}: {why}",
                                        Qt.ItemDataRole.ToolTipRole)
        shown = self.shown_colour
        if self.colour_box.currentData() != shown:
            self.colour_box.blockSignals(True)  # showing the fallback is not a choice of the user's
            self.colour_box.setCurrentIndex(COLOUR_BY.index(shown))
            self.colour_box.blockSignals(False)
        self._apply_colour_scale()

    def set_show_ghosts(self, show: bool) -> None:
        if show != self.ghosts_button.isChecked():
            self.ghosts_button.setChecked(show)
            return
        self._show_ghosts = show
        self.icicle.show_ghosts = show
        self.icicle.update()

    def fit(self) -> None:
        """Show the whole tree, and keep following it as it grows until the user zooms or pans."""
        self._settling = True
        try:
            self.plot.vb.autoRange(padding=0.01)
            self.plot.vb.enableAutoRange(pg.ViewBox.XYAxes, True)
            self.plot.vb.prepareForPaint()
        finally:
            self._settling = False
        self._on_range_changed()

    def _on_range_changed(self, *_args) -> None:
        pass  # the icicle culls and places its text at paint time; nothing to redo per range

    # -- hover, selection, branching ---------------------------------------------------------------------------------
    def node_at(self, x: float, y: float) -> int:
        """The box at view point (x, y), -1 for none (ghosts only count while shown)."""
        if self._ice is None:
            return -1
        node = self._ice.node_at(x, y)
        if node >= 0 and self._ice.ghost[node] and not self._show_ghosts:
            return -1
        return node

    def _view_point(self, scene_pos):
        if not self.plot.vb.sceneBoundingRect().contains(scene_pos):
            return None
        return self.plot.vb.mapSceneToView(scene_pos)

    def _on_mouse_moved(self, scene_pos) -> None:
        point = self._view_point(scene_pos)
        node = self.node_at(point.x(), point.y()) if point is not None else -1
        if node != self._hovered:
            self.set_hovered(node)
            if node >= 0:
                QToolTip.showText(QCursor.pos(), self.hover_text(node), self.graphics)
            elif point is not None and self._ice is not None and self._show_ghosts and (
                    rest := self._ice.rest_at(point.x(), point.y())) >= 0:
                QToolTip.showText(QCursor.pos(), describe_rest(self._tree, self._ice, rest), self.graphics)
            else:
                QToolTip.hideText()

    def _on_mouse_clicked(self, event) -> None:
        point = self._view_point(event.scenePos())
        node = self.node_at(point.x(), point.y()) if point is not None else -1
        if event.button() == Qt.MouseButton.LeftButton and not event.double():
            self.select_node(node)
            event.accept()
        elif node >= 0 and (event.button() == Qt.MouseButton.RightButton or event.double()):
            screen = event.screenPos()
            self.node_menu(node).popup(QPoint(int(screen.x()), int(screen.y())))
            event.accept()

    def set_hovered(self, node: int) -> None:
        self._hovered = node
        self._update_rings()

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
        """Token, pi, empirical against model share, count, entropy, cumulative log pi and the prefix text."""
        return describe_box(self._tree, node) if self._tree is not None else ""

    def select_node(self, node: int, emit: bool = True) -> None:
        """Select a box (-1 clears): ring it and the rollouts through it, and say so (node_selected)."""
        tree = self._tree
        if tree is None or not 0 <= node < len(tree):
            node = -1
        self._selected = node
        self._highlighted = tree.rollouts_through(node) if node >= 0 else []
        self._update_rings()
        if emit and tree is not None and (node < 0 or not tree.ghost_mask[node]):
            self.node_selected.emit(tree.group_id, list(self._highlighted))
            if self._highlighted and node != ROOT:
                self.token_selected.emit(self._highlighted[0], int(tree.depths[node]))

    def select_token(self, rollout_id: str, position: int) -> None:
        """Select the box of a rollout's token (a click in a pane); emits node_selected, not token_selected."""
        tree = self._tree
        if tree is None or rollout_id not in tree or not 0 <= position < tree.rollout_length(rollout_id):
            return
        self.select_node(tree.node_at(rollout_id, position), emit=False)
        self.node_selected.emit(tree.group_id, list(self._highlighted))

    def node_menu(self, node: int) -> QMenu:
        """The context menu of a box or ghost; its "branch" action emits branch_requested."""
        return node_menu(self, node)

    # -- drawing helpers ---------------------------------------------------------------------------------------------
    def _ring(self, ring: QGraphicsRectItem, rect: Optional[tuple]) -> None:
        if rect is None or rect[3] <= rect[1]:
            ring.hide()
            return
        x0, y0, x1, y1 = rect
        ring.setRect(QRectF(x0, y0, x1 - x0, y1 - y0))
        ring.show()

    def _update_rings(self) -> None:
        ice = self._ice
        valid = ice is not None

        def box(node):
            return ice.box(node) if valid and 0 <= node < len(ice) and ice.height[node] > 0 else None

        self._ring(self.hover_ring, box(self._hovered))
        self._ring(self.select_ring, box(self._selected))
        subtree = None
        if valid and self._highlighted and self._selected >= 0 and box(self._selected) is not None:
            x0, y0, _x1, y1 = ice.box(self._selected)
            end = max(self._tree.rollout_length(rid) for rid in self._highlighted)
            subtree = (x0, y0, float(end), y1)  # the rollouts through the box stay inside its extent from here on
        self._ring(self.subtree_ring, subtree)

    def box_texts(self) -> list[str]:
        """The texts the last paint drew (labels first: the shared prefix, then the forks)."""
        return list(self.icicle.painted.texts)

    def _update_info(self) -> None:
        tree, ice = self._tree, self._ice
        if tree is None or ice is None:
            self.info_label.setText("")
            self.info_label.setToolTip("")
            return
        n_ghost = int(np.count_nonzero(ice.ghost))
        text = (f"{len(tree.rollout_ids)} rollouts · {len(tree) - 1 - n_ghost} tokens · "
                f"{len(ice.forks)} forks · {n_ghost} alternatives")
        self.info_label.setText(text)
        self.info_label.setToolTip(text)  # the label elides when the bar is narrow

    # -- palette, export ---------------------------------------------------------------------------------------------
    def _apply_palette(self) -> None:
        pal = self.palette()
        bg, fg = pal.color(QPalette.ColorRole.Base), pal.color(QPalette.ColorRole.Text)
        self._fg = fg
        self.graphics.setBackground(bg)
        for name in ("left", "bottom"):
            self.plot.getAxis(name).setPen(blend(bg, fg, 0.5))
            self.plot.getAxis(name).setTextPen(fg)
        for name in ("left", "right"):
            self.colorbar.getAxis(name).setTextPen(fg)
            self.colorbar.getAxis(name).setPen(blend(bg, fg, 0.5))
        hatch_colour = QColor(fg)
        hatch_colour.setAlpha(110)
        hatch = QBrush(hatch_colour, Qt.BrushStyle.BDiagPattern)
        rest_colour = QColor(fg)
        rest_colour.setAlpha(45)
        rest = QBrush(rest_colour, Qt.BrushStyle.Dense6Pattern)
        # The plot's ground is a shade off the base colour, which is the colour of a sure token (the panes leave it
        # unshaded): boxes then stand out from the empty space, and outlines in the ground colour part them.
        ground = blend(bg, fg, 0.07)
        self.plot.vb.setBackgroundColor(ground)
        outline = QPen(ground, 1)
        tag = QColor(bg)
        tag.setAlpha(215)
        self.icicle.set_style(hatch, rest, outline, fg, QBrush(tag), QPen(blend(bg, fg, 0.3), 1), mark=fg,
                              mark_halo=bg)
        self._apply_colour_scale(force=True)
        accent = pal.color(QPalette.ColorRole.Highlight)
        for ring, colour, width, style in ((self.hover_ring, fg, 1.5, Qt.PenStyle.SolidLine),
                                           (self.select_ring, accent, 2.5, Qt.PenStyle.SolidLine),
                                           (self.subtree_ring, accent, 1.5, Qt.PenStyle.DashLine)):
            pen = QPen(colour, width, style)
            pen.setCosmetic(True)
            ring.setPen(pen)
            ring.setBrush(Qt.BrushStyle.NoBrush)
        self._version = -1
        self.refresh()

    def _apply_colour_scale(self, force: bool = False) -> None:
        """One brush per colour of the scale drawn (the panes' colours, and a grey for boxes without a value), its
        colour bar and label; only when the scale changed (or the palette: force)."""
        scale = self.colour_scale()
        if scale == self._scale_shown and not force:
            return
        self._scale_shown = scale
        pal = self.palette()
        bg = pal.color(QPalette.ColorRole.Base)
        fills = scale.colours(pal)
        lo, hi = sorted((scale.low, scale.high))
        values = np.linspace(lo, hi, 65)
        lut = np.array([fills[i].getRgb() for i in scale.level_indices(values)], dtype=np.uint8)
        self.colorbar.setColorMap(pg.ColorMap(np.linspace(0, 1, len(values)), lut))
        self.colorbar.setLevels((lo, hi))
        chain = _CHAIN_MEAN.get(scale.key, "chains: mean")
        self.colorbar.getAxis("left").setLabel(f"{scale.label} · {chain}")  # where ColorBarItem puts its label
        self.colorbar.setToolTip(self._colour_tip(scale))
        self.icicle.set_colours([QBrush(c) for c in fills], [QBrush(blend(bg, c, 0.45)) for c in fills])
        if self._tree is not None and self._ice is not None:
            self.icicle.set_data(self._tree, self._ice, *self._styles(self._tree, self._ice), self.icicle.marks)

    @staticmethod
    def _colour_tip(scale: ColourScale) -> str:
        tip = f"{scale.label}, the panes' colours; a chain drawn as one box: {RUN_MEAN_WORDS[scale.key]}"
        if scale.key == "kl":
            tip += (f"; full colour at {scale.high:g} nats, this tree's {SCALE_QUANTILE}th percentile of KL rounded "
                    "up (the scale follows the data: higher KLs saturate)")
        if scale.key in REFERENCE_COLOURS:
            tip += ("; saturating at the ends of the scale; grey: no reference facts (not evaluated yet, "
                    "alternatives). A bar on a box's edge (▼ at a fork): π and π_ref prefer different next tokens "
                    "there")
        return tip

    def changeEvent(self, event) -> None:  # noqa: N802 (Qt override)
        if event.type() == QEvent.Type.PaletteChange and hasattr(self, "icicle"):
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


class _LeaveWatch(QObject):
    """Clears the hover ring and its tooltip when the pointer leaves the plot."""

    def __init__(self, view: TokenTreeView):
        super().__init__(view)
        self._view = view

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 (Qt override)
        if event.type() == QEvent.Type.Leave and self._view.hovered_node >= 0:
            self._view.set_hovered(-1)
            QToolTip.hideText()
        return False
