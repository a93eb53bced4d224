"""V of every box of a group's token tree, from the rewards of the i.i.d. rollouts through it.

A box (a node) is a state: the response so far, its token last. V(box) is the mean reward of the group's i.i.d.
rollouts (rl.stats.in_baseline: branched and value rollouts are left out, their prefixes were chosen, not sampled)
through it, with their count and a 95 % interval (rl.values: Wilson for 0/1 rewards, Student's t otherwise). The step
advantage of a box is V(box) - V(its parent): zero along a chain the same rollouts share, non-zero where the rollouts
part. The forks where the reward is decided are those whose children's values differ most, weighted by how many
rollouts pass: per child |V(child) - V(fork)| x share(child), summed over the fork's children (for a fork of two
children with shares p and 1 - p, 2 p (1 - p) |V(a) - V(b)|).

Everything is a numpy pass over the tree's path matrix (a bincount per column), so a tree of 40k nodes costs a few
milliseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from explorer.core.rl.stats import in_baseline
from explorer.core.rl.values import interval_kind, mean_intervals
from explorer.core.tree.token_tree import ROOT, TokenTree
from explorer.core.types import Rollout


@dataclass(frozen=True)
class DecisiveFork:
    """A fork where the reward is decided: its node (the state before the choice), its weight (the sum over its
    children of |V(child) - V(fork)| x share(child)) and its children with their values, largest |advantage| first."""

    node: int
    weight: float
    share: float  # of the group's rewarded i.i.d. rollouts that pass the fork
    children: tuple[tuple[int, float, float], ...]  # (child node, V(child), share of the group)


class TreeValues:
    """The values of one tree's boxes for one set of rewards (computed once; ask the session for a fresh one after the
    tree or the rewards change)."""

    def __init__(self, tree: TokenTree, rollouts: Sequence[Rollout]):
        self.tree = tree
        self.version = tree.version  # of the tree these values are for
        lanes = tree.rollout_ids
        by_id = {r.id: r for r in rollouts}
        iid = np.zeros(len(lanes), bool)
        reward = np.full(len(lanes), np.nan)
        for i, rid in enumerate(lanes):
            r = by_id.get(rid)
            if r is not None and in_baseline(r):
                iid[i] = True
                if r.reward is not None:
                    reward[i] = r.reward
        rewarded = iid & ~np.isnan(reward)
        self.iid_rollouts = tuple(rid for rid, flag in zip(lanes, iid) if flag)
        n_nodes = len(tree)
        ones = np.ones(len(lanes))
        self.iid_count = _lane_sums(tree, iid, ones, n_nodes).astype(np.int64)  # i.i.d. rollouts through each box
        self.n = _lane_sums(tree, rewarded, ones, n_nodes).astype(np.int64)  # ... of them with a reward
        total = _lane_sums(tree, rewarded, np.nan_to_num(reward), n_nodes)
        total_sq = _lane_sums(tree, rewarded, np.nan_to_num(reward) ** 2, n_nodes)
        self.interval = interval_kind(rollouts)  # "wilson" | "t"
        self.mean, self.low, self.high = mean_intervals(self.n, total, total_sq, self.interval)
        self.has_rewards = bool(rewarded.any())

    @property
    def group_mean(self) -> float:
        """V of the root: the mean reward of the group's i.i.d. rollouts (NaN without rewards)."""
        return float(self.mean[ROOT]) if len(self.mean) else math.nan

    def advantage(self) -> np.ndarray:
        """V(box) - V(parent) of every box (NaN at the root and where either is unknown)."""
        parents = self.tree.parents
        out = self.mean - self.mean[np.maximum(parents, 0)]
        if len(out):
            out[ROOT] = np.nan
        return out

    def share(self) -> np.ndarray:
        """Each box's share of the group's rewarded i.i.d. rollouts."""
        root = self.n[ROOT] if len(self.n) else 0
        return self.n / root if root else np.zeros(len(self.n))

    def value(self, node: int) -> tuple[float, float, float, int]:
        """(V, low, high, n) of one box (NaN where unknown)."""
        return float(self.mean[node]), float(self.low[node]), float(self.high[node]), int(self.n[node])

    def decisive_forks(self, limit: Optional[int] = 8) -> list[DecisiveFork]:
        """The forks where the reward is decided, largest weight first (at most `limit`; forks of weight 0 are left
        out): a fork is a box with two or more children that rewarded i.i.d. rollouts took."""
        if not self.has_rewards:
            return []
        tree = self.tree
        parents = tree.parents.astype(np.int64)
        nodes = np.flatnonzero(self.n > 0)
        nodes = nodes[nodes != ROOT]
        taken = np.bincount(parents[nodes], minlength=len(tree))
        share = self.share()
        weight_each = np.abs(self.mean[nodes] - self.mean[parents[nodes]]) * share[nodes]
        weight = np.bincount(parents[nodes], weights=weight_each, minlength=len(tree))
        forks = np.flatnonzero((taken >= 2) & (weight > 0))
        forks = forks[np.argsort(-weight[forks], kind="stable")]
        if limit is not None:
            forks = forks[:limit]
        out = []
        for fork in forks.tolist():
            children = nodes[parents[nodes] == fork]
            order = np.argsort(-np.abs(self.mean[children] - self.mean[fork]), kind="stable")
            out.append(DecisiveFork(fork, float(weight[fork]), float(share[fork]), tuple(
                (int(c), float(self.mean[c]), float(share[c])) for c in children[order])))
        return out


def _lane_sums(tree: TokenTree, lanes: np.ndarray, weights: np.ndarray, n_nodes: int) -> np.ndarray:
    """Per node, the sum of `weights` over the chosen lanes (rollouts) whose paths pass it; the root gets them all."""
    matrix, lengths = tree.path_matrix()
    out = np.zeros(n_nodes)
    if n_nodes == 0:
        return out
    chosen = np.flatnonzero(lanes)
    out[ROOT] = float(np.sum(weights[chosen]))
    if not len(chosen) or matrix.shape[1] == 0:
        return out
    rows = matrix[chosen]
    inside = np.arange(matrix.shape[1])[None, :] < lengths[chosen][:, None]
    lane_weight = np.broadcast_to(weights[chosen][:, None], rows.shape)
    out += np.bincount(rows[inside], weights=lane_weight[inside], minlength=n_nodes)[:n_nodes]
    return out
