"""The main window's reward side: score each query's rollouts with the chosen reward once they have all finished,
compute GRPO advantages and the group statistics, store them in the RunCollector (so the panes, the exports and the
statistics panel show them), and say when a reward failed. A mixin of MainWindow.

Rewards run on the GUI thread: a group is scored once per (finished rollouts, reward choice), when its last rollout
finishes (again after a branch run adds rollouts to it), at the end of a run, and for every group when the user
changes the reward choice.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterable, Optional

from PySide6.QtWidgets import QLabel

from ..core.rewards import apply_rewards
from ..core.stats import group_stats
from ..core.types import QueryGroup, RolloutFinished
from .style import finish_colour

MESSAGE_MS = 20000  # a failure message stays long enough to be read
MAX_LISTED = 8  # reward errors listed in the status bar's tooltip


def _without_rewards(group: QueryGroup) -> QueryGroup:
    if all(r.reward is None and r.advantage is None and r.reward_error is None for r in group.rollouts):
        return group
    return replace(group, rollouts=tuple(replace(r, reward=None, advantage=None, reward_error=None)
                                         for r in group.rollouts))


def _has_rewards(group: QueryGroup) -> bool:
    return any(r.reward is not None or r.reward_error is not None for r in group.rollouts)


class WindowRewardsMixin:
    def _init_rewards(self) -> None:
        """After the controls and the status bar exist."""
        self._reward_serial = 0  # bumped by every change of the reward choice
        self._reward_done: dict[str, tuple[int, int]] = {}  # group id -> (finished rollouts, serial) scored
        self._reward_collector = None  # the collector _reward_done is about
        self.reward_status = QLabel("")
        self.statusBar().insertPermanentWidget(0, self.reward_status)
        self.controls.reward_box.changed.connect(self.reapply_rewards)
        self._update_reward_status()

    # -- hooks called by the window --------------------------------------------------------------------------------
    def _reward_finished_groups(self, events: Iterable) -> None:
        """From drain(): score the groups whose last rollout finished among `events`."""
        gids = {e.group_id for e in events if isinstance(e, RolloutFinished)}
        scored = [gid for gid in gids if self._all_finished(gid) and self._needs_scoring(gid)]
        for gid in scored:
            self._score_group(gid)
        if scored:
            self._report_reward_errors(scored)

    def _rewards_after_run(self) -> None:
        """From _on_finished(): score what a stopped or failed run left (finished rollouts only), then report."""
        if self.collector is None:
            return
        scored = [gid for gid in self.collector.group_ids if self._needs_scoring(gid)]
        for gid in scored:
            self._score_group(gid)
        if scored:
            self.panes.refresh()
        self._report_reward_errors(None)

    def _rewards_after_open(self) -> None:
        """From show_rollout_set(): a set is shown as saved (a set that carries rewards keeps them), except that a
        set without rewards gets the reward chosen in the window, if any. Picking a reward re-scores it."""
        self._reset_reward_state()
        scored = 0
        for gid in self.collector.group_ids:
            if self.controls.reward_box.reward_fn() is not None and not _has_rewards(self.collector.group(gid)):
                self._score_group(gid)
                scored += 1
            else:
                self._reward_done[gid] = (self._finished_count(gid), -1)  # not from the current choice
        self._report_reward_errors(None, quiet=not scored)

    def reapply_rewards(self) -> None:
        """The reward choice changed: score every group whose rollouts have all finished (every group of an opened
        set) again, and show the result."""
        self._reward_serial += 1
        self._update_reward_status()
        if self.collector is None:
            return
        self.drain()
        gids = [gid for gid in self.collector.group_ids if self._finished_count(gid)
                and (self._all_finished(gid) or not self.is_running())]
        for gid in gids:
            self._score_group(gid)
        self.panes.refresh()
        self._report_reward_errors(None)
        name = self.controls.reward_box.description()
        if gids and not self._reward_errors():
            self.status.message(f"Rewards: {name} on {len(gids)} queries" if name else "Rewards cleared")

    def _show_stats(self, group_id: Optional[str]) -> None:
        """The statistics panel follows the query tab."""
        panel = getattr(self, "stats_panel", None)
        if panel is None:
            return
        if self.collector is None or group_id is None or group_id not in self.collector.group_ids:
            panel.show_group(None)
            self._update_reward_status()  # the tabs were cleared: a new run or set, no failures of the last one
            return
        group = self.collector.group(group_id)
        if group.stats is None and not self.is_running() and group.rollouts:
            # a set saved without statistics (older files, a recovered run): computed for the panel only, so the
            # set stays as it was saved
            group = replace(group, stats=group_stats(group))
        panel.show_group(group)

    # -- internals -------------------------------------------------------------------------------------------------
    def _reset_reward_state(self) -> None:
        self._reward_done = {}
        self._reward_collector = self.collector

    def _finished_count(self, gid: str) -> int:
        return sum(1 for live in self.collector.live_rollouts(gid) if live.final is not None)

    def _all_finished(self, gid: str) -> bool:
        lives = self.collector.live_rollouts(gid)
        return bool(lives) and all(live.final is not None for live in lives)

    def _needs_scoring(self, gid: str) -> bool:
        if self._reward_collector is not self.collector:
            self._reset_reward_state()
        n = self._finished_count(gid)
        done = self._reward_done.get(gid)
        if n == 0:
            return False
        if done is None or done[0] != n:
            return True  # new rollouts finished (a run, a branch joining the group)
        return done[1] != -1 and done[1] != self._reward_serial  # -1: an opened set's own rewards, kept

    def _score_group(self, gid: str) -> None:
        if self._reward_collector is not self.collector:
            self._reset_reward_state()
        box = self.controls.reward_box
        fn = box.reward_fn()
        group = self.collector.group(gid)
        if fn is not None:
            group = apply_rewards(group, fn, box.normalize_std())
        else:
            group = _without_rewards(group)
            group = replace(group, stats=group_stats(group))
        self.collector.update_group(group)
        self._reward_done[gid] = (self._finished_count(gid), self._reward_serial)
        self._dirty_since_autosave = True
        if gid == self.current_group_id():
            self._show_stats(gid)

    def _reward_errors(self, gids: Optional[Iterable[str]] = None) -> list[tuple[str, str]]:
        if self.collector is None:
            return []
        out = []
        for gid in self.collector.group_ids if gids is None else gids:
            for live in self.collector.live_rollouts(gid):
                if live.final is not None and live.final.reward_error:
                    out.append((live.id, live.final.reward_error))
        return out

    def _report_reward_errors(self, gids: Optional[Iterable[str]], quiet: bool = False) -> None:
        """Status bar: a permanent count of failed rewards (listed in its tooltip), and a message for new ones."""
        self._update_reward_status()
        errors = self._reward_errors(gids)
        if errors and not quiet:
            rid, why = errors[0]
            self.status.message(f"{len(errors)} reward{'s' if len(errors) != 1 else ''} failed: {rid}: {why}",
                                MESSAGE_MS)

    def _update_reward_status(self) -> None:
        name = self.controls.reward_box.description()
        errors = self._reward_errors()
        if not name and not errors:
            self.reward_status.setText("")
            self.reward_status.setToolTip("")
            self.reward_status.setVisible(False)
            return
        text = f"Reward: {name}" if name else "Reward: from the file"
        if errors:
            red = finish_colour("cancelled").name()
            text += f' · <span style="color:{red};font-weight:bold">{len(errors)} failed</span>'
            listed = [f"{rid}: {why}" for rid, why in errors[:MAX_LISTED]]
            if len(errors) > MAX_LISTED:
                listed.append(f"… and {len(errors) - MAX_LISTED} more")
            self.reward_status.setToolTip("Rewards that failed (null reward):\n" + "\n".join(listed))
        else:
            self.reward_status.setToolTip("Rewards and advantages are in the pane headers and the exports")
        self.reward_status.setText(text)
        self.reward_status.setVisible(True)
