"""The overview of a dataset run: one small summary per prompt (a group of k rollouts), and the dataset's own numbers
over them (the share of groups that carry a signal, the pass@k curve, reward and length histograms, the group-size
planner). A summary keeps numbers only, a few per rollout, so a run of thousands of prompts can keep all of them while
its groups live on disk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

import numpy as np

from explorer.core.rl.outcomes import CORRECT_AT, PLANNER_SIZES, pass_at_k, pass_ks, planner_curve, zero_variance
from explorer.core.rl.stats import in_baseline
from explorer.core.types import QueryGroup

HISTOGRAM_BINS = 10


@dataclass(frozen=True)
class GroupSummary:
    """One prompt's row of the overview, over its i.i.d. rollouts (stats.in_baseline). Rewards count only where a
    rollout has one; "correct" is reward >= correct_at."""

    group_id: str
    query: str
    n_rollouts: int  # the i.i.d. rollouts
    correct_at: float
    rewards: tuple[float, ...]  # of those that have a reward
    lengths: tuple[int, ...]  # tokens of each i.i.d. rollout
    truncated: int  # of them, how many ended at max tokens (finish "length")
    mean_entropy: Optional[float]  # over every token of the i.i.d. rollouts (nats)
    distinct_responses: int
    mean_kl: Optional[float] = None  # the rollouts' mean KL(pi || pi_ref), when they carry reference-policy facts

    @property
    def n_rewarded(self) -> int:
        return len(self.rewards)

    @property
    def n_correct(self) -> int:
        return sum(r >= self.correct_at for r in self.rewards)

    @property
    def mean_reward(self) -> Optional[float]:
        return math.fsum(self.rewards) / len(self.rewards) if self.rewards else None

    @property
    def reward_std(self) -> Optional[float]:
        """The unbiased (N - 1) standard deviation, as torch's std() and the trainers' reward_std; None below two."""
        if len(self.rewards) < 2:
            return None
        mean = self.mean_reward
        return math.sqrt(math.fsum((r - mean) ** 2 for r in self.rewards) / (len(self.rewards) - 1))

    @property
    def pass_at_k(self) -> tuple[tuple[int, float], ...]:
        n = self.n_rewarded
        return tuple((k, pass_at_k(n, self.n_correct, k)) for k in pass_ks(n))

    @property
    def zero_variance(self) -> Optional[bool]:
        return zero_variance(self.rewards)

    @property
    def outcome(self) -> Optional[str]:
        """"all correct", "all wrong" (equal rewards are all at or above correct_at, or all below it) or "mixed";
        None without rewards."""
        if not self.rewards:
            return None
        if not self.zero_variance:
            return "mixed"
        return "all correct" if self.n_correct == len(self.rewards) else "all wrong"

    @property
    def mean_length(self) -> Optional[float]:
        return sum(self.lengths) / len(self.lengths) if self.lengths else None

    @property
    def truncation_rate(self) -> Optional[float]:
        return self.truncated / self.n_rollouts if self.n_rollouts else None

    def row(self) -> dict:
        """The summary as the stats command's JSON gives it (pass_at_k keyed by k as a string, as in the files)."""
        return {
            "group_id": self.group_id, "query": self.query, "n_rollouts": self.n_rollouts,
            "n_rewarded": self.n_rewarded, "n_correct": self.n_correct, "mean_reward": self.mean_reward,
            "reward_std": self.reward_std, "pass_at_k": {str(k): v for k, v in self.pass_at_k},
            "zero_variance": self.zero_variance, "outcome": self.outcome, "mean_length": self.mean_length,
            "truncation_rate": self.truncation_rate, "mean_entropy": self.mean_entropy,
            "distinct_responses": self.distinct_responses, "mean_kl": self.mean_kl,
        }


def summarize(group: QueryGroup, correct_at: float = CORRECT_AT) -> GroupSummary:
    rollouts = [r for r in group.rollouts if in_baseline(r)]
    entropies = [t.entropy for r in rollouts for t in r.tokens if t.entropy is not None and math.isfinite(t.entropy)]
    kls = [r.mean_kl for r in rollouts if r.mean_kl is not None]
    return GroupSummary(
        group_id=group.id, query=group.query, n_rollouts=len(rollouts), correct_at=correct_at,
        rewards=tuple(r.reward for r in rollouts if r.reward is not None),
        lengths=tuple(len(r.tokens) for r in rollouts),
        truncated=sum(r.finish_reason == "length" for r in rollouts),
        mean_entropy=math.fsum(entropies) / len(entropies) if entropies else None,
        distinct_responses=len({r.text for r in rollouts}),
        mean_kl=math.fsum(kls) / len(kls) if kls and len(kls) == len(rollouts) else None,
    )


def _histogram(values: Sequence[float], low: Optional[float] = None) -> dict:
    """{"edges": bin edges, "counts": per bin} over HISTOGRAM_BINS equal bins (one bin when every value is the
    same); empty lists without values."""
    if not values:
        return {"edges": [], "counts": []}
    data = np.asarray(values, dtype=np.float64)
    lo = float(data.min()) if low is None else min(low, float(data.min()))
    hi = float(data.max())
    counts, edges = np.histogram(data, bins=HISTOGRAM_BINS if hi > lo else 1, range=(lo, hi) if hi > lo else None)
    return {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}


@dataclass(frozen=True)
class DatasetSummary:
    """The numbers above the per-prompt rows."""

    n_groups: int
    n_rewarded_groups: int
    with_signal: int  # rewarded groups whose rewards differ
    all_correct: int
    all_wrong: int
    pass_at_k: tuple[tuple[int, float, int], ...]  # (k, mean pass@k over the groups that have k, how many groups)
    reward_histogram: dict = field(default_factory=dict)
    length_histogram: dict = field(default_factory=dict)
    planner: tuple[tuple[int, float], ...] = ()  # (G, expected share of groups of G that carry a signal)
    correct_at: float = CORRECT_AT

    @property
    def signal_share(self) -> Optional[float]:
        """The share of rewarded groups that carry a signal (1 - TRL's frac_reward_zero_std)."""
        return self.with_signal / self.n_rewarded_groups if self.n_rewarded_groups else None

    def as_dict(self) -> dict:
        return {
            "n_groups": self.n_groups, "n_rewarded_groups": self.n_rewarded_groups, "correct_at": self.correct_at,
            "with_signal": self.with_signal, "signal_share": self.signal_share,
            "zero_variance": {"all_correct": self.all_correct, "all_wrong": self.all_wrong},
            "pass_at_k": {str(k): {"mean": v, "groups": n} for k, v, n in self.pass_at_k},
            "reward_histogram": self.reward_histogram, "length_histogram": self.length_histogram,
            "planner": [{"group_size": g, "share_with_signal": s} for g, s in self.planner],
        }


def summarize_dataset(summaries: Sequence[GroupSummary], correct_at: float = CORRECT_AT,
                      planner_sizes: Sequence[int] = PLANNER_SIZES) -> DatasetSummary:
    rewarded = [s for s in summaries if s.rewards]
    outcomes = [s.outcome for s in rewarded]
    by_k: dict[int, list[float]] = {}
    for s in rewarded:
        for k, v in s.pass_at_k:
            by_k.setdefault(k, []).append(v)
    counts = [(s.n_rewarded, s.n_correct) for s in rewarded]
    return DatasetSummary(
        n_groups=len(summaries), n_rewarded_groups=len(rewarded), with_signal=outcomes.count("mixed"),
        all_correct=outcomes.count("all correct"), all_wrong=outcomes.count("all wrong"),
        pass_at_k=tuple((k, math.fsum(v) / len(v), len(v)) for k, v in sorted(by_k.items())),
        reward_histogram=_histogram([r for s in rewarded for r in s.rewards]),
        length_histogram=_histogram([n for s in summaries for n in s.lengths], low=0.0),
        planner=tuple(planner_curve(counts, planner_sizes)), correct_at=correct_at,
    )


SORT_KEYS = ("id", "query", "mean_reward", "reward_std", "pass_at_1", "pass_at_k", "mean_length",
             "truncation_rate", "mean_entropy", "distinct_responses", "mean_kl")


def _sort_value(s: GroupSummary, key: str):
    if key == "id":
        head = s.group_id.rstrip("0123456789")
        tail = s.group_id[len(head):]
        return (head, int(tail) if tail else -1)
    if key == "query":
        return s.query
    if key == "pass_at_1":
        return dict(s.pass_at_k).get(1)
    if key == "pass_at_k":  # the largest k the group has: pass@n, "solved at least once"
        return s.pass_at_k[-1][1] if s.pass_at_k else None
    return getattr(s, key)


def select(summaries: Iterable[GroupSummary], sort: str = "id", descending: bool = False,
           zero_variance_only: bool = False, signal_only: bool = False, reward_below: Optional[float] = None,
           reward_above: Optional[float] = None) -> list[GroupSummary]:
    """The rows to show: filtered (zero-variance groups only, groups with a signal only, mean reward below / above a
    value), then sorted by one of SORT_KEYS; a row without that value goes last either way."""
    if sort not in SORT_KEYS:
        raise ValueError(f"unknown sort key {sort!r}")
    rows = []
    for s in summaries:
        if zero_variance_only and s.zero_variance is not True:
            continue
        if signal_only and s.zero_variance is not False:
            continue
        if reward_below is not None and not (s.mean_reward is not None and s.mean_reward < reward_below):
            continue
        if reward_above is not None and not (s.mean_reward is not None and s.mean_reward > reward_above):
            continue
        rows.append(s)
    known = [s for s in rows if _sort_value(s, sort) is not None]
    missing = [s for s in rows if _sort_value(s, sort) is None]
    known.sort(key=lambda s: _sort_value(s, sort), reverse=descending)
    return known + missing
