"""Values from rewards: 95 % intervals of a mean reward, Monte-Carlo estimates Q(prefix, token) from value rollouts,
and the per-token credit they give a rollout.

A value rollout (Rollout.value_position) is one of M continuations sampled from a prefix + token of the group
(VinePPO, Kazemnejad et al. 2024: the value of a state is estimated by the mean reward of continuations sampled from
it). Its estimate is keyed by the ids of that prefix + token, so continuations sampled at different times pool into
one estimate, and the estimates are always derived from the rollouts and their rewards (a reward changed, a file
opened: they follow).

The intervals: Wilson's score interval where every reward of the group is 0 or 1 (a proportion), else Student's t
interval of the mean (mean +- t(0.975, n - 1) s / sqrt(n), s the unbiased standard deviation). Both vectorised over
arrays of (count, sum, sum of squares), so a tree's every box gets one in a few numpy passes.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Iterable, Optional, Sequence

import numpy as np

from explorer.core.rl.stats import in_baseline
from explorer.core.types import QueryGroup, Rollout, ValueEstimate

CONFIDENCE = 0.95
Z = NormalDist().inv_cdf(0.5 + CONFIDENCE / 2)  # 1.95996...
WILSON, STUDENT_T = "wilson", "t"


def binary_rewards(rewards: Iterable[Optional[float]]) -> bool:
    """Whether every reward given is 0 or 1 (the rewards of a pass/fail check: their mean is a proportion)."""
    return all(r in (0.0, 1.0) for r in rewards if r is not None)


def interval_kind(rollouts: Sequence[Rollout]) -> str:
    """Which interval a group's values get: WILSON for 0/1 rewards, else STUDENT_T."""
    return WILSON if binary_rewards(r.reward for r in rollouts) else STUDENT_T


def wilson(successes: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Wilson's score interval of the proportions successes / n (NaN where n is 0)."""
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.asarray(successes, dtype=np.float64) / n
        z2 = Z * Z
        centre = (p + z2 / (2 * n)) / (1 + z2 / n)
        half = Z * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return centre - half, centre + half


def t_quantile(df: np.ndarray) -> np.ndarray:
    """t(0.975, df) of Student's distribution (NaN where df < 1)."""
    from scipy.special import stdtrit  # the inverse of Student's t distribution function (imported only when asked)

    df = np.asarray(df, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.where(df >= 1, stdtrit(np.maximum(df, 1), 0.5 + CONFIDENCE / 2), np.nan)


def mean_intervals(n: np.ndarray, total: np.ndarray, total_sq: np.ndarray, kind: str,
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, low, high) of the rewards summarised per entry by their count, sum and sum of squares: NaN where there
    is no reward; for kind STUDENT_T the interval is NaN with a single reward."""
    n = np.asarray(n, dtype=np.float64)
    total = np.asarray(total, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / n
        if kind == WILSON:
            low, high = wilson(total, n)
        else:
            var = np.maximum(np.asarray(total_sq, dtype=np.float64) - n * mean * mean, 0.0) / (n - 1)
            half = t_quantile(n - 1) * np.sqrt(var / n)
            low, high = mean - half, mean + half
    mean = np.where(n > 0, mean, np.nan)
    return mean, np.where(n > 0, low, np.nan), np.where(n > 0, high, np.nan)


def interval_of(rewards: Sequence[float], kind: str) -> tuple[Optional[float], Optional[float], Optional[float]]:
    """(mean, low, high) of these rewards; None where undefined."""
    values = np.asarray(rewards, dtype=np.float64)
    mean, low, high = mean_intervals(np.array([len(values)]), np.array([values.sum()]),
                                     np.array([np.dot(values, values)]), kind)
    return tuple(None if math.isnan(x) else float(x) for x in (mean[0], low[0], high[0]))


def counted(rollout: Rollout) -> bool:
    """Whether a continuation's reward counts in its estimate: it finished (a cut-off one's reward is of a truncated
    response) and has a reward."""
    return rollout.reward is not None and rollout.finish_reason not in (None, "cancelled")


def value_estimates(group: QueryGroup) -> tuple[ValueEstimate, ...]:
    """The group's Monte-Carlo estimates, one per prefix + token its value rollouts continue, in the order their
    first continuation joined the group."""
    by_key: dict[tuple[int, ...], list[Rollout]] = {}
    for r in group.rollouts:
        key = r.value_key
        if key is not None and len(key) == r.value_position + 1:  # (a rollout shorter than its key is malformed)
            by_key.setdefault(key, []).append(r)
    if not by_key:
        return ()
    kind = interval_kind(group.rollouts)
    out = []
    for key, rollouts in by_key.items():
        rewards = [r.reward for r in rollouts if counted(r)]
        mean, low, high = interval_of(rewards, kind) if rewards else (None, None, None)
        out.append(ValueEstimate(
            prefix_token_ids=key[:-1], token_id=key[-1], n=len(rewards), mean_reward=mean, ci_low=low, ci_high=high,
            interval=kind if low is not None else None, rollout_ids=tuple(r.id for r in rollouts)))
    return tuple(out)


def state_value(group: QueryGroup, prefix: Sequence[int],
                estimates: Optional[dict[tuple[int, ...], ValueEstimate]] = None) -> Optional[float]:
    """V(prefix): the mean reward of every sample drawn from the state after these response tokens: the i.i.d.
    rollouts that start with them and, where the prefix's last token was estimated, the continuations of that
    estimate. None when none has a reward."""
    prefix = tuple(prefix)
    n = len(prefix)
    rewards = [r.reward for r in group.rollouts
               if in_baseline(r) and r.reward is not None and r.token_ids[:n] == prefix]
    if estimates is None:
        estimates = {e.key: e for e in value_estimates(group)}
    estimate = estimates.get(prefix) if prefix else None
    if estimate is not None and estimate.n:
        by_id = {r.id: r for r in group.rollouts}
        rewards += [by_id[i].reward for i in estimate.rollout_ids if counted(by_id[i])]
    return math.fsum(rewards) / len(rewards) if rewards else None


def token_credit(group: QueryGroup, rollout_ids: Optional[Iterable[str]] = None,
                 ) -> dict[str, tuple[Optional[float], ...]]:
    """Per rollout, the advantage of each of its tokens where it was estimated: Q(prefix, token) - V(prefix) (VinePPO's
    V(after) - V(before)), Q the estimate of prefix + token and V the value of the state before the token
    (state_value); None at the other tokens. Against GRPO, which gives every token the rollout's one advantage, this
    says which token decided the reward."""
    estimates = {e.key: e for e in value_estimates(group) if e.mean_reward is not None}
    by_position: dict[int, dict[tuple[int, ...], ValueEstimate]] = {}
    for key, e in estimates.items():
        by_position.setdefault(e.position, {})[key] = e
    wanted = None if rollout_ids is None else set(rollout_ids)
    before: dict[tuple[int, ...], Optional[float]] = {}  # V(prefix), asked once per prefix
    out = {}
    for r in group.rollouts:
        if wanted is not None and r.id not in wanted:
            continue
        ids = r.token_ids
        credit: list[Optional[float]] = [None] * len(ids)
        for position, keyed in by_position.items():
            if position >= len(ids):
                continue
            e = keyed.get(ids[: position + 1])
            if e is None:
                continue
            prefix = e.prefix_token_ids
            if prefix not in before:
                before[prefix] = state_value(group, prefix, estimates)
            if before[prefix] is not None:
                credit[position] = e.mean_reward - before[prefix]
        out[r.id] = tuple(credit)
    return out
