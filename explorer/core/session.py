"""The exploration session: everything a run (or an opened set) leaves behind, in one Qt-free owner.

A Session takes engine events and keeps, once each: the rollout groups being built (text and tokens accumulated
here only), one TokenTree per group, the teacher-forced scores typed for each group, the chosen reward with the
bookkeeping of which groups it has scored, the file an opened set came from, the run ids whose events it takes,
and the history of runs (a generate and the branches that followed, each with its own sampling parameters,
progress and timings). The CLI, the window and the autosave all read runs through it, so a run looks the same
wherever it is seen.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Optional

from explorer.core.errors import ExplorerError
from explorer.core.rl.outcomes import CORRECT_AT, scored_group
from explorer.core.rl.stats import DEFAULT_TIS_CAP, REFERENCE_STATS, mismatch_stats, reference_stats
from explorer.core.token_text import decode_pieces, fit_pieces
from explorer.core.rl.values import token_credit, value_estimates
from explorer.core.tree.token_tree import TokenTree, feed_trees
from explorer.core.values.tree_values import TreeValues
from explorer.core.types import (
    Event,
    GroupHeader,
    ModelInfo,
    QueryGroup,
    ReferenceInfo,
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
    ValueEstimate,
)

LOCAL_RUN = 0  # the run id of events fed without one (the CLI, tests): always accepted

_NOT_FROM_CHOICE = -1  # a reward state that came with an opened set, not from the reward chosen here


class LiveRollout:
    """A rollout as it streams: its tokens and their text deltas, one delta per token (a delta may be empty while a
    UTF-8 character is split over tokens), and the finished Rollout once the engine sends it."""

    __slots__ = ("group_id", "id", "index", "seed", "parent_id", "branch_position", "sampling", "tokens",
                 "deltas", "logprob", "final", "value_position")

    def __init__(self, group_id, rollout_id, index, seed, parent_id, branch_position, sampling, prefix, prefix_text):
        self.group_id = group_id
        self.id = rollout_id
        self.index = index
        self.seed = seed
        self.parent_id = parent_id
        self.branch_position = branch_position
        self.sampling: Optional[SamplingParams] = sampling  # None: the set's sampling parameters drew it
        self.tokens: list[TokenInfo] = list(prefix)
        # one text delta per token: a branch's copied prefix is split over its tokens (its text is authoritative)
        self.deltas: list[str] = fit_pieces(decode_pieces(prefix), prefix_text) if prefix else []
        self.logprob = sum(t.logprob for t in prefix)  # log pi of the tokens so far, kept up as they stream
        self.final: Optional[Rollout] = None
        self.value_position: Optional[int] = None  # a value rollout's (Rollout.value_position)

    @property
    def text(self) -> str:
        return self.final.text if self.final is not None else "".join(self.deltas)

    def finish(self, rollout: Rollout) -> None:
        if self.sampling is not None and rollout.sampling is None:
            rollout = replace(rollout, sampling=self.sampling)
        self.final = rollout
        self.tokens = list(rollout.tokens)

    def snapshot(self, unfinished_reason: Optional[str]) -> Rollout:
        if self.final is not None:
            return self.final
        return Rollout(
            id=self.id, index=self.index, seed=self.seed, text="".join(self.deltas), tokens=tuple(self.tokens),
            finish_reason=unfinished_reason, parent_id=self.parent_id, branch_position=self.branch_position,
            sampling=self.sampling, value_position=self.value_position,
        )


@dataclass
class RunRecord:
    """One generate or branch run as the session saw it; its figures are its own, never the mixture."""

    run_id: int
    is_branch: bool
    sampling: SamplingParams
    total_tokens: int  # upper bound: its rollouts x max tokens
    tokens_done: int = 0
    rollout_ids: list[str] = field(default_factory=list)
    timings: Optional[Timings] = None  # when it finished
    cancelled: bool = False

    @property
    def finished(self) -> bool:
        return self.timings is not None


@dataclass(frozen=True)
class Changes:
    """What one feed() changed: groups first seen, groups whose rollouts have now all finished, groups rewarded."""

    new_groups: tuple[str, ...] = ()
    finished_groups: tuple[str, ...] = ()
    rewarded_groups: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.new_groups or self.finished_groups or self.rewarded_groups)


def _without_reference(tokens) -> tuple[TokenInfo, ...]:
    return tuple(replace(t, ref_logprob=None, kl=None, ref_top_id=None, ref_top=()) if t.has_reference else t
                 for t in tokens)


def _has_rewards(group: QueryGroup) -> bool:
    return any(r.reward is not None or r.reward_error is not None for r in group.rollouts)


class Session:
    """Feed it events; ask it for groups, trees, scores, runs or a RolloutSet whenever you like.

    Several runs can be fed in turn (a generate, then branches of its rollouts): groups keep their identity and a
    branch's rollouts join the group they came from. Only the events of accepted runs are taken.
    """

    def __init__(self, model: Optional[ModelInfo] = None, sampling: Optional[SamplingParams] = None,
                 source: Optional[str] = None):
        self.model = model
        self.sampling = sampling or SamplingParams()  # the set's: the first generate's (branches keep their own)
        self.source = source  # the file an opened set came from; None for a set made here
        self.runs: list[RunRecord] = []
        self._version = 0  # bumped by every change of what the session holds (see version)
        self._exported: set[str] = set()  # the rollouts an export (or the opened file) holds
        self.trees: dict[str, TokenTree] = {}
        self._opened_timings = Timings()
        self._accepted: set[int] = {LOCAL_RUN}
        self._headers: dict[str, GroupHeader] = {}
        self._rollouts: dict[str, list[LiveRollout]] = {}
        self._by_id: dict[str, LiveRollout] = {}
        self._scores: dict[str, tuple[Score, ...]] = {}
        # scores made before this session's first run (carry_scores): (query, chat, prompt) -> (header, scores)
        self._carried: dict[tuple, tuple[GroupHeader, tuple[Score, ...]]] = {}
        self._stats: dict[str, tuple] = {}
        self._reward_fn: Optional[Callable] = None
        self._divide_by_std = True
        self._reward_serial = 0  # bumped by every set_reward()
        self._reward_done: dict[str, tuple[int, int]] = {}  # group id -> (finished rollouts, serial) rewarded
        # what pi_ref is: the reference the tokens' facts are under (use_reference_policy is its only writer)
        self._reference_policy: Optional[ReferenceInfo] = None
        self._tis_cap = DEFAULT_TIS_CAP
        self._reference_serial = 0  # bumped whenever tokens gain or lose reference facts
        self._set_mismatch: tuple = (None, None)  # (what it was computed from, set_mismatch())
        self._tree_values: dict[str, tuple] = {}  # group id -> (what they were computed from, TreeValues)
        self.correct_at = CORRECT_AT  # a reward at least this counts as correct (pass@k, zero-variance outcomes)

    # -- runs ------------------------------------------------------------------------------------------------------
    def accept(self, run_id: int) -> None:
        """Take the events of this run from now on (a generate, or a branch of this session's rollouts)."""
        self._accepted.add(run_id)

    def accepts(self, run_id: int) -> bool:
        return run_id in self._accepted

    @property
    def version(self) -> int:
        """A number that changes whenever what the session holds changes (tokens, rollouts, groups, scores, rewards,
        reference facts, reference answers): whoever keeps a copy (the autosave) compares it with the one it saw."""
        return self._version

    def _changed(self) -> None:
        self._version += 1

    def mark_exported(self) -> None:
        """Every rollout shown so far is in a file now."""
        self._exported = set(self._by_id)

    def unexported_rollouts(self) -> list[str]:
        """The rollouts that no file holds yet (made by a run or a branch here, or recovered after a crash)."""
        return [rid for rid in self._by_id if rid not in self._exported]

    def has_unexported(self) -> bool:
        return any(rid not in self._exported for rid in self._by_id)

    @property
    def current_run(self) -> Optional[RunRecord]:
        return self.runs[-1] if self.runs else None

    @property
    def running(self) -> bool:
        return self.current_run is not None and not self.current_run.finished

    @property
    def cancelled(self) -> bool:
        return self.current_run is not None and self.current_run.cancelled

    @property
    def tokens_done(self) -> int:
        """Of the current run only."""
        return self.current_run.tokens_done if self.current_run is not None else 0

    @property
    def total_tokens(self) -> int:
        """Of the current run only."""
        return self.current_run.total_tokens if self.current_run is not None else 0

    @property
    def timings(self) -> Timings:
        """The set's timings: its generate run's (a branch's are in its own RunRecord), or an opened file's."""
        for run in self.runs:
            if not run.is_branch and run.timings is not None:
                return run.timings
        return self._opened_timings

    # -- feeding ---------------------------------------------------------------------------------------------------
    def feed(self, run_id: int, events: Iterable[Event]) -> Changes:
        """Take a run's events (ignored unless the run was accepted); reward the groups that finished."""
        if run_id not in self._accepted:
            return Changes()
        new_groups: list[str] = []
        touched: set[str] = set()
        for event in events:
            new_groups += self._add(event, run_id)
            if isinstance(event, RolloutFinished):
                touched.add(event.group_id)
        finished = tuple(gid for gid in self._headers if gid in touched and self.all_finished(gid))
        rewarded = tuple(gid for gid in finished if self.needs_reward(gid))
        for gid in rewarded:
            self.reward_group(gid)
        return Changes(tuple(new_groups), finished, rewarded)

    def add(self, event: Event) -> None:
        """One event of the local run (no reward is applied; see feed)."""
        self._add(event, LOCAL_RUN)

    def extend(self, events: Iterable[Event]) -> "Session":
        for event in events:
            self._add(event, LOCAL_RUN)
        return self

    def _add(self, event: Event, run_id: int) -> list[str]:
        self._changed()
        if isinstance(event, TokenBatch):
            for ev in event.events:
                live = self._by_id.get(ev.rollout_id)
                if live is None or live.final is not None:
                    continue
                live.tokens.append(ev.token)
                live.deltas.append(ev.text)
                live.logprob += ev.token.logprob
            if self.runs:
                self.runs[-1].tokens_done += len(event.events)
        elif isinstance(event, RolloutFinished):
            live = self._by_id.get(event.rollout.id)
            if live is None:  # a finished rollout we never saw start: accept it whole
                r = event.rollout
                live = self._start_rollout(event.group_id, r.id, r.index, r.seed, r.parent_id, r.branch_position,
                                           r.sampling, (), "")
            live.finish(event.rollout)
        elif isinstance(event, RunStarted):
            return self._start_run(event, run_id)
        elif isinstance(event, RunFinished):
            if self.runs:
                self.runs[-1].timings = event.timings
                self.runs[-1].cancelled = event.cancelled
        self._feed_trees(event)
        return []

    def _start_run(self, event: RunStarted, run_id: int) -> list[str]:
        if not event.is_branch and not any(not r.is_branch for r in self.runs):
            self.sampling = event.sampling
        own = None if event.sampling == self.sampling else event.sampling
        run = RunRecord(run_id, event.is_branch, event.sampling, event.total_tokens)
        self.runs.append(run)
        new = []
        for header in event.groups:
            if header.id not in self._headers:
                self._headers[header.id] = header
                self._rollouts[header.id] = []
                self._scores.setdefault(header.id, ())
                new.append(header.id)
                carried = self._carried.pop((header.query, header.chat, header.prompt), None)
                if carried is not None:
                    self._scores[header.id] = carried[1]
        for rh in event.rollouts:
            live = self._start_rollout(rh.group_id, rh.rollout_id, rh.index, rh.seed, rh.parent_id,
                                       rh.branch_position, own, rh.prefix, rh.prefix_text)
            live.value_position = rh.value_position
            run.rollout_ids.append(rh.rollout_id)
        self._feed_trees(event)
        # scores of queries this run did not sample stay as groups of their own
        carried, self._carried = self._carried, {}
        for header, scores in carried.values():
            new.append(self.add_scored_query(header.query, header.chat, header.prompt, header.prompt_token_ids,
                                             scores))
        return new

    def carry_scores(self, before: Optional["Session"]) -> int:
        """Keep the scores of the session shown before this one (typed and computed before a run): each goes to this
        session's group of the same query and prompt when the run starts, or to a scores-only group of its own. Only
        scores of the same model are kept (another model's numbers would be wrong); their reference facts only
        under the same reference policy. Returns how many groups' scores are carried."""
        if before is None or before is self or not before.same_model(self.model) or before.model is None:
            return 0
        for gid in before.group_ids:
            scores = before.scores(gid)
            if not scores:
                continue
            if before.reference_policy != self.reference_policy:
                scores = tuple(replace(s, tokens=_without_reference(s.tokens)) for s in scores)
            header = before.header(gid)
            self._carried[(header.query, header.chat, header.prompt)] = (header, scores)
        return len(self._carried)

    def _feed_trees(self, event: Event) -> None:
        try:
            feed_trees(self.trees, event)
        except ValueError as exc:  # a tree that cannot follow must not stop the rollouts from streaming
            print(f"rollout-explorer: token tree: {exc}", file=sys.stderr)

    def _start_rollout(self, group_id, rollout_id, index, seed, parent_id, branch_position, sampling, prefix,
                       prefix_text) -> LiveRollout:
        if group_id not in self._headers:
            raise KeyError(f"rollout {rollout_id} names unknown group {group_id}")
        live = LiveRollout(group_id, rollout_id, index, seed, parent_id, branch_position, sampling, prefix,
                           prefix_text)
        self._rollouts[group_id].append(live)
        self._by_id[rollout_id] = live
        return live

    def add_group(self, group: QueryGroup) -> None:
        """Take a finished group as it is (an opened file, a scoring-only group)."""
        self._changed()
        self._headers[group.id] = GroupHeader.of(group)
        self._rollouts[group.id] = []
        for r in group.rollouts:
            live = self._start_rollout(group.id, r.id, r.index, r.seed, r.parent_id, r.branch_position, r.sampling,
                                       (), "")
            live.finish(r)
        self._scores[group.id] = tuple(group.scores)
        if group.stats is not None:
            self._stats[group.id] = group.stats
        try:
            self.trees[group.id] = TokenTree.from_group(group)
        except ValueError as exc:
            print(f"rollout-explorer: token tree of {group.id}: {exc}", file=sys.stderr)

    def add_scored_query(self, query: str, chat: bool, prompt: str, prompt_ids: tuple, scores) -> str:
        """A group with scores and no rollouts (scoring needs no run); returns its id."""
        n = len(self._headers)
        while f"q{n}" in self._headers:
            n += 1
        gid = f"q{n}"
        self.add_group(QueryGroup(id=gid, query=query, chat=chat, prompt=prompt, prompt_token_ids=tuple(prompt_ids),
                                  scores=tuple(scores)))
        return gid

    # -- scores ----------------------------------------------------------------------------------------------------
    def scores(self, group_id: str) -> tuple[Score, ...]:
        return self._scores.get(group_id, ())

    def set_scores(self, group_id: str, scores: Iterable[Score]) -> None:
        self._changed()
        self._scores[group_id] = tuple(scores)

    def set_reference_answer(self, query: str, answer: Optional[str]) -> list[str]:
        """The reference answer of every group asking `query`, typed after the fact (after a run, for an opened set).
        With a reward chosen, those groups are rewarded again by reward_after_run(). Returns the groups changed."""
        changed = []
        for gid, header in self._headers.items():
            if header.query == query and header.reference_answer != answer:
                self._headers[gid] = replace(header, reference_answer=answer)
                if self._reward_fn is not None:
                    self._reward_done.pop(gid, None)
                changed.append(gid)
        if changed:
            self._changed()
        return changed

    # -- a reference policy ----------------------------------------------------------------------------------------
    @property
    def reference_policy(self) -> Optional[ReferenceInfo]:
        """The reference policy the tokens' facts are under (None: none); a run that follows it records it here
        before its first token."""
        return self._reference_policy

    def use_reference_policy(self, reference: Optional[ReferenceInfo]) -> bool:
        """From now on the tokens' reference facts are under `reference` (None: no reference policy). The facts of
        another one go first: one set never mixes two references. True when the reference changed."""
        if reference == self._reference_policy:
            return False
        self._changed()
        self._reference_policy = reference
        self._reference_serial += 1
        for live in self._by_id.values():
            if live.final is not None and any(t.has_reference for t in live.final.tokens):
                live.finish(replace(live.final, tokens=_without_reference(live.final.tokens)))
        for gid, scores in self._scores.items():
            self._scores[gid] = tuple(replace(s, tokens=_without_reference(s.tokens)) for s in scores)
        for gid in self._headers:
            self._refresh_reference(gid)
        return True

    def clear_reference_policy(self) -> None:
        """No reference policy any more: every token loses its reference facts."""
        self.use_reference_policy(None)

    def annotate(self, group: QueryGroup, reference: ReferenceInfo) -> list[str]:
        """Take a group evaluated under a reference policy (ReferencePolicy.annotate_group): the tokens of its
        rollouts and scores now carry ref_logprob / kl / ref_top, and the set says what pi_ref is. Only the tokens are
        taken (rewards given meanwhile stay), and only where the ids are still the ones evaluated (scores typed again
        meanwhile are left alone). A reference other than the session's replaces it (use_reference_policy). Returns
        the rollout ids annotated."""
        self.use_reference_policy(reference)
        self._changed()
        self._reference_serial += 1
        done = []
        for r in group.rollouts:
            live = self._by_id.get(r.id)
            if live is not None and live.final is not None and live.final.token_ids == r.token_ids:
                live.finish(replace(live.final, tokens=r.tokens))
                done.append(r.id)
        current = self._scores.get(group.id, ())
        if [s.token_ids for s in current] == [s.token_ids for s in group.scores]:
            self._scores[group.id] = tuple(replace(c, tokens=s.tokens) for c, s in zip(current, group.scores))
        self._refresh_reference(group.id)
        return done

    def unreferenced(self, group_id: str) -> Optional[QueryGroup]:
        """What of a group the reference has still to evaluate: its finished rollouts without reference facts, and its
        scores (all of them: they are few and short). None when there is nothing to evaluate."""
        group = self.group(group_id)
        # any token without facts: a branch's forced token, or a prefix copied from a rollout not evaluated yet
        rollouts = tuple(r for r in group.rollouts
                         if r.finish_reason is not None and any(not t.has_reference for t in r.tokens))
        scores = tuple(group.scores)
        if not rollouts and all(t.has_reference for s in scores for t in s.tokens):
            return None
        return replace(group, rollouts=rollouts)

    @property
    def tis_cap(self) -> float:
        """C of the truncated importance weights min(pi_ref / pi, C) in the mismatch statistics."""
        return self._tis_cap

    def set_tis_cap(self, cap: float) -> list[str]:
        """Another C: the groups' mismatch statistics are computed again; returns the groups whose changed."""
        if not (cap > 0 and math.isfinite(cap)):
            raise ExplorerError(f"the importance weight cap C must be a positive number (got {cap})")
        if cap == self._tis_cap:
            return []
        self._changed()
        self._tis_cap = float(cap)
        changed = [gid for gid in self._headers if gid in self._stats]
        for gid in changed:
            self._restate_reference(gid, [live.snapshot(None) for live in self._rollouts[gid]])
        return changed

    def set_mismatch(self) -> Optional[dict]:
        """The mismatch statistics (mismatch.NAME) over every finished rollout of the set, None without reference
        facts (kept until the facts, the cap or the rollouts change: the statistics panel asks often)."""
        if self._reference_policy is None:
            return None
        rollouts = [live.final for lives in self._rollouts.values() for live in lives if live.final is not None]
        key = (self._reference_serial, self._tis_cap, len(rollouts))
        if self._set_mismatch[0] != key:
            self._set_mismatch = (key, mismatch_stats(rollouts, self._tis_cap))
        return self._set_mismatch[1]

    def _refresh_reference(self, gid: str) -> None:
        """The group's reference facts changed: its statistics and its token tree take them."""
        rollouts = [live.snapshot(None) for live in self._rollouts.get(gid, ())]
        tree = self.trees.get(gid)
        if tree is not None:
            tree.take_reference(rollouts)
        self._restate_reference(gid, rollouts)

    def _restate_reference(self, gid: str, rollouts: list[Rollout]) -> None:
        """The group's statistics against the reference, from its finished rollouts, with the session's cap."""
        stats = self._stats.get(gid)
        if stats is None:
            return
        kept = tuple((k, v) for k, v in stats if k not in REFERENCE_STATS)
        reference = reference_stats([r for r in rollouts if r.finish_reason is not None], self._tis_cap)
        self._stats[gid] = kept + (tuple(reference.items()) if reference else ())

    # -- rewards ---------------------------------------------------------------------------------------------------
    @property
    def reward_fn(self) -> Optional[Callable]:
        return self._reward_fn

    def choose_reward(self, fn: Optional[Callable], divide_by_std: bool = True) -> None:
        """The reward for groups as they finish from now on (None: none); nothing is re-scored."""
        self._reward_fn, self._divide_by_std = fn, divide_by_std
        self._reward_serial += 1

    def set_reward(self, fn: Optional[Callable], divide_by_std: bool = True) -> list[str]:
        """Choose the reward (None: none) and re-score every group that can be: all its rollouts finished, or any
        finished ones when no run streams. Returns the groups rewarded."""
        self.choose_reward(fn, divide_by_std)
        gids = [gid for gid in self._headers if self.finished_count(gid)
                and (self.all_finished(gid) or not self.running)]
        for gid in gids:
            self.reward_group(gid)
        return gids

    def reward_after_run(self) -> list[str]:
        """A run ended (stopped or failed too): reward what it left that is not rewarded yet (finished rollouts)."""
        gids = [gid for gid in self._headers if self.needs_reward(gid)]
        for gid in gids:
            self.reward_group(gid)
        return gids

    def reward_opened(self) -> int:
        """An opened set is shown as saved (a set with rewards keeps them), except that a set without rewards gets
        the chosen reward, if any. Returns how many groups were rewarded."""
        self._reward_done = {}
        n = 0
        for gid in self._headers:
            if self._reward_fn is not None and not _has_rewards(self.group(gid)):
                self.reward_group(gid)
                n += 1
            else:
                self._reward_done[gid] = (self.finished_count(gid), _NOT_FROM_CHOICE)
        return n

    def needs_reward(self, gid: str) -> bool:
        n = self.finished_count(gid)
        done = self._reward_done.get(gid)
        if n == 0:
            return False
        if done is None or done[0] != n:
            return True  # new rollouts finished (a run, a branch joining the group)
        return done[1] != _NOT_FROM_CHOICE and done[1] != self._reward_serial

    def reward_group(self, gid: str) -> None:
        self._changed()
        group = scored_group(self.group(gid), self._reward_fn, self._divide_by_std, self.correct_at)
        for r in group.rollouts:
            live = self._by_id.get(r.id)
            if live is not None and live.final is not None:
                live.final = r
        self._stats[gid] = group.stats
        if self._tis_cap != DEFAULT_TIS_CAP and self._reference_policy is not None:
            self._restate_reference(gid, list(group.rollouts))  # the statistics were made with the default C
        self._reward_done[gid] = (self.finished_count(gid), self._reward_serial)

    def reward_errors(self, gids: Optional[Iterable[str]] = None) -> list[tuple[str, str]]:
        """(rollout id, why) of every rollout whose reward failed."""
        out = []
        for gid in self._headers if gids is None else gids:
            for live in self._rollouts.get(gid, ()):
                if live.final is not None and live.final.reward_error:
                    out.append((live.id, live.final.reward_error))
        return out

    # -- values ----------------------------------------------------------------------------------------------------
    def tree_values(self, group_id: str) -> Optional[TreeValues]:
        """V of every box of the group's tree from its rewards (None without a tree); kept until the tree, a reward
        or a rollout's end changes (the views ask on every redraw)."""
        tree = self.trees.get(group_id)
        if tree is None:
            return None
        rollouts = [live.snapshot(None) for live in self._rollouts.get(group_id, ())]
        key = (tree.version, tuple((r.reward, r.finish_reason) for r in rollouts))
        cached = self._tree_values.get(group_id)
        if cached is None or cached[0] != key or cached[1].tree is not tree:
            cached = self._tree_values[group_id] = (key, TreeValues(tree, rollouts))
        return cached[1]

    def value_estimates(self, group_id: str) -> tuple[ValueEstimate, ...]:
        """The group's Monte-Carlo estimates Q(prefix, token), from its value rollouts and their rewards."""
        return value_estimates(self.group(group_id))

    def token_credit(self, group_id: str, rollout_id: str) -> tuple[Optional[float], ...]:
        """Per token of a rollout, Q(prefix, token) - V(prefix) where the token was estimated, else None."""
        return token_credit(self.group(group_id), [rollout_id]).get(rollout_id, ())

    # -- branching -------------------------------------------------------------------------------------------------
    def can_branch(self, group_id: str, model: Optional[ModelInfo]) -> Optional[str]:
        """Why a branch of this group's rollouts cannot run with `model` now; None when it can."""
        if model is None:
            return "Load a model first."
        if group_id not in self._headers:
            return f"This session has no query {group_id}."
        if not self.same_model(model):
            return ("This rollout set was made with another model; load that model to branch from its "
                    "rollouts.")
        return None

    def same_model(self, model: Optional[ModelInfo]) -> bool:
        return self.model is None or model is None or self.model.fingerprint == model.fingerprint

    # -- reading ---------------------------------------------------------------------------------------------------
    @property
    def group_ids(self) -> list[str]:
        return list(self._headers)

    def header(self, group_id: str) -> GroupHeader:
        return self._headers[group_id]

    def live_rollouts(self, group_id: str) -> list[LiveRollout]:
        return self._rollouts.get(group_id, [])

    def finished_count(self, gid: str) -> int:
        return sum(1 for live in self._rollouts.get(gid, ()) if live.final is not None)

    def all_finished(self, gid: str) -> bool:
        lives = self._rollouts.get(gid, ())
        return bool(lives) and all(live.final is not None for live in lives)

    def rollout(self, rollout_id: str, unfinished_reason: Optional[str] = None) -> Rollout:
        return self._by_id[rollout_id].snapshot(unfinished_reason)

    def group(self, group_id: str, unfinished_reason: Optional[str] = None) -> QueryGroup:
        h = self._headers[group_id]
        return QueryGroup(
            id=h.id, query=h.query, chat=h.chat, prompt=h.prompt, prompt_token_ids=h.prompt_token_ids,
            rollouts=tuple(live.snapshot(unfinished_reason) for live in self._rollouts[group_id]),
            scores=self._scores.get(group_id, ()), reference_answer=h.reference_answer, stats=self._stats.get(group_id),
            columns=h.columns, messages=h.messages,
        )

    def groups(self, unfinished_reason: Optional[str] = None) -> tuple[QueryGroup, ...]:
        return tuple(self.group(gid, unfinished_reason) for gid in self._headers)

    def rollout_set(self, unfinished_reason: Optional[str] = "cancelled") -> RolloutSet:
        """A snapshot; rollouts still streaming are marked with unfinished_reason (a recovery file says cancelled)."""
        if self.model is None:
            raise RuntimeError("no model: a rollout set names the model that made it")
        return RolloutSet(model=self.model, sampling=self.sampling, groups=self.groups(unfinished_reason),
                          timings=self.timings, reference_policy=self.reference_policy)

    @classmethod
    def from_set(cls, rollout_set: RolloutSet, source: Optional[str] = None, in_a_file: bool = True) -> "Session":
        """A session showing a set; in_a_file=False (a run recovered from the journal): no file holds its rollouts
        yet, so they count as unexported until exported."""
        session = cls(rollout_set.model, rollout_set.sampling, source)
        session._opened_timings = rollout_set.timings
        session.use_reference_policy(rollout_set.reference_policy)  # before the groups: their facts are under it
        for g in rollout_set.groups:
            session.add_group(g)
        if in_a_file:
            session.mark_exported()
        return session
