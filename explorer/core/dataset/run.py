"""A dataset run: N prompts x k rollouts, each group written to disk as it finishes, a summary of it kept.

The engine gets the prompts a few at a time (SEQUENCES_PER_CALL rollouts' worth, one prompt at least), so what is held
at once is one call's rollouts, however long the dataset. A group whose k rollouts
have all finished is rewarded (its rewards, advantages, statistics and outcome statistics, as a session gives them),
written (writer.SetWriter), and summarized (rl/overview.GroupSummary); only the summary stays.

Stop (the cancel event) ends the engine's call at its next decode step and the set is written: the groups that
finished, and those it cut short with what they had (their unfinished rollouts "cancelled"; a group that had not
started is left out). Resuming reads the set (or the partial file a crash left) a group at a time, keeps each whole
group (rewarded again with this run's reward, so one reward scores the whole set) and samples the prompts it lacks
or holds cut short. Groups are named after their prompt's place in
the dataset (q0, q1, ...), and rollout i of every prompt is drawn with seed + i, so the groups a resumed run adds are
the ones the first run would have drawn.

Qt-free: the command line runs it on its own thread; the window can run it on its engine worker and read summaries.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

from explorer.core.engine.protocol import EngineLike
from explorer.core.errors import ExplorerError
from explorer.core.dataset.writer import SetWriter, partial_path, read_groups
from explorer.core.rl.outcomes import CORRECT_AT, scored_group
from explorer.core.rl.overview import GroupSummary, summarize
from explorer.core.rl.stats import DEFAULT_TIS_CAP
from explorer.core.types import (
    GroupHeader, Query, QueryGroup, ReferenceInfo, Rollout, RolloutFinished, RolloutSet, RunFinished, RunStarted,
    SamplingParams, Timings, TokenBatch,
)

# Rollouts per engine call: a few prompts' worth. More sequences in one call share one unified KV cache, and every
# token then attends over all of their cells: on a 2-core CPU k = 8 ran at ~48 tokens/s with 2 prompts a call, ~29
# with 4 and ~18 with 8 (the default model, 32 tokens each, a loaded machine; 1 prompt: ~24)
SEQUENCES_PER_CALL = 16


class ResumeError(ExplorerError):
    """A set that cannot be resumed with this run's dataset, model or settings."""


def numbered(queries: Sequence[Query]) -> list[Query]:
    """The queries with their group ids: q0, q1, ... by their place in the dataset (an id already set stays)."""
    return [q if q.group_id else replace(q, group_id=f"q{i}") for i, q in enumerate(queries)]


def prompts_per_call(k: int) -> int:
    return max(1, SEQUENCES_PER_CALL // max(1, k))


def calls(queries: Sequence[Query], k: int) -> Iterator[list[Query]]:
    """The queries in the slices a run gives the engine one call at a time."""
    n = prompts_per_call(k)
    for start in range(0, len(queries), n):
        yield list(queries[start:start + n])


@dataclass
class Progress:
    """Where a run stands, after every decode step."""

    total: int  # prompts in the dataset
    resumed: int  # groups taken from the set resumed
    done: int  # groups sampled and written by this run
    tokens: int  # tokens this run generated
    elapsed_s: float

    @property
    def eta_s(self) -> Optional[float]:
        """Seconds to go, at this run's pace so far; None before the first group."""
        left = self.total - self.resumed - self.done
        if self.done == 0:
            return None if left else 0.0
        return self.elapsed_s / self.done * left


@dataclass
class RunResult:
    resumed: int = 0
    done: int = 0
    cut: int = 0  # groups a stop cut short (written with their cancelled rollouts; a resumed run samples them again)
    cancelled: bool = False
    tokens: int = 0
    timings: Timings = field(default_factory=Timings)


@dataclass
class _Pending:
    header: GroupHeader
    expected: int
    rollouts: list = field(default_factory=list)


class DatasetRun:
    """k rollouts for each query, written to `output` (a path, or '-' for stdout) as the groups finish.

    reward: a reward function (rl/rewards), or None; correct_at: the reward that counts as correct; resume: a set (or
    partial file) whose groups are kept and whose prompts are not sampled again; follower: a factory of the reference
    policy that follows each call (LockstepReference), or None; finish_group: what a finished group goes through
    before it is rewarded (the command line evaluates a reference policy there); on_group: called with each group's
    summary as it is written (the reward errors, a window's table).
    """

    def __init__(self, engine: EngineLike, queries: Sequence[Query], k: int, params: SamplingParams, output: str,
                 chat: bool = True, system: Optional[str] = None, reward: Optional[Callable] = None,
                 divide_by_std: bool = True, correct_at: float = CORRECT_AT, resume: Optional[str] = None,
                 reference_policy: Optional[ReferenceInfo] = None, follower: Optional[Callable] = None,
                 finish_group: Optional[Callable[[QueryGroup], QueryGroup]] = None,
                 on_group: Optional[Callable[[QueryGroup, GroupSummary], None]] = None,
                 tis_cap: float = DEFAULT_TIS_CAP):
        if not queries:
            raise ExplorerError("no queries to run")
        self.engine = engine
        self.queries = numbered(queries)
        self.k = k
        self.params = params
        self.output = output
        self.chat = chat
        self.system = system
        self.reward = reward
        self.divide_by_std = divide_by_std
        self.correct_at = correct_at
        self.resume = resume
        self.reference_policy = reference_policy
        self.follower = follower
        self.finish_group = finish_group
        self.on_group = on_group
        self.tis_cap = tis_cap  # C of the truncated importance weights in the mismatch statistics
        self.summaries: list[GroupSummary] = []  # one per group written, in the order written
        self.result = RunResult()

    # -- the run ---------------------------------------------------------------------------------------------------
    def run(self, cancel: Optional[threading.Event] = None,
            progress: Optional[Callable[[Progress], None]] = None) -> RunResult:
        """Run to the end or to a stop; the set is written either way (and when a call fails, with what finished
        before it: the error is raised after). Returns what was done."""
        cancel = cancel or threading.Event()
        header = RolloutSet(model=self.engine.info, sampling=self.params, groups=(),
                            reference_policy=self.reference_policy)
        resume_from = self._resume_source()
        writer = SetWriter(self.output, header)
        start = time.perf_counter()
        timing = {"load_s": 0.0, "prompt_s": 0.0, "generation_s": 0.0}
        failure: Optional[BaseException] = None
        try:
            done_ids = self._take_resumed(resume_from, writer) if resume_from is not None else set()
            todo = [q for q in self.queries if q.group_id not in done_ids]

            def report():
                if progress is not None:
                    progress(Progress(len(self.queries), self.result.resumed, self.result.done,
                                      self.result.tokens, time.perf_counter() - start))

            report()
            for batch in calls(todo, self.k):
                if cancel.is_set():
                    self.result.cancelled = True
                    break
                self._call(batch, cancel, writer, timing, report)
        except BaseException as exc:
            failure = exc
        if failure is not None and not isinstance(failure, ExplorerError) and writer.groups_written:
            writer.keep()  # a bug or a second Ctrl-C: the finished groups stay in the partial file, to resume from
            raise failure
        if failure is not None and (isinstance(failure, ResumeError) or writer.groups_written == 0):
            writer.abandon()  # a set that cannot be resumed, or nothing made: the output stays as it was
            if resume_from is not None and resume_from != self.resume:
                os.replace(resume_from, self.resume)  # the crash's partial file, back where it was
            raise failure
        gen_s = timing["generation_s"]
        self.result.timings = Timings(load_s=timing["load_s"], prompt_s=timing["prompt_s"], generation_s=gen_s,
                                      tokens_per_s=self.result.tokens / gen_s if gen_s > 0 else 0.0)
        writer.finish(self.result.timings)
        if resume_from is not None and resume_from != self.resume:
            Path(resume_from).unlink(missing_ok=True)  # the crash's partial file, moved aside; its groups are in
        if failure is not None:
            raise failure
        return self.result

    def _call(self, batch: list[Query], cancel: threading.Event, writer: SetWriter, timing: dict, report) -> None:
        follower = self.follower() if self.follower is not None else None
        extra = {"follower": follower} if follower is not None else {}
        pending: dict[str, _Pending] = {}
        try:
            for event in self.engine.generate(batch, self.k, self.params, cancel=cancel, chat=self.chat,
                                              system=self.system, **extra):
                if isinstance(event, TokenBatch):
                    self.result.tokens += len(event.events)
                    report()
                elif isinstance(event, RolloutFinished):
                    p = pending.get(event.group_id)
                    if p is None:
                        continue
                    p.rollouts.append(event.rollout)
                    if len(p.rollouts) == p.expected:
                        del pending[event.group_id]
                        self._finished(p, writer)
                        report()
                elif isinstance(event, RunStarted):
                    counts: dict[str, int] = {}
                    for h in event.rollouts:
                        counts[h.group_id] = counts.get(h.group_id, 0) + 1
                    pending = {g.id: _Pending(g, counts.get(g.id, 0)) for g in event.groups}
                elif isinstance(event, RunFinished):
                    timing["load_s"] = event.timings.load_s
                    timing["prompt_s"] += event.timings.prompt_s
                    timing["generation_s"] += event.timings.generation_s
                    if event.cancelled:
                        self.result.cancelled = True
        finally:
            if follower is not None:
                follower.close()
        for p in pending.values():  # a call that ended without finishing them (the engine ends every rollout)
            if p.rollouts:
                self._finished(p, writer)

    def _finished(self, p: _Pending, writer: SetWriter) -> None:
        rollouts = tuple(sorted(p.rollouts, key=lambda r: r.index))
        cut = is_cut(rollouts)
        if cut and not any(r.tokens for r in rollouts):
            return  # a stop came before it started: nothing to keep
        h = p.header
        group = QueryGroup(id=h.id, query=h.query, chat=h.chat, prompt=h.prompt, prompt_token_ids=h.prompt_token_ids,
                           rollouts=rollouts, reference_answer=h.reference_answer, columns=h.columns,
                           messages=h.messages)
        self._write(group, writer)
        if cut:
            self.result.cut += 1
        else:
            self.result.done += 1

    def _write(self, group: QueryGroup, writer: SetWriter) -> None:
        if self.finish_group is not None:
            group = self.finish_group(group)
        group = scored_group(group, self.reward, self.divide_by_std, self.correct_at, self.tis_cap)
        writer.add(group)
        summary = summarize(group, self.correct_at)
        self.summaries.append(summary)
        if self.on_group is not None:
            self.on_group(group, summary)

    # -- resuming --------------------------------------------------------------------------------------------------
    def _resume_source(self) -> Optional[str]:
        """The file to resume from; a crash's partial file that this run's writer is about to take over is moved
        aside first."""
        if self.resume is None:
            return None
        if not os.path.isfile(self.resume):
            raise ResumeError(f"--resume {self.resume}: no such file")
        own = partial_path(self.output)
        if own is not None and own.exists() and os.path.samefile(self.resume, own):
            aside = f"{own}.resumed"
            os.replace(own, aside)
            return aside
        return self.resume

    def _take_resumed(self, path: str, writer: SetWriter) -> set[str]:
        by_id = {q.group_id: (i, q) for i, q in enumerate(self.queries)}
        done: set[str] = set()
        walk = read_groups(path)
        while True:
            try:
                group = next(walk)
            except StopIteration as end:
                self._check_same_run(end.value, path)
                return done
            if is_cut(group.rollouts):
                continue  # a stop cut it short: sampled again
            self._check_group(group, by_id, path)
            done.add(group.id)
            self._write(group, writer)
            self.result.resumed += 1

    def _check_group(self, group: QueryGroup, by_id: dict, path: str) -> None:
        found = by_id.get(group.id)
        if found is None:
            raise ResumeError(f"--resume {path}: its group {group.id} is not a prompt of this dataset "
                              f"({len(self.queries)} prompts); resume with the dataset that made the set")
        i, q = found
        if q.text != group.query:
            raise ResumeError(f"--resume {path}: its group {group.id} asks {_short(group.query)!r}, but prompt {i + 1} "
                              f"of this dataset is {_short(q.text)!r}; resume with the dataset that made the set")
        n = sum(1 for r in group.rollouts if r.parent_id is None)
        if n != self.k:
            raise ResumeError(f"--resume {path}: its group {group.id} has {n} rollouts; this run asks -k {self.k}")

    def _check_same_run(self, header: RolloutSet, path: str) -> None:
        if header.model.fingerprint != self.engine.info.fingerprint:
            raise ResumeError(f"--resume {path}: the set was made with another model ({header.model.name}); load "
                              "that model to resume it")
        if header.sampling != self.params:
            ours = self.params.__dict__
            diff = [f"{name} {value!r} (this run: {ours[name]!r})" for name, value in header.sampling.__dict__.items()
                    if ours.get(name) != value]
            raise ResumeError(f"--resume {path}: the set was sampled with other settings: {'; '.join(diff)}; give "
                              "the same options to resume it")


def is_cut(rollouts: Sequence[Rollout]) -> bool:
    """Whether a group was cut short by a stop: one of its own rollouts (not a branch) was cancelled."""
    return any(r.finish_reason == "cancelled" and r.parent_id is None for r in rollouts)


def _short(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
