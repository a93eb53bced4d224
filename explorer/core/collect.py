"""Accumulates engine events into rollout groups; snapshots a RolloutSet at any moment (streaming or done).

The CLI, the GUI and the autosave all read runs through this one class, so a run looks the same wherever it is seen.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterable, Optional

from .types import (
    Event,
    GroupHeader,
    ModelInfo,
    QueryGroup,
    Rollout,
    RolloutFinished,
    RolloutSet,
    RunFinished,
    RunStarted,
    SamplingParams,
    Score,
    Timings,
    TokenBatch,
    TokenInfo,
)


class _LiveRollout:
    __slots__ = ("group_id", "id", "index", "seed", "parent_id", "branch_position", "tokens", "text_parts", "final")

    def __init__(self, group_id, rollout_id, index, seed, parent_id, branch_position, prefix, prefix_text):
        self.group_id = group_id
        self.id = rollout_id
        self.index = index
        self.seed = seed
        self.parent_id = parent_id
        self.branch_position = branch_position
        self.tokens: list[TokenInfo] = list(prefix)
        self.text_parts: list[str] = [prefix_text] if prefix_text else []
        self.final: Optional[Rollout] = None

    def snapshot(self, unfinished_reason: Optional[str]) -> Rollout:
        if self.final is not None:
            return self.final
        return Rollout(
            id=self.id, index=self.index, seed=self.seed, text="".join(self.text_parts), tokens=tuple(self.tokens),
            finish_reason=unfinished_reason, parent_id=self.parent_id, branch_position=self.branch_position,
        )


class RunCollector:
    """Feed it events with add(); ask it for groups or a RolloutSet whenever you like.

    Several runs can be fed in turn (a generate, then branches of its rollouts): groups keep their identity and
    a branch's rollouts join the group they came from.
    """

    def __init__(self, model: Optional[ModelInfo] = None, sampling: Optional[SamplingParams] = None):
        self.model = model
        self.sampling = sampling or SamplingParams()
        self.timings = Timings()
        self._headers: dict[str, GroupHeader] = {}
        self._rollouts: dict[str, list[_LiveRollout]] = {}
        self._by_id: dict[str, _LiveRollout] = {}
        self._scores: dict[str, list[Score]] = {}
        self._extra: dict[str, dict] = {}  # per-group replacements (stats), per-rollout (reward, advantage)
        self.running = False
        self.cancelled = False
        self.tokens_done = 0
        self.total_tokens = 0

    # -- feeding -------------------------------------------------------------------------------------------------
    def add(self, event: Event) -> None:
        if isinstance(event, TokenBatch):
            for ev in event.events:
                live = self._by_id.get(ev.rollout_id)
                if live is None or live.final is not None:
                    continue
                live.tokens.append(ev.token)
                if ev.text:
                    live.text_parts.append(ev.text)
            self.tokens_done += len(event.events)
        elif isinstance(event, RolloutFinished):
            live = self._by_id.get(event.rollout.id)
            if live is None:  # a finished rollout we never saw start: accept it whole
                self._start_rollout(event.group_id, event.rollout.id, event.rollout.index, event.rollout.seed,
                                    event.rollout.parent_id, event.rollout.branch_position, (), "")
                live = self._by_id[event.rollout.id]
            live.final = event.rollout
            live.tokens = list(event.rollout.tokens)
            live.text_parts = [event.rollout.text]
        elif isinstance(event, RunStarted):
            self.running = True
            self.cancelled = False
            self.sampling = event.sampling
            if not event.is_branch:
                self.tokens_done = 0
                self.total_tokens = event.total_tokens
            else:
                self.total_tokens += event.total_tokens
            for header in event.groups:
                if header.id not in self._headers:
                    self._headers[header.id] = header
                    self._rollouts[header.id] = []
                    self._scores.setdefault(header.id, [])
            for rh in event.rollouts:
                self._start_rollout(rh.group_id, rh.rollout_id, rh.index, rh.seed, rh.parent_id,
                                    rh.branch_position, rh.prefix, rh.prefix_text)
        elif isinstance(event, RunFinished):
            self.running = False
            self.cancelled = event.cancelled
            self.timings = event.timings

    def extend(self, events: Iterable[Event]) -> "RunCollector":
        for event in events:
            self.add(event)
        return self

    def _start_rollout(self, group_id, rollout_id, index, seed, parent_id, branch_position, prefix, prefix_text):
        if group_id not in self._headers:
            raise KeyError(f"rollout {rollout_id} names unknown group {group_id}")
        live = _LiveRollout(group_id, rollout_id, index, seed, parent_id, branch_position, prefix, prefix_text)
        self._rollouts[group_id].append(live)
        self._by_id[rollout_id] = live

    def add_group(self, group: QueryGroup) -> None:
        """Take a finished group as it is (an opened file, a scoring-only group)."""
        self._headers[group.id] = GroupHeader(group.id, group.query, group.chat, group.prompt,
                                              group.prompt_token_ids, group.reference)
        self._rollouts[group.id] = []
        for r in group.rollouts:
            self._start_rollout(group.id, r.id, r.index, r.seed, r.parent_id, r.branch_position, (), "")
            live = self._by_id[r.id]
            live.final = r
            live.tokens = list(r.tokens)
            live.text_parts = [r.text]
        self._scores[group.id] = list(group.scores)
        if group.stats is not None:
            self._extra.setdefault(group.id, {})["stats"] = group.stats

    def add_scores(self, group_id: str, scores: Iterable[Score]) -> None:
        self._scores.setdefault(group_id, []).extend(scores)

    def set_group_scores(self, group_id: str, scores: Iterable[Score]) -> None:
        self._scores[group_id] = list(scores)

    def update_group(self, group: QueryGroup) -> None:
        """Replace finished rollouts' annotations (rewards, advantages) and the group's stats."""
        for r in group.rollouts:
            live = self._by_id.get(r.id)
            if live is not None and live.final is not None:
                live.final = r
        self._extra.setdefault(group.id, {})["stats"] = group.stats

    # -- reading -------------------------------------------------------------------------------------------------
    @property
    def group_ids(self) -> list[str]:
        return list(self._headers)

    def header(self, group_id: str) -> GroupHeader:
        return self._headers[group_id]

    def live_rollouts(self, group_id: str) -> list[_LiveRollout]:
        return self._rollouts.get(group_id, [])

    def rollout(self, rollout_id: str, unfinished_reason: Optional[str] = None) -> Rollout:
        return self._by_id[rollout_id].snapshot(unfinished_reason)

    def group(self, group_id: str, unfinished_reason: Optional[str] = None) -> QueryGroup:
        h = self._headers[group_id]
        extra = self._extra.get(group_id, {})
        return QueryGroup(
            id=h.id, query=h.query, chat=h.chat, prompt=h.prompt, prompt_token_ids=h.prompt_token_ids,
            rollouts=tuple(live.snapshot(unfinished_reason) for live in self._rollouts[group_id]),
            scores=tuple(self._scores.get(group_id, ())), reference=h.reference, stats=extra.get("stats"),
        )

    def groups(self, unfinished_reason: Optional[str] = None) -> tuple[QueryGroup, ...]:
        return tuple(self.group(gid, unfinished_reason) for gid in self._headers)

    def rollout_set(self, unfinished_reason: Optional[str] = "cancelled") -> RolloutSet:
        """A snapshot; rollouts still streaming are marked with unfinished_reason (a recovery file says cancelled)."""
        if self.model is None:
            raise ValueError("no model: a rollout set names the model that made it")
        return RolloutSet(model=self.model, sampling=self.sampling, groups=self.groups(unfinished_reason),
                          timings=self.timings)

    @classmethod
    def from_set(cls, rollout_set: RolloutSet) -> "RunCollector":
        collector = cls(rollout_set.model, rollout_set.sampling)
        collector.timings = rollout_set.timings
        for g in rollout_set.groups:
            collector.add_group(g)
        return collector


def replace_rollout(group: QueryGroup, rollout: Rollout) -> QueryGroup:
    return replace(group, rollouts=tuple(rollout if r.id == rollout.id else r for r in group.rollouts))
