"""What a group's rewards say about its prompt: how often it is solved (pass@k), whether it carries a learning signal
(zero variance), and how large a group would need to be to carry one (the group-size planner).

"Correct" is a reward >= correct_at (CORRECT_AT, 1.0, by default: a 0/1 reward's 1, a graded reward's full marks).
Only a group's i.i.d. rollouts count (stats.in_baseline: not branched, not cancelled), and of those the ones that
have a reward.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Callable, Optional, Sequence

from explorer.core.rl.rewards import apply_rewards
from explorer.core.rl.stats import DEFAULT_TIS_CAP, group_stats, in_baseline
from explorer.core.types import QueryGroup, Rollout

CORRECT_AT = 1.0
PLANNER_SIZES = tuple(range(2, 65))  # G = 2 ... 64


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimate of pass@k from n samples with c correct (Chen et al., 2021): 1 - C(n - c, k) / C(n, k),
    in the product form 1 - prod_{i = n - c + 1}^{n} (1 - k / i), which never forms the large binomials."""
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (got n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0  # every k-subset holds a correct sample
    product = 1.0
    for i in range(n - c + 1, n + 1):
        product *= 1.0 - k / i
    return 1.0 - product


def pass_ks(n: int) -> tuple[int, ...]:
    """The k a group of n reports: 1, 2, 4, ... up to n, and n itself."""
    ks = []
    k = 1
    while k <= n:
        ks.append(k)
        k *= 2
    if n >= 1 and ks[-1] != n:
        ks.append(n)
    return tuple(ks)


def rewarded(rollouts: Sequence[Rollout]) -> list[float]:
    """The rewards of the i.i.d. rollouts that have one."""
    return [r.reward for r in rollouts if r.reward is not None and in_baseline(r)]


def zero_variance(rewards: Sequence[float]) -> Optional[bool]:
    """Whether every reward is the same (all correct, all wrong, or one graded value): GRPO gives such a group zero
    advantage everywhere, so it carries no learning signal. None without rewards."""
    if not rewards:
        return None
    return all(r == rewards[0] for r in rewards)


def outcome_stats(rollouts: Sequence[Rollout], correct_at: float = CORRECT_AT) -> tuple:
    """A rewarded group's outcome statistics as (name, value) pairs: pass_at_k.K for each K of pass_ks(n),
    zero_variance (1.0 / 0.0), and correct_at, the threshold they used. Empty without rewards."""
    rewards = rewarded(rollouts)
    if not rewards:
        return ()
    n = len(rewards)
    c = sum(r >= correct_at for r in rewards)
    return (tuple((f"pass_at_k.{k}", pass_at_k(n, c, k)) for k in pass_ks(n))
            + (("zero_variance", float(zero_variance(rewards))), ("correct_at", float(correct_at))))


def scored_group(group: QueryGroup, fn: Optional[Callable], divide_by_std: bool = True,
                 correct_at: float = CORRECT_AT, tis_cap: float = DEFAULT_TIS_CAP) -> QueryGroup:
    """The group rewarded by fn (rewards, advantages and statistics, the outcome ones included), or, with no reward,
    without rewards and with its diversity statistics: what a finished group is given, in a session or a dataset
    run (tis_cap: C of the mismatch statistics' importance weights)."""
    if fn is None:
        if any(r.reward is not None or r.advantage is not None or r.reward_error is not None for r in group.rollouts):
            group = replace(group, rollouts=tuple(replace(r, reward=None, advantage=None, reward_error=None)
                                                  for r in group.rollouts))
        return replace(group, stats=group_stats(replace(group, stats=None), tis_cap))
    group = apply_rewards(group, fn, divide_by_std)
    stats = group.stats if tis_cap == DEFAULT_TIS_CAP else group_stats(group, tis_cap)
    return replace(group, stats=tuple(stats or ()) + outcome_stats(group.rollouts, correct_at))


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def expected_no_signal(n: int, c: int, size: int) -> float:
    """E[p^G + (1 - p)^G] for p ~ Beta(c + 1, n - c + 1), the posterior of a prompt's success rate after c correct of
    n under a uniform prior: the chance that a group of G = size fresh rollouts is all correct or all wrong.
    E[p^G] = B(a + G, b) / B(a, b), and likewise for 1 - p."""
    a, b = c + 1.0, n - c + 1.0
    base = _log_beta(a, b)
    return math.exp(_log_beta(a + size, b) - base) + math.exp(_log_beta(a, b + size) - base)


def planner_curve(counts: Sequence[tuple[int, int]],
                  sizes: Sequence[int] = PLANNER_SIZES) -> list[tuple[int, float]]:
    """(G, the expected share of prompts whose group of G would carry a signal) for each G, from each prompt's
    (n, c). Empty without prompts."""
    if not counts:
        return []
    return [(g, 1.0 - math.fsum(expected_no_signal(n, c, g) for n, c in counts) / len(counts)) for g in sizes]
