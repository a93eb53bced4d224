"""Values from rewards: intervals against published values, V of every tree box against a brute-force mean over the
rollouts through it, the forks where the reward is decided, the value run's plan, Monte-Carlo estimates and the
per-token credit they give."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from explorer.core.rl.stats import in_baseline
from explorer.core.rl.values import (STUDENT_T, WILSON, interval_of, mean_intervals, state_value, t_quantile,
                                     token_credit, value_estimates, wilson)
from explorer.core.tree.token_tree import ROOT, TokenTree
from explorer.core.types import QueryGroup, Rollout
from explorer.core.values.tree_values import TreeValues
from explorer.core.values.value_run import (fork_scores, pick_forks, plan_value_run, start_at, starts_at_fork)
from tests.core.test_tree import random_rollouts, rollout, tree_of


# -- intervals -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("successes, n, low, high", [
    # Newcombe (1998), "Two-sided confidence intervals for the single proportion", Table I, the score method
    (81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718),
])
def test_wilson_interval_matches_newcombes_table(successes, n, low, high):
    lo, hi = wilson(np.array([successes]), np.array([n]))
    assert lo[0] == pytest.approx(low, abs=5e-5) and hi[0] == pytest.approx(high, abs=5e-5)


def test_t_interval_matches_the_table_of_students_t():
    assert t_quantile(np.array([1, 4, 30])) == pytest.approx([12.7062, 2.7764, 2.0423], abs=1e-4)
    mean, low, high = interval_of([1.0, 2.0, 3.0, 4.0, 5.0], STUDENT_T)  # s = sqrt(2.5): 3 -+ 2.7764 * 0.7071
    assert (mean, low, high) == pytest.approx((3.0, 1.03676, 4.96324), abs=1e-5)


def test_intervals_are_undefined_without_enough_rewards():
    assert interval_of([], WILSON) == (None, None, None)
    assert interval_of([0.7], STUDENT_T) == (0.7, None, None)  # one reward: no spread to speak of
    mean, low, high = interval_of([1.0], WILSON)  # Wilson is defined for one trial
    assert mean == 1.0 and 0.2 < low < 0.21 and high == pytest.approx(1.0)
    m, lo, hi = mean_intervals(np.array([0, 2]), np.array([0.0, 1.0]), np.array([0.0, 1.0]), WILSON)
    assert math.isnan(m[0]) and math.isnan(lo[0]) and m[1] == 0.5 and lo[1] < 0.5 < hi[1]


# -- V on the tree ---------------------------------------------------------------------------------------------------
def rewarded(rollouts, seed: int, binary: bool = True) -> list[Rollout]:
    rng = np.random.default_rng(seed)
    out = []
    for r in rollouts:
        reward = float(rng.integers(0, 2)) if binary else float(rng.normal())
        out.append(replace(r, reward=reward))
    return out


def brute_value(rollouts, prefix) -> tuple[int, float]:
    """(n, mean) of the i.i.d. rollouts with a reward whose tokens start with prefix."""
    rewards = [r.reward for r in rollouts
               if in_baseline(r) and r.reward is not None and r.token_ids[:len(prefix)] == tuple(prefix)]
    return len(rewards), (sum(rewards) / len(rewards) if rewards else math.nan)


def node_prefix(tree: TokenTree, node: int) -> tuple[int, ...]:
    ids = []
    while node != ROOT:
        ids.append(int(tree.token_ids[node]))
        node = tree.parent(node)
    return tuple(reversed(ids))


@pytest.mark.parametrize("binary", [True, False])
def test_v_of_every_box_is_the_mean_reward_of_its_iid_rollouts(binary):
    rollouts = rewarded(random_rollouts(24, 8, seed=3), seed=4, binary=binary)
    # a branch of r0 after 2 tokens, a value rollout of r1's first 3 tokens, a cancelled one and one without reward:
    # none of them counts
    base = rollouts[0]
    rollouts[20] = replace(rollouts[20], tokens=base.tokens[:2] + rollouts[20].tokens[2:], parent_id=base.id,
                           branch_position=2, reward=1.0)
    rollouts[21] = replace(rollouts[21], tokens=rollouts[1].tokens[:3] + rollouts[21].tokens[3:],
                           parent_id=rollouts[1].id, branch_position=3, value_position=2, reward=1.0)
    rollouts[22] = replace(rollouts[22], finish_reason="cancelled", reward=1.0)
    rollouts[23] = replace(rollouts[23], reward=None)
    tree = tree_of(*rollouts)
    values = TreeValues(tree, rollouts)
    assert values.interval == (WILSON if binary else STUDENT_T)
    real = np.flatnonzero(~tree.ghost_mask)
    for node in real:
        n, mean = brute_value(rollouts, node_prefix(tree, node))
        assert values.n[node] == n
        if n:
            assert values.mean[node] == pytest.approx(mean)
            low, high = values.low[node], values.high[node]
            if binary or n > 1:
                assert low <= mean <= high
        else:
            assert math.isnan(values.mean[node])
    assert values.n[ROOT] == 20 and values.group_mean == pytest.approx(np.mean([r.reward for r in rollouts[:20]]))
    assert (values.n[tree.ghost_mask] == 0).all()
    # V agrees with the rollout-level V(prefix) the credit uses, except where an estimate pools into it
    group = QueryGroup("q0", "query", True, "prompt", (1,), tuple(rollouts))
    for node in real:
        if values.n[node] and node_prefix(tree, node) != rollouts[21].value_key:
            assert state_value(group, node_prefix(tree, node)) == pytest.approx(values.mean[node])


def test_step_advantage_and_where_the_reward_is_decided():
    # after "A": "B" (3 rollouts, reward 1) or "C" (1 rollout, reward 0); after "AB": "D" or "E", both reward 1
    rs = [rollout("q0.r0", [1, 2, 4], reward=1.0), rollout("q0.r1", [1, 2, 5], reward=1.0),
          rollout("q0.r2", [1, 2, 4], reward=1.0), rollout("q0.r3", [1, 3, 6], reward=0.0)]
    tree = tree_of(*rs)
    values = TreeValues(tree, rs)
    a, ab, ac = tree.node_for([1]), tree.node_for([1, 2]), tree.node_for([1, 3])
    assert values.mean[a] == 0.75 and values.mean[ab] == 1.0 and values.mean[ac] == 0.0
    advantage = values.advantage()
    assert advantage[ab] == pytest.approx(0.25) and advantage[ac] == pytest.approx(-0.75)
    assert advantage[a] == 0.0 and math.isnan(advantage[ROOT])
    forks = values.decisive_forks()
    assert [f.node for f in forks] == [a]  # the fork after "AB" decides nothing: both ways get 1
    (fork,) = forks
    assert fork.weight == pytest.approx(0.25 * 0.75 + 0.75 * 0.25)  # 2 p (1 - p) |V(B) - V(C)|
    assert fork.children[0][0] == ac and fork.children[0][1] == 0.0  # largest |advantage| first
    assert TreeValues(tree, [replace(r, reward=None) for r in rs]).decisive_forks() == []


# -- the plan of a value run ------------------------------------------------------------------------------------------
def test_value_run_picks_the_forks_of_most_entropy_times_share():
    rollouts = rewarded(random_rollouts(16, 6, seed=11), seed=12)
    tree = tree_of(*rollouts)
    values = TreeValues(tree, rollouts)
    scores = fork_scores(tree, values)
    for node in np.flatnonzero(scores > 0)[:40]:
        child = tree.child_ids(node)[0]
        assert scores[node] == pytest.approx(tree.entropies[child] * values.iid_count[node] / 16, rel=1e-6)
    forks = pick_forks(tree, values, 4)
    assert len(forks) == 4 and scores[forks].tolist() == sorted(scores[forks], reverse=True)
    assert scores[forks[-1]] >= np.sort(scores)[-4]
    starts = plan_value_run(tree, values, forks=4, n_alternatives=3)
    assert len(starts) == 12
    for fork, group_of_three in zip(forks, [starts[i:i + 3] for i in range(0, 12, 3)]):
        probs = [c.prob for c in tree.children(fork)[:3]]
        assert [tree.probs[tree.node_for(list(node_prefix(tree, fork)) + [s.token_id])] for s in group_of_three] \
            == pytest.approx(probs)
        for s in group_of_three:  # each prefix copied from a rollout through the fork, the token right after it
            assert s.position == int(tree.depths[fork]) + 1
            assert tuple(next(r for r in rollouts if r.id == s.rollout_id).token_ids[:s.position]) == \
                node_prefix(tree, fork)


def test_a_start_at_a_box_or_a_ghost():
    rs = [rollout("q0.r0", [1, 2, 4], reward=1.0), rollout("q0.r1", [1, 3, 6], reward=0.0)]
    tree = tree_of(*rs)
    values = TreeValues(tree, rs)
    s = start_at(tree, values, tree.node_for([1, 3]))
    assert (s.position, s.token_id) == (1, 3) and s.rollout_id in ("q0.r0", "q0.r1")
    ghost = next(c for c in tree.children(tree.node_for([1])) if c.is_ghost)
    g = start_at(tree, values, ghost.node)
    assert (g.position, g.token_id) == (1, ghost.token_id)
    first = start_at(tree, values, tree.node_for([1]))
    assert (first.position, first.token_id) == (0, 1)
    assert [x.token_id for x in starts_at_fork(tree, values, ROOT, 2)] == [c.token_id for c in tree.children(ROOT)[:2]]
    with pytest.raises(ValueError):
        start_at(tree, values, ROOT)


# -- Monte-Carlo estimates and the credit they give --------------------------------------------------------------------
def continuation(rid: str, parent: Rollout, position: int, tail: list[int], reward, forced=None, **extra) -> Rollout:
    ids = list(parent.token_ids[:position]) + ([forced] if forced is not None else [parent.token_ids[position]]) + tail
    r = rollout(rid, ids, reward=reward, parent_id=parent.id, value_position=position)
    return replace(r, branch_position=position if forced is not None else position + 1, **extra)


def test_estimates_and_credit_from_value_rollouts_with_known_rewards():
    r0 = rollout("q0.r0", [1, 2, 4], reward=1.0)
    r1 = rollout("q0.r1", [1, 3, 6], reward=0.0)
    r2 = rollout("q0.r2", [1, 2, 5], reward=0.0)
    # Q("A", "B"): 3 of 4 continuations rewarded; Q("A", "D"), D forced (no i.i.d. rollout took it): 0 of 2
    cont = [continuation(f"q0.r{3 + i}", r0, 1, [7], reward) for i, reward in enumerate([1.0, 1.0, 1.0, 0.0])]
    cont += [continuation(f"q0.r{7 + i}", r0, 1, [8], 0.0, forced=4) for i in range(2)]
    cont.append(continuation("q0.r9", r0, 1, [9], 1.0, forced=4, finish_reason="cancelled"))  # cut off: not counted
    group = QueryGroup("q0", "query", True, "prompt", (1,), (r0, r1, r2, *cont))
    assert not any(in_baseline(r) for r in cont)
    estimates = {e.key: e for e in value_estimates(group)}
    q_ab, q_ad = estimates[(1, 2)], estimates[(1, 4)]
    assert (q_ab.prefix_token_ids, q_ab.token_id, q_ab.n, q_ab.mean_reward) == ((1,), 2, 4, 0.75)
    assert q_ab.interval == WILSON and (q_ab.ci_low, q_ab.ci_high) == pytest.approx(
        tuple(x[0] for x in wilson(np.array([3]), np.array([4]))))
    assert q_ab.rollout_ids == ("q0.r3", "q0.r4", "q0.r5", "q0.r6")
    assert (q_ad.n, q_ad.mean_reward, len(q_ad.rollout_ids)) == (2, 0.0, 3)
    # V("A") = the i.i.d. rollouts through "A": 1/3 (no estimate of "A" itself)
    credit = token_credit(group)
    assert credit["q0.r0"] == pytest.approx((None, 0.75 - 1 / 3, None))
    assert credit["q0.r1"] == (None, None, None)  # "AC" was not estimated
    assert credit["q0.r7"][1] == pytest.approx(0.0 - 1 / 3)
    # an estimate of "A" itself pools into V("A"): 2 continuations of "A", rewards 1, 1 -> (1 + 0 + 0 + 1 + 1) / 5;
    # before "A" is the prompt, whose value is the i.i.d. rollouts' mean
    top = [continuation(f"q0.r{10 + i}", r1, 0, [5], 1.0) for i in range(2)]
    group2 = replace(group, rollouts=group.rollouts + tuple(top))
    assert token_credit(group2, ["q0.r0"])["q0.r0"] == pytest.approx((1.0 - 1 / 3, 0.75 - 0.6, None))
    # non-binary rewards: a t interval
    scaled = replace(group, rollouts=tuple(replace(r, reward=None if r.reward is None else r.reward * 0.5)
                                           for r in group.rollouts))
    assert {e.interval for e in value_estimates(scaled)} == {STUDENT_T}
