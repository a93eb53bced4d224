"""The token tree: structure from hand-built rollouts, streaming == whole, layout stability, chains, series."""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from explorer.core.tree.token_tree import ROOT, TokenTree, TreeForest
from explorer.core.tree.layout import display_token, mean_kl_series, mean_series, rollout_kl_series
from explorer.core.types import (GroupHeader, QueryGroup, Rollout, RolloutFinished, RolloutHeader, RunStarted,
                                 SamplingParams, TokenBatch, TokenEvent, TokenInfo, TopLogprob)

# A tiny "model": for each prefix (tuple of token ids) the next-token distribution, as {token: prob}.
VOCAB = {1: "A", 2: "B", 3: "C", 4: "D", 5: "E", 6: "F", 7: "G", 8: "H", 9: "X", 10: "Y"}


def dist(prefix: tuple[int, ...]) -> dict[int, float]:
    """A deterministic distribution per prefix, so rollouts sharing a prefix share probabilities and ghosts."""
    rng = np.random.default_rng(abs(hash(prefix)) % (2 ** 32))
    p = rng.dirichlet(np.ones(len(VOCAB)) * 0.6)
    return dict(zip(VOCAB, p))


def info(prefix: tuple[int, ...], token: int, top_n: int = 3) -> TokenInfo:
    d = dist(prefix)
    ranked = sorted(d, key=lambda t: -d[t])
    entropy = -sum(p * math.log(p) for p in d.values())
    top = tuple(TopLogprob(t, VOCAB[t], VOCAB[t].encode(), math.log(d[t])) for t in ranked[:top_n])
    return TokenInfo(token, VOCAB[token], VOCAB[token].encode(), math.log(d[token]), math.log(d[token]), entropy,
                     ranked.index(token) + 1, top)


def rollout(rid: str, ids: list[int], top_n: int = 3, **extra) -> Rollout:
    tokens = tuple(info(tuple(ids[:i]), t, top_n) for i, t in enumerate(ids))
    index = int(rid.rsplit("r", 1)[-1])
    return Rollout(rid, index, index, "".join(VOCAB[t] for t in ids), tokens, "stop", **extra)


def tree_of(*rollouts: Rollout) -> TokenTree:
    tree = TokenTree("q0", "the prompt")
    for r in rollouts:
        tree.add_rollout(r)
    return tree


def random_rollouts(n: int, length: int, seed: int) -> list[Rollout]:
    rng = np.random.default_rng(seed)
    out = []
    for r in range(n):
        ids: list[int] = []
        for _ in range(int(rng.integers(length // 2, length + 1))):
            d = dist(tuple(ids))
            keys = list(d)
            ids.append(int(rng.choice(keys, p=np.array([d[k] for k in keys]))))
        out.append(rollout(f"q0.r{r}", ids))
    return out


def test_structure_counts_frequencies_and_branch_points():
    r0, r1, r2 = rollout("q0.r0", [1, 2, 3]), rollout("q0.r1", [1, 2, 4]), rollout("q0.r2", [1, 5])
    tree = tree_of(r0, r1, r2)
    a, b, e = tree.node_for([1]), tree.node_for([1, 2]), tree.node_for([1, 5])
    c, d = tree.node_for([1, 2, 3]), tree.node_for([1, 2, 4])
    assert tree.counts[ROOT] == 3 and tree.counts[a] == 3 and tree.counts[b] == 2
    assert tree.counts[c] == tree.counts[d] == tree.counts[e] == 1
    assert sorted(tree.branch_points().tolist()) == sorted([a, b])
    stats = {s.token_id: s for s in tree.children(a)}
    assert stats[2].frequency == pytest.approx(2 / 3) and stats[5].frequency == pytest.approx(1 / 3)
    assert stats[2].prob == pytest.approx(dist((1,))[2])
    assert tree.depths[c] == 2 and tree.text(c) == "C"
    assert tree.path("q0.r1").tolist() == [a, b, d]
    assert tree.node_at("q0.r1", 2) == d
    assert tree.rollouts_through(b) == ["q0.r0", "q0.r1"]
    assert tree.rollouts_through(ROOT) == ["q0.r0", "q0.r1", "q0.r2"]
    expected_cum = sum(t.logprob for t in r0.tokens)
    assert tree.cum_logprobs[c] == pytest.approx(expected_cum)
    assert tree.entropies[c] == pytest.approx(r0.tokens[2].entropy)


def test_ghosts_are_untaken_alternatives_and_turn_real_when_taken():
    r0 = rollout("q0.r0", [1, 2, 3], top_n=4)
    tree = tree_of(r0)
    top_at_1 = [t.id for t in r0.tokens[1].top]
    ghosts_under_a = {s.token_id for s in tree.children(tree.node_for([1])) if s.is_ghost}
    assert ghosts_under_a == set(top_at_1) - {2}
    for s in tree.children(tree.node_for([1])):
        if s.is_ghost:
            assert s.count == 0 and s.frequency == 0.0
            assert s.prob == pytest.approx(dist((1,))[s.token_id])
    taken = sorted(ghosts_under_a)[0]
    ghost = tree.node_for([1, taken])
    tree.add_rollout(rollout("q0.r1", [1, taken]))
    assert tree.node_for([1, taken]) == ghost  # the same node, now real
    assert not tree.ghost_mask[ghost] and tree.counts[ghost] == 1
    assert tree.branch_points().tolist() == [tree.node_for([1])]


def test_divergence_and_branch_prefix_convention():
    tree = tree_of(rollout("q0.r0", [1, 2, 3]), rollout("q0.r1", [1, 2, 4]), rollout("q0.r2", [1, 5]),
                   rollout("q0.r3", [1, 2]))
    assert tree.first_divergence_depth("q0.r0", "q0.r1") == 2
    assert tree.first_divergence_depth("q0.r0", "q0.r2") == 1
    assert tree.first_divergence_depth("q0.r0", "q0.r3") == 2  # r3 is a prefix of r0
    assert tree.first_divergence_depth("q0.r0", "q0.r0") is None
    real = tree.branch_prefix(tree.node_for([1, 2, 4]))
    assert (real.rollout_id, real.position, real.forced_token) == ("q0.r1", 3, None)
    ghost = next(s for s in tree.children(tree.node_for([1, 2])) if s.is_ghost)
    prefix = tree.branch_prefix(ghost.node)
    assert (prefix.rollout_id, prefix.position, prefix.forced_token) == ("q0.r0", 2, ghost.token_id)
    assert tree.branch_prefix(ROOT).position == 0
    assert tree.prefix_text(tree.node_for([1, 2, 4])) == "ABD"


def test_bad_input_gets_clear_errors():
    tree = tree_of(rollout("q0.r0", [1, 2, 3]))
    tok = info((1, 2, 3), 4)
    with pytest.raises(ValueError, match="position 5"):
        tree.add_token("q0.r0", 5, tok)
    assert tree.add_token("q0.r0", 1, info((1,), 2)) == tree.node_for([1, 2])  # a re-sent token is a no-op
    with pytest.raises(ValueError, match="does not match"):
        tree.add_rollout(rollout("q0.r0", [1, 5]))
    with pytest.raises(KeyError, match="q0.r9"):
        tree.path("q0.r9")
    with pytest.raises(IndexError):
        tree.node_at("q0.r0", 3)


def test_streaming_equals_building_at_once():
    rollouts = random_rollouts(6, 14, seed=3)
    whole = tree_of(*rollouts)
    streamed = TokenTree("q0", "the prompt")
    for p in range(max(len(r.tokens) for r in rollouts)):  # one decode step at a time, every rollout in turn
        for r in rollouts:
            if p < len(r.tokens):
                streamed.add_token(r.id, p, r.tokens[p])
    assert streamed.signature() == whole.signature()
    assert len(whole.branch_points()) == len(streamed.branch_points()) > 0



def test_a_branch_shares_its_parents_prefix_and_keeps_its_origin():
    rollouts = random_rollouts(5, 20, seed=7)
    tree = tree_of(*rollouts)
    r1 = rollouts[1]
    ghost = next(s for s in tree.children(tree.node_at(r1.id, 2)) if s.is_ghost)
    n_before = len(tree)
    tree.add_rollout(rollout("q0.r5", [t.id for t in r1.tokens[:3]] + [ghost.token_id, 1, 2], parent_id=r1.id,
                            branch_position=3))
    assert not tree.ghost_mask[ghost.node] and tree.node_at("q0.r5", 3) == ghost.node  # the ghost turned real
    assert tree.lane("q0.r5") == 5 and tree.branch_origin("q0.r5") == (r1.id, 3)
    assert tree.path("q0.r5")[:3].tolist() == tree.path(r1.id)[:3].tolist()  # the branch shares r1's prefix
    assert len(tree) > n_before


def test_series_and_token_labels():
    r0, r1 = rollout("q0.r0", [1, 2, 3]), rollout("q0.r1", [1, 5])
    tree = tree_of(r0, r1)
    probs, entropy = mean_series(tree)
    assert probs[0] == pytest.approx(r0.tokens[0].prob)
    assert probs[1] == pytest.approx((r0.tokens[1].prob + r1.tokens[1].prob) / 2)
    assert probs[2] == pytest.approx(r0.tokens[2].prob) and entropy[2] == pytest.approx(r0.tokens[2].entropy)
    assert display_token(" a\n") == "\u2423a\u21b5"


def test_forest_follows_engine_events_including_a_branch():
    r0, r1 = rollout("q0.r0", [1, 2, 3]), rollout("q0.r1", [1, 5])
    group = GroupHeader("q0", "query", True, "the prompt", (7, 8))
    forest = TreeForest()
    forest.add(RunStarted((group,), (RolloutHeader("q0", r0.id, 0, 0), RolloutHeader("q0", r1.id, 1, 1)),
                          SamplingParams(), 6))
    for p in range(3):
        forest.add(TokenBatch(tuple(TokenEvent("q0", r.id, p, r.tokens[p], r.tokens[p].token)
                                    for r in (r0, r1) if p < len(r.tokens))))
    forest.add(RolloutFinished("q0", r0))
    forest.add(RolloutFinished("q0", r1))
    branch = rollout("q0.r2", [1, 2, 4], parent_id=r0.id, branch_position=2)
    forest.add(RunStarted((group,), (RolloutHeader("q0", branch.id, 2, 2, r0.id, 2, branch.tokens[:2]),),
                          SamplingParams(), 1, is_branch=True))
    forest.add(TokenBatch((TokenEvent("q0", branch.id, 2, branch.tokens[2], "D"),)))
    expected = TokenTree.from_group(QueryGroup("q0", "query", True, "the prompt", (7, 8), (r0, r1, branch)))
    assert forest.tree("q0").signature() == expected.signature()


def test_core_tree_never_imports_qt():
    code = "import sys, explorer.core.tree.token_tree, explorer.core.tree.layout; print('PySide6' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_node_for_follows_token_ids_and_names_a_missing_path():
    tree = tree_of(rollout("q0.r0", [1, 2, 3]))
    assert tree.node_for([]) == ROOT
    assert tree.node_for([1, 2]) == tree.node_at("q0.r0", 1)
    with pytest.raises(KeyError, match=r"no node for token ids \[1, 7\]"):
        tree.node_for([1, 7])


# -- reference facts (issue 11) --------------------------------------------------------------------------------------
def ref_dist(prefix: tuple[int, ...]) -> dict[int, float]:
    """pi_ref: another distribution per prefix, over the same vocabulary."""
    rng = np.random.default_rng((abs(hash(prefix)) + 17) % (2 ** 32))
    return dict(zip(VOCAB, rng.dirichlet(np.ones(len(VOCAB)) * 0.6)))


def evaluated(r: Rollout) -> Rollout:
    """The rollout as the reference hands it back: every token with log pi_ref, the KL there and pi_ref's top."""
    ids = [t.id for t in r.tokens]
    tokens = []
    for i, t in enumerate(r.tokens):
        p, q = dist(tuple(ids[:i])), ref_dist(tuple(ids[:i]))
        kl = sum(p[v] * math.log(p[v] / q[v]) for v in VOCAB)
        ranked = sorted(q, key=lambda v: -q[v])[: len(t.top)]
        tokens.append(replace(t, ref_logprob=math.log(q[t.id]), kl=kl, ref_top_id=ranked[0],
                              ref_top=tuple(TopLogprob(v, VOCAB[v], VOCAB[v].encode(), math.log(q[v])) for v in ranked)))
    return replace(r, tokens=tuple(tokens))


def test_reference_facts_come_from_the_evaluated_rollouts_and_go_when_cleared():
    r0, r1, r2 = rollout("q0.r0", [1, 2, 3]), rollout("q0.r1", [1, 2, 4]), rollout("q0.r2", [1, 5, 6])
    tree = tree_of(r0, r1, r2)  # streamed in: no facts yet
    assert not tree.has_reference and np.isnan(tree.kls).all() and (tree.ref_top_ids == -1).all()
    e0, e1 = evaluated(r0), evaluated(r1)
    version = tree.version
    assert tree.take_reference([e0, e1, r2]) is True and tree.version > version and tree.has_reference
    b, d = tree.node_for([1, 2]), tree.node_for([1, 2, 4])
    assert tree.ref_logprobs[d] == pytest.approx(e1.tokens[2].ref_logprob)
    assert tree.kls[b] == pytest.approx(e0.tokens[1].kl)
    assert tree.log_ratios[d] == pytest.approx(e1.tokens[2].logprob - e1.tokens[2].ref_logprob)
    assert tree.reference_token(d) is e1.tokens[2]
    # r2 is not evaluated (still streaming, say): its own nodes and every ghost stay without facts
    assert np.isnan(tree.kls[tree.node_for([1, 5])]) and np.isnan(tree.kls[tree.ghost_mask]).all()
    assert np.isnan(tree.log_ratios[ROOT])
    # the same tuples again: nothing to do, nothing redrawn
    version = tree.version
    assert tree.take_reference([e0, e1, r2]) is False and tree.version == version
    # the reference cleared: the session hands back rollouts without facts, and the nodes lose theirs
    assert tree.take_reference([r0, r1, r2]) is True
    assert not tree.has_reference and np.isnan(tree.ref_logprobs).all() and tree.reference_token(d) is None


def test_a_node_keeps_its_facts_while_any_evaluated_rollout_passes_through_it():
    r0, r1 = rollout("q0.r0", [1, 2, 3]), rollout("q0.r1", [1, 2, 4])
    tree = tree_of(r0, r1)
    tree.take_reference([evaluated(r0), evaluated(r1)])
    tree.take_reference([r0, evaluated(r1)])  # r0 lost its facts (a new reference that has not reached it yet)
    assert not np.isnan(tree.kls[tree.node_for([1, 2])])  # shared with r1, which still has them
    assert np.isnan(tree.kls[tree.node_for([1, 2, 3])])  # r0's own


def test_an_opened_set_brings_its_facts_with_it():
    r0, r1 = evaluated(rollout("q0.r0", [1, 2, 3])), evaluated(rollout("q0.r1", [1, 5]))
    tree = TokenTree.from_group(QueryGroup("q0", "query", True, "the prompt", (7, 8), (r0, r1)))
    assert tree.has_reference and tree.kls[tree.node_for([1, 5])] == pytest.approx(r1.tokens[1].kl)


def test_where_the_policies_prefer_different_next_tokens():
    r0, r1, r2 = rollout("q0.r0", [1, 2, 3]), rollout("q0.r1", [1, 2, 4]), rollout("q0.r2", [1, 5])
    tree = tree_of(r0, r1, r2)
    e0, e1, e2 = (evaluated(r) for r in (r0, r1, r2))
    tree.take_reference([e0, e1, e2])
    differs = tree.top_disagreement()
    assert differs.any() and not differs[tree.ghost_mask].any()
    for r in (e0, e1, e2):
        for position, t in enumerate(r.tokens):
            assert differs[tree.node_at(r.id, position)] == (t.top[0].id != t.ref_top_id)
    after = tree.next_top_disagreement()
    fork = tree.node_for([1, 2])  # r0 and r1 part here
    assert after[fork] == (e0.tokens[2].top[0].id != e0.tokens[2].ref_top_id)
    assert after[ROOT] == (e0.tokens[0].top[0].id != e0.tokens[0].ref_top_id)
    assert not after[tree.ghost_mask].any()


def test_kl_series_by_position():
    r0, r1 = rollout("q0.r0", [1, 2, 3]), rollout("q0.r1", [1, 5])
    tree = tree_of(r0, r1, rollout("q0.r2", [1, 2, 3, 4]))  # r2 not evaluated: not in the mean
    e0, e1 = evaluated(r0), evaluated(r1)
    tree.take_reference([e0, e1])
    mean = mean_kl_series(tree)
    assert len(mean) == 3  # position 3 is r2's alone: no evaluated rollout reaches it
    assert mean[0] == pytest.approx(e0.tokens[0].kl)
    assert mean[1] == pytest.approx((e0.tokens[1].kl + e1.tokens[1].kl) / 2)
    assert mean[2] == pytest.approx(e0.tokens[2].kl)
    np.testing.assert_allclose(rollout_kl_series(tree, "q0.r1"), [t.kl for t in e1.tokens])
    assert np.isnan(rollout_kl_series(tree, "q0.r2")[3])
    infinite = replace(e1, tokens=(e1.tokens[0], replace(e1.tokens[1], kl=math.inf)))
    tree.take_reference([e0, infinite])
    assert math.isinf(mean_kl_series(tree)[1])  # a mean with an infinite term is infinite, not dropped


def test_facts_that_stream_with_the_tokens_are_taken_at_once_and_go_when_cleared():
    e0, e1 = evaluated(rollout("q0.r0", [1, 2, 3])), evaluated(rollout("q0.r1", [1, 5]))
    tree = TokenTree("q0", "the prompt")
    for p in range(3):  # a run the reference follows: the events' tokens carry the facts
        for r in (e0, e1):
            if p < len(r.tokens):
                tree.add_token(r.id, p, r.tokens[p])
    assert tree.has_reference and tree.kls[tree.node_for([1, 5])] == pytest.approx(e1.tokens[1].kl)
    streaming = replace(e0, finish_reason=None, tokens=tuple(e0.tokens))  # a snapshot: a new tuple each time
    version = tree.version
    assert tree.take_reference([streaming, e1]) is True  # the finished e1's tuple, taken once
    assert tree.take_reference([replace(streaming, tokens=tuple(e0.tokens)), e1]) is False
    assert tree.version == version + 1
    assert tree.take_reference([rollout("q0.r0", [1, 2, 3]), rollout("q0.r1", [1, 5])]) is True  # cleared
    assert not tree.has_reference and np.isnan(tree.kls).all()


def test_a_data_following_colour_scale_ends_at_the_rounded_up_99th_percentile():
    from explorer.core.tree.layout import data_full_scale

    exact_copy = np.concatenate([np.full(990, 0.0035), np.linspace(0.004, 0.017, 10)])  # mean ~0.0035, p99 ~0.004
    assert data_full_scale(exact_copy, 2.0) == pytest.approx(0.005)
    assert data_full_scale(np.array([0.3, 0.2]), 2.0) == pytest.approx(0.5)
    assert data_full_scale(np.array([1.0]), 2.0) == 1.0 and data_full_scale(np.array([3.0]), 2.0) == 5.0
    # an infinite KL (a nucleus reference) or NaN (no facts) is left out; one far value does not set the scale
    assert data_full_scale(np.array([0.01, math.inf, math.nan] + [0.012] * 200 + [40.0]), 2.0) == pytest.approx(0.02)
    assert data_full_scale(np.array([0.0, 0.0]), 2.0) == 2.0 and data_full_scale(np.array([]), 2.0) == 2.0
