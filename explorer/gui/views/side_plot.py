"""Per-position probability and entropy of the selected rollout next to the group mean, under the token tree.

Two stacked plots share the tree's x axis (token position), so zooming the tree zooms these: where the policy was
unsure (high entropy) and where the sampled token was unlikely (low pi) line up with where the tree branches.
With a reference policy (issue 11) a third one, shown only while the tree has reference facts, plots KL(pi || pi_ref)
per position for the selected rollout and the group mean; it reads them from the tree's node columns, as the tree
view does (show_reference after they changed).
"""

from __future__ import annotations

import html
from typing import Optional

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, Qt
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from explorer.core.tree.token_tree import TokenTree
from explorer.core.tree.layout import mean_kl_series, mean_series, rollout_kl_series, rollout_series
from explorer.gui.widgets.grid_axis import FastGridAxis
from explorer.gui.widgets.style import KL_COLOUR, blend
from explorer.gui.tree.tree_items import cache_axes

KL_TIP = ("KL: KL(π ‖ π_ref) per position in nats, over the whole vocabulary (shown with a reference policy); "
          "▲ at the top: infinite, where π_ref gives 0 to a token π does not")


class SidePlot(QWidget):
    def __init__(self, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self._tree: Optional[TokenTree] = None
        self._rollout: Optional[str] = None
        self._version = -1
        self._held = False
        self._follow_pending = False  # the followed tree view redrew while this plot was held
        self.graphics = pg.GraphicsLayoutWidget()
        # token positions on whole numbers, however far the linked tree zooms in
        self.prob_plot: pg.PlotItem = self.graphics.addPlot(
            row=0, col=0, axisItems={"bottom": FastGridAxis("bottom", integer_ticks=True)})
        self.entropy_plot: pg.PlotItem = self.graphics.addPlot(
            row=1, col=0, axisItems={"bottom": FastGridAxis("bottom", integer_ticks=True)})
        self.entropy_plot.setXLink(self.prob_plot)
        # Short axis titles: at this height a long one runs into the other plot's; the tooltips say it in full.
        self.prob_plot.setLabel("left", "π")
        self.prob_plot.getAxis("left").setToolTip("π(token): the probability the policy gave the sampled token")
        self.prob_plot.setYRange(0, 1.02, padding=0)
        self.prob_plot.getAxis("left").setTicks([[(0.0, "0"), (0.5, ".5"), (1.0, "1")]])  # more do not fit ~60 px
        self.prob_plot.getAxis("bottom").setStyle(showValues=False)
        self.entropy_plot.setLabel("left", "H")
        self.entropy_plot.getAxis("left").setToolTip("H: entropy of the next-token distribution, in nats")
        self.entropy_plot.setLabel("bottom", "token position")
        # KL per position: made now, put in the layout only while the tree has reference facts (show_reference)
        self.kl_plot = pg.PlotItem(axisItems={"bottom": FastGridAxis("bottom", integer_ticks=True)})
        self.kl_plot.setXLink(self.prob_plot)
        self.kl_plot.setLabel("left", "KL")
        self.kl_plot.getAxis("left").setToolTip(KL_TIP)
        self._kl_shown = False
        for plot in (self.prob_plot, self.entropy_plot, self.kl_plot):
            plot.setMenuEnabled(False)
            plot.hideButtons()
            plot.showGrid(x=True, y=True, alpha=0.12)
            plot.getAxis("left").setWidth(52)
        # An empty column under the tree's colour bar, so both plots' x axes span the same pixels.
        self._spacer = pg.GraphicsWidget()
        self._spacer.setMaximumWidth(0)
        self.graphics.addItem(self._spacer, row=0, col=1, rowspan=2)
        cache_axes(*(plot.getAxis(name) for plot in (self.prob_plot, self.entropy_plot, self.kl_plot)
                     for name in ("left", "bottom")))
        # The key is a line of text above the plots, not a legend inside them, where it would hide the curves.
        self.key = QLabel()
        self.key.setTextFormat(Qt.TextFormat.RichText)
        self.key.setContentsMargins(56, 2, 0, 0)  # starts where the plots' data area starts (left axis width)
        self.mean_prob = self.prob_plot.plot()
        self.rollout_prob = self.prob_plot.plot()
        self.mean_entropy = self.entropy_plot.plot()
        self.rollout_entropy = self.entropy_plot.plot()
        self.mean_kl = self.kl_plot.plot()
        self.rollout_kl = self.kl_plot.plot()
        # infinite KL cannot be drawn as a value: a marker pinned at the top of the plot's finite values instead
        self.infinite_kl = pg.ScatterPlotItem(symbol="t1", size=7, pen=None)
        self.kl_plot.addItem(self.infinite_kl)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.key)
        layout.addWidget(self.graphics)
        self._apply_palette()

    def link_x(self, plot_item: pg.PlotItem) -> None:
        """Share the x axis with another plot (the token tree)."""
        self.prob_plot.setXLink(plot_item)

    def set_right_margin(self, width: float) -> None:
        """Leave `width` pixels right of the plots (the width of what stands right of the linked plot)."""
        self._spacer.setMinimumWidth(width)
        self._spacer.setMaximumWidth(width)

    def follow(self, view) -> None:
        """Track a TokenTreeView: its x axis (aligned pixel for pixel), its tree, and the clicked token's rollout."""
        self.link_x(view.plot_item)
        self.set_right_margin(view.right_margin())
        view.tree_refreshed.connect(lambda: self._follow_tree(view))
        view.token_selected.connect(lambda rollout_id, _position: self.set_rollout(rollout_id))
        view.node_selected.connect(lambda _group, rollouts: rollouts and self.set_rollout(rollouts[0]))
        self._follow_tree(view)

    def _follow_tree(self, view) -> None:
        if view.tree is not self._tree:
            self.set_tree(view.tree)
        elif self._held:
            self._follow_pending = True
        else:
            self.refresh()

    def set_held(self, held: bool) -> None:
        """Held (while a run streams), a redraw of the followed tree view only marks this plot stale (is_stale), and
        its owner refreshes it on an event-loop turn of its own; letting go catches up at once."""
        self._held = held
        if not held and self._follow_pending:
            self.refresh()

    def is_stale(self) -> bool:
        """The followed tree view redrew since this plot last refreshed (only while held)."""
        return self._follow_pending

    def set_tree(self, tree: Optional[TokenTree]) -> None:
        self._tree = tree
        if tree is None or self._rollout not in tree:
            self._rollout = tree.rollout_ids[0] if tree is not None and tree.rollout_ids else None
        self._version = -1
        self.refresh()

    def set_rollout(self, rollout_id: Optional[str]) -> None:
        if rollout_id != self._rollout:
            self._rollout = rollout_id
            self._version = -1
            self.refresh()

    @property
    def rollout(self) -> Optional[str]:
        return self._rollout

    def refresh(self) -> bool:
        self._follow_pending = False
        tree = self._tree
        version = tree.version if tree is not None else -2
        if version == self._version:
            return False
        self._version = version
        series = self.series()
        for curve, key in ((self.mean_prob, "mean_prob"), (self.mean_entropy, "mean_entropy"),
                           (self.rollout_prob, "prob"), (self.rollout_entropy, "entropy")):
            y = series[key]
            curve.setData(np.arange(len(y)), y, connect="finite")
        self._show_kl(tree is not None and tree.has_reference)
        if self._kl_shown:
            self._plot_kl(series["kl"], series["mean_kl"])
        self._update_key()
        for plot in (self.prob_plot, self.entropy_plot) + ((self.kl_plot,) if self._kl_shown else ()):
            plot.vb.prepareForPaint()  # settle the y range now, or the paint changes it and paints again
        return True

    def show_reference(self) -> None:
        """The reference facts of the followed tree changed (annotated, cleared): re-read them and redraw; the KL
        plot is there only while the tree has some."""
        self._version = -1
        self.refresh()

    @property
    def kl_shown(self) -> bool:
        return self._kl_shown

    def _show_kl(self, show: bool) -> None:
        if show == self._kl_shown:
            return
        self._kl_shown = show
        if show:
            self.graphics.addItem(self.kl_plot, row=2, col=0)
        else:
            self.graphics.removeItem(self.kl_plot)
            for curve in (self.mean_kl, self.rollout_kl):
                curve.setData([], [])
            self.infinite_kl.setData([], [])
        # the bottom plot carries the token positions
        self.entropy_plot.getAxis("bottom").setStyle(showValues=not show)
        self.entropy_plot.setLabel("bottom", "" if show else "token position")
        self.entropy_plot.getAxis("bottom").showLabel(not show)
        self.kl_plot.setLabel("bottom", "token position")

    def _plot_kl(self, kl: np.ndarray, mean_kl: np.ndarray) -> None:
        finite = np.concatenate([kl[np.isfinite(kl)], mean_kl[np.isfinite(mean_kl)]])
        top = float(finite.max()) if len(finite) and finite.max() > 0 else 1.0
        xs, ys = [], []
        for curve, y in ((self.mean_kl, mean_kl), (self.rollout_kl, kl)):
            infinite = np.isinf(y)
            curve.setData(np.arange(len(y)), np.where(infinite, np.nan, y), connect="finite")
            xs.append(np.flatnonzero(infinite))
        xs = np.unique(np.concatenate(xs))
        self.infinite_kl.setData(xs, np.full(len(xs), top))
        # from 0 (no difference) to the largest finite value, with one tick mid-way as the π plot has: labels at the
        # ends of so short an axis are cut off
        tick = float(f"{top / 2:.1g}")
        self.kl_plot.setYRange(0.0, top * 1.08, padding=0)
        self.kl_plot.getAxis("left").setTicks([[(tick, f"{tick:g}")]])

    def series(self) -> dict[str, np.ndarray]:
        """What the plots show: the selected rollout's and the group mean's probability and entropy by position."""
        empty = np.zeros(0)
        tree = self._tree
        if tree is None:
            return {"prob": empty, "entropy": empty, "mean_prob": empty, "mean_entropy": empty, "kl": empty,
                    "mean_kl": empty}
        mean_prob, mean_entropy = mean_series(tree)
        prob = entropy = kl = empty
        if self._rollout is not None and self._rollout in tree:
            prob, entropy = rollout_series(tree, self._rollout)
        mean_kl = empty
        if tree.has_reference:  # KL(pi || pi_ref) by position: NaN where no rollout with reference facts passes
            mean_kl = mean_kl_series(tree)
            if self._rollout is not None and self._rollout in tree:
                kl = rollout_kl_series(tree, self._rollout)
        return {"prob": prob, "entropy": entropy, "mean_prob": mean_prob, "mean_entropy": mean_entropy, "kl": kl,
                "mean_kl": mean_kl}

    def key_entries(self) -> list[tuple[str, str]]:
        """The key's (label, colour name) pairs, in order: the group mean, then the selected rollout, then (with the
        KL plot) the selected rollout's KL."""
        rollout = self._rollout or "selected rollout"
        entries = [("group mean", self.mean_prob.opts["pen"].color().name()),
                   (rollout, self.rollout_prob.opts["pen"].color().name())]
        if self._kl_shown:
            entries.append((f"KL(π ‖ π_ref) of {rollout}", self.rollout_kl.opts["pen"].color().name()))
        return entries

    def _update_key(self) -> None:
        # Built from the current pens and palette each time, so a palette change recolours the text as well.
        fg = self.palette().color(QPalette.ColorRole.Text).name()
        parts = [f'<span style="color:{colour}"><b>—</b></span> {html.escape(label)}'
                 for label, colour in self.key_entries()]
        self.key.setText(f'<span style="color:{fg}">' + "&nbsp;&nbsp;&nbsp;".join(parts) + "</span>")
        tip = "π: probability of the sampled token · H: entropy in nats, by token position"
        self.key.setToolTip(tip + ("\n" + KL_TIP if self._kl_shown else ""))

    def _apply_palette(self) -> None:
        pal = self.palette()
        bg, fg = pal.color(QPalette.ColorRole.Base), pal.color(QPalette.ColorRole.Text)
        accent = pal.color(QPalette.ColorRole.Highlight)
        muted = blend(bg, fg, 0.45)
        self.graphics.setBackground(bg)
        for plot in (self.prob_plot, self.entropy_plot, self.kl_plot):
            for name in ("left", "bottom"):
                plot.getAxis(name).setPen(blend(bg, fg, 0.5))
                plot.getAxis(name).setTextPen(fg)
        mean_pen = pg.mkPen(muted, width=1.5)
        self.mean_prob.setPen(mean_pen)
        self.mean_entropy.setPen(mean_pen)
        self.rollout_prob.setPen(pg.mkPen(accent, width=1.8))
        self.rollout_entropy.setPen(pg.mkPen(accent, width=1.8))
        self.mean_kl.setPen(mean_pen)
        self.rollout_kl.setPen(pg.mkPen(KL_COLOUR, width=1.8))
        self.infinite_kl.setBrush(pg.mkBrush(KL_COLOUR))
        key_palette = self.key.palette()
        key_palette.setColor(QPalette.ColorRole.Window, bg)
        self.key.setPalette(key_palette)
        self.key.setAutoFillBackground(True)  # one strip with the plots' background below it
        self._update_key()

    def changeEvent(self, event) -> None:
        if event.type() == QEvent.Type.PaletteChange and hasattr(self, "key"):
            self._apply_palette()
        super().changeEvent(event)
