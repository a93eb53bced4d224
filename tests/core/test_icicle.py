"""The icicle layout: box heights in both modes worked out by hand, nesting on random trees, runs, labels, hits."""

from __future__ import annotations

import math

import numpy as np
import pytest

from explorer.core.numbers import format_short_probability
from explorer.core.tree.icicle import (compute_icicle, fork_branches, fork_label, fork_order, join_fork_label,
                                       node_shares, root_prefix_label, root_prefix_run, run_text)
from explorer.core.tree.measures import node_values, run_values
from explorer.core.tree.token_tree import ROOT, TokenTree
from explorer.core.types import Rollout, TokenInfo, TopLogprob

TEXT = {1: "A", 2: "B", 3: "C", 4: "D", 5: "E", 6: "F", 9: "X", 10: "Y"}
# The policy: next-token probabilities per prefix (the top-N a model would report), remainders left out on purpose.
POLICY = {
    (): {1: 0.9, 9: 0.05, 10: 0.03},
    (1,): {2: 0.6, 5: 0.3, 9: 0.05},
    (1, 2): {3: 0.5, 4: 0.2, 9: 0.2},
    (1, 5): {6: 0.7, 9: 0.2},
}


def token(prefix: tuple[int, ...], tid: int) -> TokenInfo:
    dist = POLICY.get(prefix, {tid: 1.0})
    top = tuple(TopLogprob(t, TEXT[t], TEXT[t].encode(), math.log(p)) for t, p in dist.items())
    return TokenInfo(tid, TEXT[tid], TEXT[tid].encode(), math.log(dist[tid]), None, 1.0, 1, top)


def make_tree(*paths: list[int]) -> TokenTree:
    tree = TokenTree("q0", "prompt")
    for i, ids in enumerate(paths):
        toks = tuple(token(tuple(ids[:p]), t) for p, t in enumerate(ids))
        tree.add_rollout(Rollout(f"q0.r{i}", i, i, "".join(TEXT[t] for t in ids), toks, "stop"))
    return tree


@pytest.fixture
def tree() -> TokenTree:
    return make_tree([1, 2, 3], [1, 2, 4], [1, 5, 6], [1, 2, 3])


def box(ice, n):
    return round(float(ice.y0[n]), 9), round(float(ice.height[n]), 9)


def test_empirical_heights_are_shares_of_the_rollouts(tree):
    ice = compute_icicle(tree, "empirical")
    assert box(ice, ROOT) == (0.0, 1.0) and ice.x0[ROOT] == -1
    assert box(ice, tree.node_for([1])) == (0.0, 1.0)
    assert box(ice, tree.node_for([1, 2])) == (0.0, 0.75)  # 3 of 4, the more probable sibling on top
    assert box(ice, tree.node_for([1, 5])) == (0.75, 0.25)
    assert box(ice, tree.node_for([1, 2, 3])) == (0.0, 0.5)
    assert box(ice, tree.node_for([1, 2, 4])) == (0.5, 0.25)
    assert np.all(ice.height[ice.ghost] == 0)  # nobody went there
    assert len(ice.rest_parent) == 0


def test_model_heights_are_the_policy_split_at_forks_with_ghosts_and_remainder(tree):
    ice = compute_icicle(tree, "model")
    a, b, e = tree.node_for([1]), tree.node_for([1, 2]), tree.node_for([1, 5])
    assert box(ice, a) == (0.0, 1.0)  # the prompt's only taken child keeps the whole extent (a chain)
    ghosts_of_root = {tree.text(c.node): box(ice, c.node) for c in tree.children(ROOT) if c.is_ghost}
    assert ghosts_of_root == {"X": (0.9, 0.05), "Y": (0.95, 0.03)}  # drawn over the chain's bottom, at their pi
    assert box(ice, b) == (0.0, 0.6) and box(ice, e) == (0.6, 0.3)  # the fork: pi(token | prefix) of the parent
    assert box(ice, tree.node_for([1, 2, 3])) == (0.0, 0.3) and box(ice, tree.node_for([1, 2, 4])) == (0.3, 0.12)
    x_under_b = next(c.node for c in tree.children(b) if c.is_ghost)
    assert box(ice, x_under_b) == (0.42, 0.12)
    assert box(ice, tree.node_for([1, 5, 6])) == (0.6, 0.3)  # E -> F is a chain: renormalised to E's extent
    rests = {int(p): (round(float(y), 9), round(float(h), 9))
             for p, y, h in zip(ice.rest_parent, ice.rest_y0, ice.rest_height)}
    assert rests[ROOT] == (0.98, 0.02)  # 1 - 0.9 - 0.05 - 0.03: the mass outside the top-N
    assert rests[a] == (0.95, 0.05) and rests[b] == (0.54, 0.06)
    assert rests[e] == (0.87, 0.03)


def test_runs_forks_and_labels(tree):
    ice = compute_icicle(tree, "empirical")
    e, f = tree.node_for([1, 5]), tree.node_for([1, 5, 6])
    assert ice.run_of[e] == ice.run_of[f] >= 0  # one box for the chain E F
    run = int(ice.run_of[f])
    assert ice.run_box(run) == (1.0, 0.75, 3.0, 1.0)
    assert run_text(tree, ice, run) == "EF" and run_text(tree, ice, run, start=2.2) == "F"
    b = tree.node_for([1, 2])
    assert ice.run_of[b] != ice.run_of[tree.node_for([1])]  # a fork ends a run
    assert sorted(ice.forks.tolist()) == [tree.node_for([1]), b]
    assert fork_label(tree, tree.node_for([1])) == "B .60 3/4 | E .30 1/4"
    assert fork_label(tree, b) == "C .50 2/3 | D .20 1/3"


def test_forks_in_order_of_share_and_label_parts_a_caller_can_extend(tree):
    ice = compute_icicle(tree, "empirical")
    a, b = tree.node_for([1]), tree.node_for([1, 2])
    assert fork_order(tree, ice).tolist() == [a, b]  # 4 rollouts before 3
    words = {tree.node_for([1, 2]): "V .71"}  # e.g. a value per branch
    parts = fork_branches(tree, a, annotate=words.get)
    assert parts == ["B .60 3/4 V .71", "E .30 1/4"]
    assert join_fork_label(parts, 1) == "B .60 3/4 V .71 | +1"
    assert [format_short_probability(p) for p in (0.996, 0.614, 0.004)] == ["1.0", ".61", "<.01"]


def test_the_shared_prefix_is_a_run_with_its_text_and_probability():
    tree = make_tree([1, 2, 3], [1, 2, 4])
    ice = compute_icicle(tree, "empirical")
    run = root_prefix_run(ice)
    assert run_text(tree, ice, run) == "AB"
    assert root_prefix_label(tree, ice) == f"AB  \u03c0 {format_short_probability(0.9 * 0.6)}"
    assert root_prefix_run(compute_icicle(make_tree([1, 2], [9]), "empirical")) == -1  # they part at once


def test_a_chain_is_coloured_by_its_tokens_mean_pi_geometric(tree):
    ice = compute_icicle(tree, "empirical")
    run = int(ice.run_of[tree.node_for([1, 5, 6])])  # the chain E F: pi .3 then .7
    assert run_values(tree, ice, "prob")[run] == pytest.approx(math.sqrt(0.3 * 0.7))
    assert run_values(tree, ice, "entropy")[run] == pytest.approx(1.0)
    assert np.isnan(run_values(tree, ice, "kl")).all()  # no reference facts: unknown, not 0
    np.testing.assert_allclose(node_values(tree, "prob")[1:], np.exp(tree.logprobs[1:]))
    with pytest.raises(ValueError, match="unknown tree colouring"):
        run_values(tree, ice, "rainbow")


def test_node_at_finds_boxes_and_prefers_a_ghost_over_its_chain(tree):
    ice = compute_icicle(tree, "model")
    assert ice.node_at(0.5, 0.1) == tree.node_for([1])
    ghost = ice.node_at(0.5, 0.92)
    assert tree.ghost_mask[ghost] and tree.text(ghost) == "X"
    assert ice.node_at(0.5, 0.99) == -1 and ice.rest_at(0.5, 0.99) >= 0  # the remainder is no node
    assert ice.node_at(2.5, 0.05) == tree.node_for([1, 2, 3])
    assert ice.node_at(-0.5, 0.5) == ROOT
    assert ice.node_at(7.5, 0.5) == -1


def test_node_shares_compare_samples_with_the_policy(tree):
    emp, mod = node_shares(tree, tree.node_for([1, 2]))
    assert emp == 0.75 and mod == pytest.approx(0.9 * 0.6)


def random_rollouts(n: int, length: int, seed: int) -> list[Rollout]:
    rng = np.random.default_rng(seed)
    out = []
    for r in range(n):
        ids: list[int] = []
        toks = []
        for _ in range(int(rng.integers(1, length))):
            p = np.random.default_rng(hash(tuple(ids)) % 2 ** 32).dirichlet(np.ones(6))
            tid = int(rng.choice(6, p=p)) + 1
            top = tuple(TopLogprob(int(t) + 1, str(t), b"x", math.log(p[t])) for t in np.argsort(-p)[:3])
            toks.append(TokenInfo(tid, str(tid - 1), b"x", math.log(p[tid - 1]), None, 1.0, 1, top))
            ids.append(tid)
        out.append(Rollout(f"q0.r{r}", r, r, "", tuple(toks), "stop"))
    return out


def random_tree(n: int, length: int, seed: int) -> TokenTree:
    tree = TokenTree("q0", "p")
    for r in random_rollouts(n, length, seed):
        tree.add_rollout(r)
    return tree


@pytest.mark.parametrize("mode", ["empirical", "model"])
def test_every_child_nests_inside_its_parent_and_siblings_never_overlap(mode):
    tree = random_tree(24, 30, seed=3)
    ice = compute_icicle(tree, mode)
    parents = tree.parents
    for n in range(1, len(tree)):
        if ice.height[n] == 0:
            continue
        p = parents[n]
        assert ice.y0[p] - 1e-12 <= ice.y0[n] and ice.y0[n] + ice.height[n] <= ice.y0[p] + ice.height[p] + 1e-12
    for p in range(len(tree)):
        kids = sorted((float(ice.y0[c]), float(ice.y0[c] + ice.height[c])) for c in tree.child_ids(p)
                      if ice.height[c] > 0 and not (mode == "model" and len([k for k in tree.child_ids(p)
                                                                                 if not tree.ghost_mask[k]]) == 1))
        assert all(a[1] <= b[0] + 1e-12 for a, b in zip(kids, kids[1:]))
    # runs tile exactly the taken nodes, each one extent from head to tail
    real = np.flatnonzero(~tree.ghost_mask)[1:]
    assert np.all(ice.run_of[real] >= 0)
    for run in range(len(ice.run_head)):
        members = np.flatnonzero(ice.run_of == run)
        assert np.allclose(ice.height[members], ice.run_height[run])
        assert ice.x0[members].min() == ice.run_x0[run] and ice.x0[members].max() + 1 == ice.run_x1[run]


def boxes_by_prefix(tree: TokenTree, ice) -> dict:
    out = {}
    for n in range(1, len(tree)):
        key, at = [], n
        while at != ROOT:
            key.append(int(tree.token_ids[at]))
            at = tree.parent(at)
        out[tuple(reversed(key))] = (bool(ice.ghost[n]), round(float(ice.y0[n]), 9), round(float(ice.height[n]), 9))
    return out


@pytest.mark.parametrize("mode", ["empirical", "model"])
def test_streamed_tree_gives_the_same_boxes_as_one_built_whole(mode):
    rollouts = random_rollouts(10, 20, seed=8)
    whole = TokenTree("q0", "p")
    for r in rollouts:
        whole.add_rollout(r)
    live = TokenTree("q0", "p")
    for r in rollouts:
        live.register(r.id)
    for position in range(max(len(r.tokens) for r in rollouts)):  # the engine's order: one step, every rollout
        for r in rollouts:
            if position < len(r.tokens):
                live.add_token(r.id, position, r.tokens[position])
    expected = boxes_by_prefix(whole, compute_icicle(whole, mode))
    assert len(expected) > 30
    assert boxes_by_prefix(live, compute_icicle(live, mode)) == expected


def test_unknown_mode_is_refused(tree):
    with pytest.raises(ValueError, match="unknown icicle mode"):
        compute_icicle(tree, "exact")


def test_hover_words_compare_the_sampled_and_model_shares(tree):
    from explorer.core.tree.icicle import describe_box, describe_rest

    b = tree.node_for([1, 2])
    text = describe_box(tree, b)
    assert "\u201cB\u201d" in text and "\u03c0(token | prefix) = 0.6000" in text
    assert "taken by 3/4 rollouts here = 0.750" in text
    assert "sampled 0.750" in text and "model \u03c0(prefix | x) 0.54" in text
    assert text.endswith("prefix: AB")
    ghost = next(c.node for c in tree.children(b) if c.is_ghost)
    assert "not taken by any of the 3 rollouts" in describe_box(tree, ghost)
    ice = compute_icicle(tree, "model")
    rest = int(np.flatnonzero(ice.rest_parent == b)[0])
    assert "position 2" in describe_rest(tree, ice, rest) and "= 0.100" in describe_rest(tree, ice, rest)


def test_hover_words_give_pi_ref_the_log_ratio_the_kl_and_both_preferred_tokens(tree):
    from dataclasses import replace

    from explorer.core.tree.icicle import describe_box

    group = [Rollout(f"q0.r{i}", i, i, "", tuple(token(tuple(ids[:p]), t) for p, t in enumerate(ids)), "stop")
             for i, ids in enumerate([[1, 2, 3], [1, 2, 4], [1, 5, 6], [1, 2, 3]])]

    def evaluated(t: TokenInfo) -> TokenInfo:
        # pi_ref halves this token's probability and prefers the last of the policy's top tokens
        ref_top = tuple(reversed(t.top))
        return replace(t, ref_logprob=t.logprob - math.log(2), kl=0.25, ref_top_id=ref_top[0].id, ref_top=ref_top)

    tree.take_reference([replace(r, tokens=tuple(evaluated(t) for t in r.tokens)) for r in group])
    text = describe_box(tree, tree.node_for([1, 2]))  # B: pi .6, pi_ref .3; pi prefers B, pi_ref X (.2)
    assert "\u03c0_ref(token | prefix) = 0.3" in text
    assert "log \u03c0 \u2212 log \u03c0_ref = +0.693" in text
    assert "KL(\u03c0 \u2016 \u03c0_ref) at this position = 0.250 nats" in text
    assert "\u03c0 prefers \u201cB\u201d 0.6 \u00b7 \u03c0_ref prefers \u201cX\u201d 0.05" in text and "differ" in text
    # B is a fork whose next step the two policies see differently: its words say both next tokens
    assert "next token: \u03c0 prefers \u201cC\u201d 0.5 \u00b7 \u03c0_ref prefers \u201cX\u201d 0.2" in text
    assert text.endswith("prefix: AB")
    assert "\u03c0_ref" not in describe_box(tree, next(c.node for c in tree.children(tree.node_for([1, 2]))
                                                        if c.is_ghost))
