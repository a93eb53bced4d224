"""Diversity statistics on small hand-built groups whose values can be worked out by hand."""

from __future__ import annotations

import math

import pytest

from explorer.core.rl.stats import (
    STAT_DESCRIPTIONS, branch_mass_coverage, distinct_n, group_stats, mean_first_divergence,
)
from explorer.core.types import QueryGroup, Rollout, TokenInfo


def rollout(name: str, ids_and_probs, text: str | None = None, reward: float | None = None) -> Rollout:
    tokens = tuple(TokenInfo(id=i, token=f"t{i}", bytes=b"", logprob=math.log(p), sampling_logprob=None,
                             entropy=0.0, rank=1) for i, p in ids_and_probs)
    return Rollout(id=name, index=0, seed=0, text=text if text is not None else name, tokens=tokens,
                   finish_reason="stop", reward=reward)


def group(*rollouts: Rollout) -> QueryGroup:
    return QueryGroup(id="q0", query="q", chat=True, prompt="q", prompt_token_ids=(1,), rollouts=rollouts)


# r0 = 1 2 3, r1 = 1 2 4, r2 = 1 5: branch after [1] (2 or 5) and after [1, 2] (3 or 4).
R0 = rollout("a", [(1, 0.9), (2, 0.5), (3, 0.4)])
R1 = rollout("b", [(1, 0.9), (2, 0.5), (4, 0.1)])
R2 = rollout("c", [(1, 0.9), (5, 0.25)])


def test_distinct_n_counts_ngrams_within_each_rollout():
    assert distinct_n([R0, R1, R2], 1) == pytest.approx(5 / 8)  # tokens 1 2 3 1 2 4 1 5
    assert distinct_n([R0, R1, R2], 2) == pytest.approx(4 / 5)  # (1,2) (2,3) (1,2) (2,4) (1,5)
    # (3, 1) would only exist if bigrams ran across rollouts: they do not.
    assert distinct_n([rollout("x", [(3, 1.0)]), rollout("y", [(1, 1.0)])], 2) is None


def test_mean_first_divergence_averages_common_prefixes_over_pairs():
    assert mean_first_divergence([R0, R1, R2]) == pytest.approx((2 + 1 + 1) / 3)
    assert mean_first_divergence([R0, R0]) == 3
    assert mean_first_divergence([R0]) is None


def test_branch_mass_coverage_sums_taken_probabilities_per_branch_point():
    # after [1]: 0.5 + 0.25; after [1, 2]: 0.4 + 0.1
    assert branch_mass_coverage([R0, R1, R2]) == pytest.approx((0.75 + 0.5) / 2)
    # a branch point counts each distinct next token once, however many rollouts took it
    assert branch_mass_coverage([R0, R0, R2]) == pytest.approx(0.75)


def test_branch_mass_coverage_is_none_without_a_branch_point():
    assert branch_mass_coverage([R0, R0]) is None
    assert branch_mass_coverage([R0]) is None
    # one rollout a prefix of another is no branch: nothing was chosen differently
    assert branch_mass_coverage([R0, rollout("p", [(1, 0.9), (2, 0.5)])]) is None


def test_group_stats_in_order_without_rewards():
    stats = group_stats(group(R0, R1, rollout("c2", [(1, 0.9), (5, 0.25)], text="a")))
    assert [name for name, _ in stats] == list(STAT_DESCRIPTIONS)[:6]
    values = dict(stats)
    assert values["n_rollouts"] == 3
    assert values["distinct_responses"] == 2  # texts "a", "b", "a"
    assert values["distinct_1"] == pytest.approx(5 / 8)
    assert values["branch_mass_coverage"] == pytest.approx(0.625)


def test_group_stats_add_reward_mean_and_population_std_when_rewarded():
    stats = dict(group_stats(group(rollout("a", [(1, 0.5)], reward=1.0), rollout("b", [(2, 0.5)], reward=3.0),
                                   rollout("c", [(3, 0.5)]))))
    assert stats["mean_reward"] == pytest.approx(2.0)
    assert stats["reward_std"] == pytest.approx(1.0)


def test_group_stats_of_an_empty_group():
    stats = dict(group_stats(group()))
    assert stats["n_rollouts"] == 0
    assert stats["distinct_1"] is None and stats["mean_first_divergence"] is None
    assert "mean_reward" not in stats
