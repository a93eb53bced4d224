"""The views of a session: the query tabs, the rollout panes, the token tree with its per-position plot, the rollout
table, the scoring panel and the statistics panel (tree, table and panes kept in step by ViewLinks), and the turn-taking that keeps their refreshes short while a run streams.

The panel shows a Session and keeps none of its state: the panes and the tree read the session's rollouts and
trees, the scoring panel shows the session's scores of the selected group. How they show it (the token shading, beta
of the implicit reward beta * log(pi(y|x) / pi_ref(y|x))) is one ViewOptions the views read.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable, Optional

from PySide6.QtCore import QObject, QSignalBlocker, Qt, Signal, Slot
from PySide6.QtWidgets import QDoubleSpinBox, QLabel, QStackedWidget, QTabBar, QWidget

from explorer.core.session import Session
from explorer.core.rl.stats import group_stats
from explorer.gui.panes.panes import RolloutPanes
from explorer.gui.views.rollout_table import RolloutTable
from explorer.gui.views.scoring import ScoringPanel
from explorer.gui.views.side_plot import SidePlot
from explorer.gui.views.stats_panel import StatsPanel
from explorer.gui.widgets.view_options import BETA_RANGE, ViewOptions
from explorer.gui.tree.tree_view import TokenTreeView
from explorer.gui.views.links import ViewLinks

EMPTY_PANES = ("<b>No rollouts yet.</b><br>Pick a model (or drop a .gguf file here), type queries on the left and "
               "press <b>Run</b> (Ctrl+Enter) to sample k rollouts per query.<br>Or open a saved rollout set "
               "(Ctrl+O). F1 lists every key and mouse action.")
EMPTY_TREE = ("The token tree of the selected query appears here, with a table of its rollouts beside it: each token a "
              "box as tall as its share of the rollouts, forks labelled where they diverge. Right-click a box to "
              "branch from it.")
TREE_INTERVAL_S = 0.1  # while a run streams, the token tree redraws at ~10 Hz
PANES_PER_TICK = 2  # while a run streams, panes made per refresh tick (each costs a few ms, plus its first layout)
_NO_TREE_SWITCH = object()


def on_screen(widget: QWidget) -> bool:
    """Whether any of the widget is on screen (a dock panel in a tab behind another stays "visible", off screen)."""
    return widget.isVisible() and not widget.visibleRegion().isEmpty()


def _hint(text: str) -> QLabel:
    label = QLabel(text)
    label.setWordWrap(True)
    label.setAlignment(Qt.AlignmentFlag.AlignCenter)
    label.setContentsMargins(24, 24, 24, 24)
    label.setStyleSheet("color: palette(mid);")
    return label


class ViewsPanel(QObject):
    """The views of the session shown and the query tabs that pick its group; the window places them (parts())."""

    group_changed = Signal(object)  # the group id now shown, or None
    reference_changed = Signal(object)  # what the session's reference policy is (its description), or None

    def __init__(self, is_running: Callable[[], bool], branch_k: Callable[[], int] = lambda: 4,
                 parent: Optional[QObject] = None):
        """branch_k: how many rollouts a branch from the tree samples (the side panel's k)."""
        super().__init__(parent)
        self._is_running = is_running
        self.options = ViewOptions(self)
        self._session: Optional[Session] = None
        self._tree_drawn_at = 0.0  # time.monotonic() of the last tree refresh
        self._tree_to_show = _NO_TREE_SWITCH  # a tree the tree view switches to on its next refresh
        self._streaming = False  # between set_streaming(True) and (False)

        self.group_tabs = QTabBar()
        self.group_tabs.setExpanding(False)
        self.group_tabs.setDocumentMode(True)
        self.group_tabs.setElideMode(Qt.TextElideMode.ElideRight)
        self.group_tabs.currentChanged.connect(self._on_tab_changed)

        # The panes bring their own legend, shading and sort choices.
        self.panes = RolloutPanes(self.options)
        self.panes.token_clicked.connect(lambda rid, pos: self.tree_view.select_token(rid, pos))
        # an empty view says what to do instead of showing bare panes and axes
        self.empty_hint = _hint(EMPTY_PANES)
        self.panes_stack = QStackedWidget()
        self.panes_stack.addWidget(self.empty_hint)
        self.panes_stack.addWidget(self.panes)

        self.tree_view = TokenTreeView(branch_k=branch_k)
        self.tree_view.token_selected.connect(self.panes.scroll_to_token)
        self.tree_stack = QStackedWidget()
        self.tree_stack.addWidget(_hint(EMPTY_TREE))
        self.tree_stack.addWidget(self.tree_view)
        # one row per distinct response; its selection picks the panes
        self.rollout_table = RolloutTable(self.options)
        # an editor of the views' beta: it shows the option and sets it
        self.beta_box = QDoubleSpinBox()
        self.beta_box.setPrefix("β ")
        self.beta_box.setDecimals(3)
        self.beta_box.setRange(*BETA_RANGE)
        self.beta_box.setSingleStep(0.05)
        self.beta_box.setValue(self.options.beta)
        self.beta_box.setToolTip(
            "beta of DPO's implicit reward beta * log(pi(y|x) / pi_ref(y|x)). Up to a constant per query, it is the "
            "reward for which the policy is the best one of RL with the penalty beta * KL(pi || pi_ref) from the "
            "reference: compare it between responses to the same query. DPO is commonly trained with beta 0.1 "
            "(0.01 to 0.5); the implicit R column and the pane headers use this one")
        self.beta_box.valueChanged.connect(self.options.set_beta)
        self.options.changed.connect(self._on_option_changed)
        self.rollout_table.add_reference_control(self.beta_box)
        self.side_plot = SidePlot()
        self.side_plot.follow(self.tree_view)
        self.links = ViewLinks(self.tree_view, self.rollout_table, self.panes, self.side_plot)
        self.scoring = ScoringPanel(self.options)
        self.stats_panel = StatsPanel()
        self._show_empty_hints()

    def parts(self) -> dict[str, QWidget]:
        """The views as the window lays them out, by name: the tree leads; the others are panels around it."""
        return {"tree": self.tree_stack, "panes": self.panes_stack, "table": self.rollout_table,
                "scoring": self.scoring, "stats": self.stats_panel, "side_plot": self.side_plot}

    # -- what is shown ---------------------------------------------------------------------------------------------
    @property
    def session(self) -> Optional[Session]:
        return self._session

    def show_session(self, session: Optional[Session]) -> None:
        """Show another session (a new run, an opened set): the tabs start over. A run's session comes with its first
        events: the views are cleared as before a run, then stream again."""
        streaming = self._streaming
        if streaming:
            self.set_streaming(False)
        self._session = session
        self.group_tabs.blockSignals(True)
        while self.group_tabs.count():
            self.group_tabs.removeTab(0)
        self.group_tabs.blockSignals(False)
        self.panes.show_group(None, None)
        self.scoring.set_group(None, "", ())
        self._announce_reference()
        self.show_stats(None)
        self._tree_to_show = _NO_TREE_SWITCH
        self.tree_view.set_tree(None)
        self.links.clear()
        self.group_changed.emit(None)
        if session is not None and session.group_ids:
            self.sync_tabs()
        self._show_empty_hints()
        if streaming:
            self.set_streaming(True)

    def sync_tabs(self) -> None:
        """A tab for every group of the session not shown yet; the first one is selected."""
        session = self._session
        had = self.group_tabs.count()
        known = {self.group_tabs.tabData(i) for i in range(had)}
        self.group_tabs.blockSignals(True)  # a tab's data is set after addTab; select once everything is there
        for gid in session.group_ids:
            if gid in known:
                continue
            query = session.header(gid).query
            short = query if len(query) <= 36 else query[:35] + "…"
            index = self.group_tabs.addTab(f"{self.group_tabs.count() + 1}. {short}")
            self.group_tabs.setTabData(index, gid)
            self.group_tabs.setTabToolTip(index, query)
        self.group_tabs.blockSignals(False)
        if had == 0 and self.group_tabs.count():
            self.group_tabs.setCurrentIndex(0)
            self._on_tab_changed(0)
        self._show_empty_hints()

    def _show_empty_hints(self) -> None:
        shown = 1 if self.group_tabs.count() else 0
        self.panes_stack.setCurrentIndex(shown)
        self.tree_stack.setCurrentIndex(shown)

    def current_group_id(self) -> Optional[str]:
        index = self.group_tabs.currentIndex()
        return self.group_tabs.tabData(index) if index >= 0 else None

    def select_group(self, group_id: str) -> None:
        for i in range(self.group_tabs.count()):
            if self.group_tabs.tabData(i) == group_id:
                self.group_tabs.setCurrentIndex(i)
                return

    @Slot(int)
    def _on_tab_changed(self, index: int) -> None:
        gid = self.group_tabs.tabData(index) if index >= 0 else None
        session = self._session
        if session is None or gid is None:
            return
        self.panes.show_group(session, gid)
        self._show_table()
        self.scoring.set_group(gid, session.header(gid).query, session.scores(gid))
        self.show_stats(gid)
        if self._is_running():  # drawing a whole tree takes a while: on the tree's own turn (refresh)
            self._tree_to_show = session.trees.get(gid)
        else:
            self._tree_to_show = _NO_TREE_SWITCH
            self.tree_view.set_tree(session.trees.get(gid))
        self.group_changed.emit(gid)

    def show_reference(self) -> None:
        """The session's reference facts changed (a group annotated, the reference cleared): every view re-reads what
        it shows from the session."""
        gid = self.current_group_id()
        self._announce_reference()
        self.panes.refresh()
        self._show_table()
        self.show_scores(gid)
        self.show_stats(gid)
        self._show_tree_reference()

    def _show_tree_reference(self) -> None:
        """The session's trees hold the facts as node columns (the session keeps them in step): redraw from them."""
        self.tree_view.show_reference()
        self.side_plot.show_reference()

    def _announce_reference(self) -> None:
        session = self._session
        reference = session.reference_policy if session is not None else None
        description = reference.description if reference is not None else None
        self.panes.set_reference_policy(description)
        self.reference_changed.emit(description)

    def _on_option_changed(self, name: str) -> None:
        if name == "beta" and self.beta_box.value() != self.options.beta:
            with QSignalBlocker(self.beta_box):
                self.beta_box.setValue(self.options.beta)

    def show_scores(self, group_id: Optional[str]) -> None:
        """The session's scores of this group changed."""
        if self._session is not None and group_id is not None and group_id == self.current_group_id():
            self.scoring.show_scores(self._session.scores(group_id))

    def show_stats(self, group_id: Optional[str]) -> None:
        """The statistics panel follows the query tab."""
        session = self._session
        if session is None or group_id is None or group_id not in session.group_ids:
            self.stats_panel.show_group(None)
            return
        group = session.group(group_id)
        if group.stats is None and not self._is_running() and group.rollouts:
            # a set saved without statistics (older files, a recovered run): computed for the panel only, so the
            # set stays as it was saved
            group = replace(group, stats=group_stats(group))
        self.stats_panel.show_group(group, session.reference_policy, session.set_mismatch())

    # -- layout ----------------------------------------------------------------------------------------------------
    def set_compact(self, compact: bool) -> None:
        self.panes.set_compact(True if compact else None)  # unchecked: automatic again (compact for k > 8)

    # -- refresh turn-taking ---------------------------------------------------------------------------------------
    @property
    def streaming(self) -> bool:
        return self._streaming

    def set_streaming(self, streaming: bool) -> None:
        """While a run streams: panes are made a few per tick, the tree's x range steps ahead of the tree, and the
        side plot waits for a turn of its own to follow the tree."""
        self._streaming = streaming
        self.panes.set_pane_budget(PANES_PER_TICK if streaming else None)
        self.tree_view.set_growing(streaming)
        self.side_plot.set_held(streaming)

    def refresh(self, spread: bool = False, busy: bool = False) -> bool:
        """Bring the panes, the tree and its side plot up to date. spread (the refresh timer while a run streams):
        one of them per tick -- the tree at most every TREE_INTERVAL_S, the side plot on the next tick, the panes
        on the others, none when busy (the tick already made new tabs and their first panes) -- so that one tick's
        work and the repaint it causes stay short and the window keeps answering. A panel out of sight (a tab behind
        another) is left until it is shown or the run ends. True when the panes took this turn (or everything was
        refreshed)."""
        view, side = self.tree_view, self.side_plot
        now = time.monotonic()
        if spread:
            if busy:
                return False
            if side.is_stale() and on_screen(side):  # like the panes: drawn when in sight, and at the run's end
                side.refresh()
                return False
            if now - self._tree_drawn_at >= TREE_INTERVAL_S and (
                    self._tree_to_show is not _NO_TREE_SWITCH or view.is_stale()):
                self._draw_tree(now)
                return False
            if on_screen(self.panes):  # panes in a tab behind the table catch up when shown, or at the run's end
                self.panes.refresh()
            return True
        self.panes.refresh()
        self._draw_tree(now)
        if side.is_stale():
            side.refresh()
        return True

    def _show_table(self) -> None:
        gid, session = self.current_group_id(), self._session
        if session is not None and gid in session.group_ids:
            self.links.show_rollouts(gid, session.group(gid).rollouts)

    def _draw_tree(self, now: float) -> None:
        self._tree_drawn_at = now
        self._show_table()  # on the tree's turn: the table's numbers move at its pace
        if self._tree_to_show is not _NO_TREE_SWITCH:
            tree, self._tree_to_show = self._tree_to_show, _NO_TREE_SWITCH
            self.tree_view.set_tree(tree)  # draws it whole and fits it
        else:
            self.tree_view.refresh()
