"""pass@k, zero-variance groups, the group-size planner and the overview's rows, against direct counts."""

from __future__ import annotations

from dataclasses import replace
from itertools import combinations

import numpy as np
import pytest

from explorer.core.files import export
from explorer.core.rl.outcomes import expected_no_signal, outcome_stats, pass_at_k, pass_ks, planner_curve, scored_group
from explorer.core.rl.overview import select, summarize, summarize_dataset
from explorer.core.types import QueryGroup, Rollout, RolloutSet, SamplingParams
from fake_engine import FakeEngine
from kit import tok


def _rollouts(rewards, finish="stop", lengths=None):
    lengths = lengths or [3] * len(rewards)
    return tuple(Rollout(id=f"g.r{i}", index=i, seed=i, text=f"answer {i % 2}",
                         tokens=tuple(tok(i % 5, "x", 0.5, entropy=1.0 + i) for _ in range(n)),
                         finish_reason=finish if not callable(finish) else finish(i), reward=r)
                 for i, (r, n) in enumerate(zip(rewards, lengths)))


@pytest.mark.parametrize("n", [1, 2, 3, 5, 6, 8])
def test_pass_at_k_is_the_share_of_k_subsets_with_a_correct_sample(n):
    for c in range(n + 1):
        outcomes = [True] * c + [False] * (n - c)
        for k in range(1, n + 1):
            subsets = list(combinations(outcomes, k))
            direct = sum(any(s) for s in subsets) / len(subsets)
            assert pass_at_k(n, c, k) == pytest.approx(direct, abs=1e-12)


def test_pass_at_k_is_stable_where_the_binomials_overflow():
    # C(2000, 1000) is ~1e600: the product form never forms it
    assert pass_at_k(2000, 1, 1) == pytest.approx(1 / 2000)
    assert pass_at_k(2000, 1000, 1000) == pytest.approx(1.0)
    assert 0.0 < pass_at_k(2000, 1, 1000) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)


def test_the_ks_are_powers_of_two_and_n():
    assert pass_ks(8) == (1, 2, 4, 8)
    assert pass_ks(5) == (1, 2, 4, 5)
    assert pass_ks(1) == (1,)
    assert pass_ks(0) == ()


@pytest.mark.parametrize("n, c", [(0, 0), (4, 0), (4, 4), (8, 3), (16, 1), (5, 2)])
@pytest.mark.parametrize("size", [2, 8, 64])
def test_the_planner_integrates_the_beta_posterior(n, c, size):
    # E[p^G + (1 - p)^G] under Beta(c + 1, n - c + 1), by the trapezoid rule on a fine grid
    p = np.linspace(0.0, 1.0, 200_001)
    density = p ** c * (1 - p) ** (n - c)
    density /= np.trapezoid(density, p)
    numeric = float(np.trapezoid((p ** size + (1 - p) ** size) * density, p))
    assert expected_no_signal(n, c, size) == pytest.approx(numeric, rel=1e-6, abs=1e-9)


def test_the_planner_curve_rises_with_the_group_size():
    counts = [(8, 0), (8, 8), (8, 4), (8, 1)]
    curve = planner_curve(counts)
    assert [g for g, _ in curve] == list(range(2, 65))
    shares = [s for _, s in curve]
    assert all(b >= a for a, b in zip(shares, shares[1:]))
    at8 = dict(curve)[8]
    assert at8 == pytest.approx(1 - sum(expected_no_signal(n, c, 8) for n, c in counts) / 4)
    assert planner_curve([]) == []


def test_zero_variance_and_pass_at_k_come_with_the_rewards_and_reach_the_file(tmp_path):
    def reward(query, response, reference):
        return 1.0 if response.endswith("1") else 0.0

    g = QueryGroup("q0", "Q", True, "P", (1,), rollouts=_rollouts([None] * 4))
    scored = scored_group(g, reward)
    stats = dict(scored.stats)
    assert stats["zero_variance"] == 0.0 and stats["correct_at"] == 1.0
    assert stats["pass_at_k.1"] == 0.5 and stats["pass_at_k.2"] == pytest.approx(5 / 6) and stats["pass_at_k.4"] == 1
    all_wrong = dict(scored_group(g, lambda *_: 0.0).stats)
    assert all_wrong["zero_variance"] == 1.0 and all_wrong["pass_at_k.4"] == 0.0
    assert "pass_at_k.1" not in dict(scored_group(g, None).stats)  # no reward, no outcomes

    path = tmp_path / "set.json"
    export.save(RolloutSet(FakeEngine("fake:m").info, SamplingParams(), (scored,)), path)
    on_disk = export.to_dict(export.load(path))["groups"][0]["stats"]
    assert on_disk["zero_variance"] is False
    assert on_disk["pass_at_k"] == {"1": 0.5, "2": pytest.approx(5 / 6), "4": 1.0}
    assert export.load(path).groups[0].stats == scored.stats


def test_a_graded_reward_counts_as_correct_at_its_threshold():
    rollouts = _rollouts([0.2, 0.7, 0.7, 1.0])
    stats = dict(outcome_stats(rollouts, correct_at=0.5))
    assert stats["pass_at_k.1"] == 0.75 and stats["correct_at"] == 0.5
    assert dict(outcome_stats(rollouts))["pass_at_k.1"] == 0.25


def test_branched_and_cancelled_rollouts_stay_out_of_the_outcomes():
    rollouts = list(_rollouts([1.0, 0.0, 0.0]))
    rollouts[1] = replace(rollouts[1], finish_reason="cancelled")
    rollouts[2] = replace(rollouts[2], parent_id="g.r0", branch_position=1)
    stats = dict(outcome_stats(rollouts))
    assert stats["pass_at_k.1"] == 1.0 and stats["zero_variance"] == 1.0


def test_a_summary_row_counts_lengths_truncation_entropy_and_distinct_responses():
    g = QueryGroup("q3", "Q", True, "P", (1,),
                   rollouts=_rollouts([1.0, 0.0, 1.0, 1.0], finish=lambda i: "length" if i < 1 else "stop",
                                      lengths=[4, 2, 2, 2]))
    s = summarize(g)
    assert (s.n_rollouts, s.n_rewarded, s.n_correct) == (4, 4, 3)
    assert s.mean_reward == 0.75
    assert s.reward_std == pytest.approx(np.std([1, 0, 1, 1], ddof=1))  # unbiased, as torch's std()
    assert s.mean_length == 2.5 and s.truncation_rate == 0.25 and s.distinct_responses == 2
    entropies = [1.0] * 4 + [2.0] * 2 + [3.0] * 2 + [4.0] * 2
    assert s.mean_entropy == pytest.approx(sum(entropies) / len(entropies))
    assert s.zero_variance is False and s.outcome == "mixed" and s.mean_kl is None
    assert s.row()["pass_at_k"] == {"1": 0.75, "2": 1.0, "4": 1.0}


def test_the_dataset_summary_and_the_rows_shown():
    groups = [QueryGroup(f"q{i}", f"Q{i}", True, "P", (1,), rollouts=_rollouts(rewards))
              for i, rewards in enumerate([[1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 0, 0], [0.5, 0.5, 0.5, 0.5],
                                           [None] * 4, [1, 1, 0, 0]])]
    rows = [summarize(g) for g in groups]
    d = summarize_dataset(rows)
    assert (d.n_groups, d.n_rewarded_groups, d.with_signal) == (6, 5, 2)
    assert (d.all_correct, d.all_wrong) == (1, 2)  # 0.5 each is below correct_at 1: all wrong
    assert d.signal_share == pytest.approx(2 / 5)
    assert dict((k, v) for k, v, _ in d.pass_at_k)[1] == pytest.approx((1 + 0 + 0.25 + 0 + 0.5) / 5)
    assert sum(d.reward_histogram["counts"]) == 20 and sum(d.length_histogram["counts"]) == 24
    assert d.as_dict()["planner"][0]["group_size"] == 2

    assert [s.group_id for s in select(rows, zero_variance_only=True)] == ["q0", "q1", "q3"]
    assert [s.group_id for s in select(rows, signal_only=True)] == ["q2", "q5"]
    assert [s.group_id for s in select(rows, reward_below=0.5)] == ["q1", "q2"]
    assert [s.group_id for s in select(rows, sort="mean_reward", descending=True)] == ["q0", "q3", "q5", "q2", "q1",
                                                                                      "q4"]  # no reward: last
    ten = [replace(rows[0], group_id=f"q{i}") for i in (10, 9, 2)]
    assert [s.group_id for s in select(ten)] == ["q2", "q9", "q10"]  # ids in their numeric order
    empty = summarize_dataset([])
    assert empty.signal_share is None and empty.length_histogram == {"edges": [], "counts": []} and not empty.planner
