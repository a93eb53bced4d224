"""Per-group diversity statistics over the rollouts of one query (what QueryGroup.stats holds).

Computed from the rollouts' token ids and raw log-probabilities directly, with a prefix trie of their own, so the
exporter and the CLI need no tree module. Every value is a float, or None when it is undefined for the group.
"""

from __future__ import annotations

import math
from itertools import combinations
from typing import Optional, Sequence

import numpy as np

from explorer.core.numbers import common_prefix, mean_std
from explorer.core.types import QueryGroup, Rollout

Stats = tuple[tuple[str, Optional[float]], ...]

STAT_DESCRIPTIONS = {
    "n_rollouts": "number of rollouts in the group",
    "distinct_responses": "number of distinct response texts",
    "distinct_1": "distinct token ids / all tokens, over all rollouts",
    "distinct_2": "distinct token-id bigrams (within a rollout) / all bigrams",
    "mean_first_divergence": "mean over rollout pairs of the length of their common token prefix",
    "branch_mass_coverage": "mean over branch points of the raw probability mass of the next tokens the rollouts took",
    "mean_reward": "mean of the non-null rewards of the i.i.d. rollouts (branched and cancelled ones left out)",
    "reward_std": "population standard deviation of those rewards",
    "mean_kl": "mean over all tokens of KL(pi || pi_ref) at that position (nats; llama.cpp's 'Mean KLD')",
    "kl_p99": "99th percentile of the per-position KL(pi || pi_ref)",
    "same_top_share": "share of positions where pi and pi_ref have the same most probable token",
    "top_disagreement_share": "share of positions where pi and pi_ref prefer different tokens",
}


def distinct_n(rollouts: Sequence[Rollout], n: int) -> Optional[float]:
    """Distinct n-grams of token ids / all n-grams, n-grams taken within each rollout; None when there are none."""
    seen = set()
    total = 0
    for r in rollouts:
        ids = r.token_ids
        grams = [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else None


def mean_first_divergence(rollouts: Sequence[Rollout]) -> Optional[float]:
    """Mean over all pairs of rollouts of their common token-id prefix length; None with fewer than two rollouts."""
    ids = [r.token_ids for r in rollouts]
    pairs = [common_prefix(a, b) for a, b in combinations(ids, 2)]
    return sum(pairs) / len(pairs) if pairs else None


def branch_mass_coverage(rollouts: Sequence[Rollout]) -> Optional[float]:
    """Mean, over branch points, of the summed raw probability of the distinct next tokens the rollouts took there.

    A branch point is a shared prefix after which at least two rollouts take different tokens. At a branch point
    every rollout saw the same distribution, so a token's probability there is exp(its raw logprob) in any rollout
    that took it. 1.0 would mean the rollouts between them took every token the model could have produced.
    None when no two rollouts ever diverge.
    """
    root: dict = {}
    for r in rollouts:
        node = root
        for t in r.tokens:
            entry = node.get(t.id)
            if entry is None:
                entry = node[t.id] = (t.logprob, {})
            node = entry[1]
    coverages = []
    stack = [root]
    while stack:
        node = stack.pop()
        if len(node) >= 2:
            coverages.append(math.fsum(
                math.exp(lp) for lp, _ in node.values() if lp is not None and math.isfinite(lp)))
        stack.extend(child for _, child in node.values())
    return sum(coverages) / len(coverages) if coverages else None


def in_baseline(rollout: Rollout) -> bool:
    """Whether a rollout is one of its group's i.i.d. samples of pi(.|x), the ones GRPO's baseline (reward mean and
    std, advantages) is over: drawn from the prompt (a branch continues another rollout: another distribution) and
    not cut off by a stop."""
    return rollout.parent_id is None and rollout.finish_reason not in (None, "cancelled")


def reward_stats(rollouts: Sequence[Rollout]) -> Optional[tuple[float, float]]:
    """(mean, population std) of the non-null rewards of the i.i.d. rollouts (in_baseline), or None when none has
    one."""
    rewards = [r.reward for r in rollouts if r.reward is not None and in_baseline(r)]
    if not rewards:
        return None
    return mean_std(rewards)


def group_stats(group: QueryGroup) -> Stats:
    """The group's statistics as (name, value) pairs in STAT_DESCRIPTIONS order; reward ones only when rewarded."""
    rollouts = group.rollouts
    stats: list[tuple[str, Optional[float]]] = [
        ("n_rollouts", float(len(rollouts))),
        ("distinct_responses", float(len({r.text for r in rollouts}))),
        ("distinct_1", distinct_n(rollouts, 1)),
        ("distinct_2", distinct_n(rollouts, 2)),
        ("mean_first_divergence", mean_first_divergence(rollouts)),
        ("branch_mass_coverage", branch_mass_coverage(rollouts)),
    ]
    rewards = reward_stats(rollouts)
    if rewards is not None:
        stats += [("mean_reward", rewards[0]), ("reward_std", rewards[1])]
    reference = reference_stats(rollouts)
    if reference is not None:
        stats += list(reference.items())
    return tuple(stats)


REFERENCE_STATS = ("mean_kl", "kl_p99", "same_top_share", "top_disagreement_share")


def reference_stats(rollouts: Sequence[Rollout]) -> Optional[dict[str, Optional[float]]]:
    """KL and top-token agreement with the reference policy over every token of the rollouts (llama.cpp's KLD
    statistics); None when the tokens carry no reference facts."""
    tokens = [t for r in rollouts for t in r.tokens if t.kl is not None]
    if not tokens:
        return None
    kl = np.array([t.kl for t in tokens], dtype=np.float64)
    with np.errstate(invalid="ignore"):
        mean = float(kl.mean())
    compared = [t for t in tokens if t.top and t.ref_top_id is not None]
    same = sum(t.top[0].id == t.ref_top_id for t in compared) / len(compared) if compared else None
    # an infinite KL (a sampler reference that excludes tokens) would turn interpolation into inf - inf
    p99 = float(np.percentile(kl, 99, method="linear" if np.isfinite(kl).all() else "higher"))
    return {"mean_kl": mean, "kl_p99": p99, "same_top_share": same,
            "top_disagreement_share": None if same is None else 1.0 - same}
