"""The main window's view side: the query tabs, what the panes, the tree and the scoring panel show, shading, and
score requests. A mixin of MainWindow (kept apart to keep each file readable)."""

from __future__ import annotations

import sys
import time
from typing import Optional

from PySide6.QtCore import Slot

from ..core.tree import feed_trees
from ..core.types import RunStarted

TREE_INTERVAL_S = 0.1  # while a run streams, the token tree redraws at ~10 Hz
PANES_PER_TICK = 2  # while a run streams, panes made per refresh tick (each costs a few ms, plus its first layout)
_NO_TREE_SWITCH = object()


class WindowViewsMixin:
    _tree_drawn_at = 0.0  # time.monotonic() of the last tree refresh
    _tree_to_show = _NO_TREE_SWITCH  # a tree the tree view switches to on its next refresh (see _on_tab_changed)
    _views_streaming = False  # between _set_streaming_views(True) and (False)

    def _set_streaming_views(self, streaming: bool) -> None:
        """While a run streams: panes are made a few per tick, the tree's x range steps ahead of the tree, and the
        side plot waits for a turn of its own to follow the tree."""
        self._views_streaming = streaming
        self.panes.set_pane_budget(PANES_PER_TICK if streaming else None)
        self.tree_view.set_growing(streaming)
        self.side_plot.set_held(streaming)

    def _refresh_views(self, spread: bool = False, busy: bool = False) -> bool:
        """Bring the panes, the tree and its side plot up to date. spread (the refresh timer while a run streams):
        one of them per tick -- the tree at most every TREE_INTERVAL_S, the side plot on the next tick, the panes
        on the others, none when busy (the tick already made new tabs and their first panes) -- so that one tick's
        work and the repaint it causes stay short and the window keeps answering. True when the panes took this turn
        (or everything was refreshed)."""
        view, side = self.tree_view, self.side_plot
        now = time.monotonic()
        if spread:
            if busy:
                return False
            if side.is_stale():
                side.refresh()
                return False
            if now - self._tree_drawn_at >= TREE_INTERVAL_S and (
                    self._tree_to_show is not _NO_TREE_SWITCH or view.is_stale()):
                self._draw_tree(now)
                return False
            self.panes.refresh()
            return True
        self.panes.refresh()
        self._draw_tree(now)
        if side.is_stale():
            side.refresh()
        return True

    def _draw_tree(self, now: float) -> None:
        self._tree_drawn_at = now
        if self._tree_to_show is not _NO_TREE_SWITCH:
            tree, self._tree_to_show = self._tree_to_show, _NO_TREE_SWITCH
            self.tree_view.set_tree(tree)  # draws it whole and fits it
        else:
            self.tree_view.refresh()

    # -- trees ---------------------------------------------------------------------------------------------------
    def _feed_trees(self, event) -> bool:
        """Returns True when the event named groups not seen before."""
        try:
            feed_trees(self.trees, event)
        except ValueError as exc:  # a tree that cannot follow must not stop the panes from streaming
            print(f"rollout-explorer: token tree: {exc}", file=sys.stderr)
        return isinstance(event, RunStarted)

    # -- groups and views ------------------------------------------------------------------------------------------
    def _clear_tabs(self) -> None:
        self.group_tabs.blockSignals(True)
        while self.group_tabs.count():
            self.group_tabs.removeTab(0)
        self.group_tabs.blockSignals(False)
        self.panes.show_group(None, None)
        self.scoring.set_group(None, "")
        self._show_stats(None)
        self._tree_to_show = _NO_TREE_SWITCH
        self.tree_view.set_tree(None)

    def _sync_tabs(self) -> None:
        had = self.group_tabs.count()
        known = {self.group_tabs.tabData(i) for i in range(had)}
        self.group_tabs.blockSignals(True)  # a tab's data is set after addTab; select once everything is there
        for gid in self.collector.group_ids:
            if gid in known:
                continue
            query = self.collector.header(gid).query
            short = query if len(query) <= 36 else query[:35] + "…"
            index = self.group_tabs.addTab(f"{self.group_tabs.count() + 1}. {short}")
            self.group_tabs.setTabData(index, gid)
            self.group_tabs.setTabToolTip(index, query)
        self.group_tabs.blockSignals(False)
        if had == 0 and self.group_tabs.count():
            self.group_tabs.setCurrentIndex(0)
            self._on_tab_changed(0)

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
        if self.collector is None or gid is None:
            return
        self.panes.show_group(self.collector, gid)
        self.scoring.set_group(gid, self.collector.header(gid).query)
        # always, even when empty: the panel keeps scores by group id, and a new run reuses the ids
        self.scoring.show_scores(gid, self.collector.group(gid).scores)
        self._show_stats(gid)
        if self.is_running():  # drawing a whole tree takes a while: on the tree's own turn (_refresh_views)
            self._tree_to_show = self.trees.get(gid)
        else:
            self._tree_to_show = _NO_TREE_SWITCH
            self.tree_view.set_tree(self.trees.get(gid))

    def set_shading(self, mode: str) -> None:
        self.panes.set_shading(mode)
        self._on_shading_changed(mode)

    def shading(self) -> str:
        return self.panes.shading

    def _on_shading_changed(self, mode: str) -> None:
        self.actions["shade_prob" if mode == "prob" else "shade_entropy"].setChecked(True)
        self.scoring.set_shading(mode)

    def set_compact(self, compact: bool) -> None:
        self.panes.set_compact(True if compact else None)  # unchecked: automatic again (compact for k > 8)

    def _on_token_clicked(self, rollout_id: str, position: int) -> None:
        self.tree_view.select_token(rollout_id, position)

    def _on_tree_token(self, rollout_id: str, position: int) -> None:
        self.panes.scroll_to_token(rollout_id, position)

    # -- scoring ---------------------------------------------------------------------------------------------------
    def _same_model_as_collector(self) -> bool:
        made_with = self.collector.model if self.collector is not None else None
        return made_with is None or self.model_info is None or made_with.fingerprint == self.model_info.fingerprint

    def request_score(self, group_id: str, responses: list) -> Optional[int]:
        if self.model_info is None:
            self.show_error("No model", "Load a model to score responses (what you typed is kept).")
            return None
        if self.collector is None or group_id not in self.collector.group_ids:
            return None
        if not self._same_model_as_collector():
            self.show_error("Different model", f"This rollout set was made with {self.collector.model.name}; load "
                            "that model to score responses against it (what you typed is kept).")
            return None
        header = self.collector.header(group_id)
        system = self.controls.system_prompt() if header.chat else None
        request = self.host.score(group_id, header.query, list(responses), header.chat, system,
                                  self.controls.sampling_params().top_n)
        self._score_requests[request] = (self.collector, group_id)
        self.scoring.set_busy(True)
        return request

    @Slot(int, str, object)
    def _on_scores(self, request: int, group_id: str, scores: tuple) -> None:
        collector, gid = self._score_requests.get(request, (None, None))
        if collector is None or collector is not self.collector:
            return  # asked about a set that is no longer shown
        collector.set_group_scores(gid, scores)
        if self.current_group_id() == gid:
            self.scoring.show_scores(gid, scores)
