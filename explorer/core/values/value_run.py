"""The plan of a value run: which prefixes + tokens to estimate, and from which rollout each prefix is copied.

A value run samples M continuations of prefix + token for each start it is given (engine `continuations`). The
starts come from the tree: one box (its own prefix + token: Q of that box), the top-N alternatives at one box's next
position (taken or not), or the K positions where the policy is most likely to fork and matters most (the forking
tokens of Wang et al. 2025: high entropy; weighted by the share of the group's i.i.d. rollouts that reach them), N
alternatives each.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from explorer.core.tree.token_tree import ROOT, TokenTree
from explorer.core.types import ValueStart
from explorer.core.values.tree_values import TreeValues

DEFAULT_FORKS = 10  # K
DEFAULT_ALTERNATIVES = 3  # N
DEFAULT_CONTINUATIONS = 8  # M


def fork_scores(tree: TokenTree, values: TreeValues) -> np.ndarray:
    """Per box, entropy of the next-token distribution there x the share of the group's i.i.d. rollouts that reach it
    (0 where nothing follows the box, and for ghosts). Where the entropy is unknown (a server sends only the top N),
    the entropy of the alternatives the tree knows stands in for it."""
    n = len(tree)
    scores = np.zeros(n)
    if n <= 1:
        return scores
    parents = tree.parents[1:].astype(np.int64)
    entropy = np.full(n, np.nan)
    entropy[parents] = tree.entropies[1:]
    probs = tree.probs[1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(probs > 0, -probs * np.log(probs), 0.0)
    known = np.bincount(parents, weights=terms, minlength=n)[:n]
    entropy = np.where(np.isnan(entropy), known, entropy)
    has_child = np.bincount(parents, minlength=n)[:n] > 0
    counts = values.iid_count if values.iid_count[ROOT] > 0 else tree.counts
    share = counts / counts[ROOT] if counts[ROOT] else np.zeros(n)
    scores = np.where(has_child & ~tree.ghost_mask, entropy * share, 0.0)
    return np.nan_to_num(scores)


def pick_forks(tree: TokenTree, values: TreeValues, k: int) -> list[int]:
    """The k boxes with the highest fork_scores (earlier positions first on ties)."""
    scores = fork_scores(tree, values)
    candidates = np.flatnonzero(scores > 0)
    order = np.lexsort((tree.depths[candidates], -scores[candidates]))
    return candidates[order][:k].tolist()


def alternatives(tree: TokenTree, state: int, n: int) -> list[int]:
    """The n most probable children of a box (taken or ghosts), most probable first."""
    return [c.node for c in tree.children(state)[:n]]


def rollout_through(tree: TokenTree, values: TreeValues, node: int) -> Optional[str]:
    """A rollout whose path passes a box (an i.i.d. one where there is one): where a start's prefix is copied from."""
    through = tree.rollouts_through(node)
    iid = set(values.iid_rollouts)
    return next((r for r in through if r in iid), through[0] if through else None)


def start_at(tree: TokenTree, values: TreeValues, node: int) -> ValueStart:
    """The start that estimates a box (taken or ghost): its prefix (the response before it) + its token."""
    if node == ROOT:
        raise ValueError("the root is the prompt: a value run estimates a token after it")
    state = tree.parent(node)
    rollout = rollout_through(tree, values, state)
    if rollout is None:
        raise ValueError(f"no rollout passes box {node}'s parent")
    return ValueStart(rollout, int(tree.depths[node]), int(tree.token_ids[node]))


def starts_at_fork(tree: TokenTree, values: TreeValues, state: int, n: int) -> list[ValueStart]:
    """The starts of the n most probable next tokens after a box (taken or not)."""
    return [start_at(tree, values, child) for child in alternatives(tree, state, n)]


def plan_value_run(tree: TokenTree, values: TreeValues, forks: int = DEFAULT_FORKS,
                   n_alternatives: int = DEFAULT_ALTERNATIVES) -> list[ValueStart]:
    """The starts of a K-forks value run: the `forks` boxes of pick_forks, `n_alternatives` next tokens each."""
    return [s for state in pick_forks(tree, values, forks) for s in starts_at_fork(tree, values, state, n_alternatives)]
