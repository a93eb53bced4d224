"""Diversity statistics on small hand-built groups whose values can be worked out by hand."""

from __future__ import annotations

import math

import pytest

from explorer.core.rl.stats import (
    MISMATCH_STATS, STAT_DESCRIPTIONS, branch_mass_coverage, distinct_n, flat_stats, group_stats,
    mean_first_divergence, mismatch_stats, nested_stats, reference_stats,
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


# -- the mismatch numbers: pi and pi_ref of sampled tokens, worked out here with plain loops --------------------------
def evaluated(name: str, pairs, kls=None, parent: str | None = None, branch_position: int | None = None,
              sampled=None) -> Rollout:
    """A rollout whose tokens carry (pi, pi_ref) pairs; kls: the exact KL per position (None: unknown, a server);
    sampled: per token whether the sampler drew it (a local engine's sampling logprob), None: a server's tokens."""
    tokens = []
    for i, (p, q) in enumerate(pairs):
        lp = math.log(p)
        tokens.append(TokenInfo(id=i, token=f"t{i}", bytes=b"", logprob=lp,
                                sampling_logprob=None if sampled is None or not sampled[i] else lp, entropy=0.0,
                                rank=1, ref_logprob=math.log(q) if q > 0 else -math.inf,
                                kl=None if kls is None else kls[i]))
    return Rollout(id=name, index=0, seed=0, text=name, tokens=tuple(tokens), finish_reason="stop",
                   parent_id=parent, branch_position=branch_position)


def by_hand(pairs, cap, kls=None):
    n = len(pairs)
    diffs = [abs(p - q) for p, q in pairs]
    mean = sum(diffs) / n
    ps, qs = [p for p, _ in pairs], [q for _, q in pairs]
    mp, mq = sum(ps) / n, sum(qs) / n
    cov = sum((p - mp) * (q - mq) for p, q in pairs)
    pearson = cov / math.sqrt(sum((p - mp) ** 2 for p in ps) * sum((q - mq) ** 2 for q in qs))
    ratios = [q / p for p, q in pairs]
    w = [min(r, cap) for r in ratios]
    return {
        "mismatch.n_tokens": n,
        "mismatch.prob_diff_max": max(diffs),
        "mismatch.prob_diff_mean": mean,
        "mismatch.prob_diff_std": math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1)),
        "mismatch.prob_pearson": pearson,
        "mismatch.tis_cap": cap,
        "mismatch.tis_clip_fraction": sum(r > cap for r in ratios) / n,
        "mismatch.ess": sum(w) ** 2 / sum(x * x for x in w),
        "mismatch.kl_k1": sum(-math.log(r) for r in ratios) / n,
        "mismatch.kl_k2": sum(math.log(r) ** 2 / 2 for r in ratios) / n,
        "mismatch.kl_k3": sum((r - 1) - math.log(r) for r in ratios) / n,
        "mismatch.kl_exact": None if kls is None else sum(kls) / n,
    }


PAIRS_A = [(0.5, 0.4), (0.9, 0.95), (0.2, 0.5)]  # r = 0.8, 1.056, 2.5: the last is clipped at C = 2
PAIRS_B = [(0.05, 0.3), (0.7, 0.7)]  # r = 6: clipped; r = 1


def test_mismatch_numbers_follow_verl_trl_and_schulman_s_formulas():
    kls = [0.01, 0.002, 0.3, 0.5, 0.0]
    rollouts = [evaluated("a", PAIRS_A, kls[:3]), evaluated("b", PAIRS_B, kls[3:])]
    got = mismatch_stats(rollouts, 2.0)
    want = by_hand(PAIRS_A + PAIRS_B, 2.0, kls)
    assert got.keys() == want.keys() == set(MISMATCH_STATS)
    for name, value in want.items():
        assert got[name] == pytest.approx(value, rel=1e-12), name
    assert got["mismatch.tis_clip_fraction"] == 2 / 5
    # another cap: C = 10 clips nothing, and the weights are the plain ratios
    wide = mismatch_stats(rollouts, 10.0)
    assert wide["mismatch.tis_clip_fraction"] == 0 and wide["mismatch.ess"] == pytest.approx(
        by_hand(PAIRS_A + PAIRS_B, 10.0)["mismatch.ess"], rel=1e-12)


def test_the_same_policy_on_both_sides_has_no_mismatch():
    same = [(0.5, 0.5), (0.25, 0.25), (0.9, 0.9)]
    got = mismatch_stats([evaluated("a", same, [0.0, 0.0, 0.0])], 2.0)
    assert got["mismatch.prob_diff_max"] == 0 and got["mismatch.prob_diff_std"] == 0
    assert got["mismatch.prob_pearson"] == pytest.approx(1.0)
    assert got["mismatch.ess"] == pytest.approx(3.0)  # every weight 1: all three tokens count
    assert got["mismatch.kl_k1"] == got["mismatch.kl_k2"] == got["mismatch.kl_k3"] == got["mismatch.kl_exact"] == 0


def test_k3_keeps_its_precision_when_the_two_policies_nearly_agree():
    # r = 1 + 1e-7: (r - 1) - log r = 5e-15 to first order; computed as r - 1 it would be rounding noise
    q = 0.5 * (1 + 1e-7)
    got = mismatch_stats([evaluated("a", [(0.5, q), (0.5, q)])], 2.0)
    log_r = math.log1p(1e-7)
    assert got["mismatch.kl_k3"] == pytest.approx(math.expm1(log_r) - log_r, rel=1e-6)
    assert got["mismatch.kl_k2"] == pytest.approx(log_r ** 2 / 2, rel=1e-9)


def test_mismatch_counts_only_tokens_the_sampler_drew():
    parent = evaluated("a", PAIRS_A, sampled=[True, True, True])
    # a branch of it at position 1 that forced its token there (no sampling logprob) and sampled one more
    branch = evaluated("b", PAIRS_A[:1] + [(0.01, 0.02), (0.7, 0.6)], parent="a", branch_position=1,
                       sampled=[True, False, True])
    got = mismatch_stats([parent, branch], 2.0)
    want = by_hand(PAIRS_A + [(0.7, 0.6)], 2.0)
    assert got["mismatch.kl_k1"] == pytest.approx(want["mismatch.kl_k1"], rel=1e-12)
    assert got["mismatch.ess"] == pytest.approx(want["mismatch.ess"], rel=1e-12)
    # a server records no sampling logprob: only the copied prefix is left out
    remote_branch = evaluated("c", PAIRS_A[:1] + [(0.7, 0.6)], parent="a", branch_position=1)
    got = mismatch_stats([evaluated("a", PAIRS_A), remote_branch], 2.0)
    assert got["mismatch.kl_k1"] == pytest.approx(by_hand(PAIRS_A + [(0.7, 0.6)], 2.0)["mismatch.kl_k1"])


def test_without_the_exact_kl_it_is_unknown_never_zero_and_the_other_numbers_stand():
    rollouts = [evaluated("a", PAIRS_A)]  # a server's policy: no KL per position
    got = mismatch_stats(rollouts, 2.0)
    assert got["mismatch.kl_exact"] is None
    assert got["mismatch.kl_k1"] == pytest.approx(by_hand(PAIRS_A, 2.0)["mismatch.kl_k1"])
    stats = reference_stats(rollouts)
    assert stats["mean_kl"] is None and stats["kl_p99"] is None and stats["mismatch.kl_k3"] > 0


def test_a_token_the_reference_excludes_has_weight_zero_and_infinite_estimates():
    got = mismatch_stats([evaluated("a", [(0.5, 0.0), (0.5, 0.5)])], 2.0)
    assert got["mismatch.kl_k1"] == got["mismatch.kl_k2"] == got["mismatch.kl_k3"] == math.inf
    assert got["mismatch.ess"] == pytest.approx(1.0)  # weights 0 and 1
    assert mismatch_stats([rollout("x", [(1, 0.5)])], 2.0) is None  # no reference facts: nothing to say


def test_files_nest_the_mismatch_numbers_and_read_them_back_flat():
    stats = (("n_rollouts", 2.0), ("mismatch.kl_k1", 0.1), ("mismatch.ess", 4.0), ("mean_kl", 0.2))
    nested = nested_stats(stats)
    assert nested == {"n_rollouts": 2.0, "mean_kl": 0.2, "mismatch": {"kl_k1": 0.1, "ess": 4.0}}
    assert set(flat_stats(nested)) == set(stats)
