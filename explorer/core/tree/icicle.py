"""The token tree as an icicle (a flame graph of the policy): plot-ready boxes, computed in numpy passes.

x is the token position (the root, the prompt, spans [-1, 0)); every node is a box one position wide whose vertical
extent is its share of the group, inside [0, 1]. A node's children stack inside its extent in one fixed order: the
taken (real) children first, most probable first, then its ghosts (the top-N alternatives nobody took), most
probable first. Siblings are adjacent and a subtree never leaves its parent's extent, so no edge crosses another.

Two ways to size a box:

- "empirical": the share of the group's rollouts through the node (count / root count). Ghosts get no height.
- "model": the policy's own mass. At a fork, each child's share of its parent is pi(token | prefix), each ghost's too
  (hatched in the view), and what is left, 1 - the sum, is the distribution's untaken remainder (shown, not filled).
  Along a chain (a node with a single taken child) the taken child keeps its parent's extent -- the level is
  renormalised, or a 500-token chain would shrink to nothing -- and that step's ghosts and remainder are drawn over
  the bottom of the chain, at their pi share of it. So height changes only at forks, where the policy's split is the
  point, and every column still shows the step's distribution.

Runs of single-child nodes with the same extent are "runs": the view draws each as one box with its text. A fork
(a node with two or more taken children) gets a label naming the diverging tokens, their pi and counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from explorer.core.numbers import format_logprob, format_probability, format_short_probability
from explorer.core.tree.layout import display_token

MODES = ("empirical", "model")


@dataclass(frozen=True)
class Icicle:
    """Index i of every per-node array is node i of the tree (node 0, the root, spans x in [-1, 0) and y in [0, 1])."""

    mode: str
    x0: np.ndarray  # (N,) float64: the node's column (its depth; -1 for the root); the box spans [x0, x0 + 1)
    y0: np.ndarray  # (N,) float64: top of the box
    height: np.ndarray  # (N,) float64: the box's height (0: not drawn, e.g. a ghost in empirical mode)
    ghost: np.ndarray  # (N,) bool
    # Remainders (model mode): the mass of a step's distribution outside its taken tokens and ghosts.
    rest_parent: np.ndarray  # (R,) the node whose next-token distribution it belongs to
    rest_y0: np.ndarray  # (R,)
    rest_height: np.ndarray  # (R,)
    # Runs: maximal chains of taken nodes with one extent, drawn as one box each.
    run_of: np.ndarray  # (N,) run index of every taken non-root node, -1 for the root and ghosts
    run_row: np.ndarray  # (U,) index in tree.paths() of a rollout through each run (its tokens are a slice of it)
    run_head: np.ndarray  # (U,) first node of each run
    run_tail: np.ndarray  # (U,) last node of each run
    run_x0: np.ndarray  # (U,) float64
    run_x1: np.ndarray  # (U,) float64 (exclusive)
    run_y0: np.ndarray  # (U,)
    run_height: np.ndarray  # (U,)
    forks: np.ndarray  # (F,) nodes with two or more taken children
    n_children: np.ndarray  # (N,) taken children of every node
    version: int

    def __len__(self) -> int:
        return len(self.x0)

    @property
    def extent(self) -> tuple[float, float]:
        """x range the boxes cover: [-1, the deepest column + 1]."""
        return -1.0, float(self.x0.max()) + 1.0 if len(self.x0) else 0.0

    def node_at(self, x: float, y: float) -> int:
        """The drawn box containing the view point (x, y): ghosts and remainders lie over the chain below them, so
        they win; -1 for none (or a remainder, which is no node)."""
        column = int(np.floor(x))
        hit = (self.x0 == column) & (self.height > 0) & (self.y0 <= y) & (y < self.y0 + self.height)
        nodes = np.flatnonzero(hit)
        if len(nodes) == 0:
            return -1
        ghosts = nodes[self.ghost[nodes]]
        if len(ghosts):
            return int(ghosts[0])
        return -1 if self.rest_at(x, y) >= 0 else int(nodes[0])

    def rest_at(self, x: float, y: float) -> int:
        """Index of the remainder box containing (x, y), or -1."""
        column = int(np.floor(x))
        hit = ((self.x0[self.rest_parent] + 1 == column) & (self.rest_y0 <= y)
               & (y < self.rest_y0 + self.rest_height))
        found = np.flatnonzero(hit)
        return int(found[0]) if len(found) else -1

    def box(self, node: int) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) of a node's own box."""
        return float(self.x0[node]), float(self.y0[node]), float(self.x0[node]) + 1.0, float(
            self.y0[node] + self.height[node])

    def run_box(self, run: int) -> tuple[float, float, float, float]:
        return (float(self.run_x0[run]), float(self.run_y0[run]), float(self.run_x1[run]),
                float(self.run_y0[run] + self.run_height[run]))


def _sibling_offsets(parents: np.ndarray, ghost: np.ndarray, probs: np.ndarray, share: np.ndarray,
                     members: np.ndarray) -> np.ndarray:
    """For each node in `members`, the sum of `share` over the member siblings stacked before it (0 for the rest):
    by parent, taken before ghosts, most probable first, then by id. One float key and a stable argsort (a 4-key
    lexsort is ~5x slower)."""
    key = (parents[members] * 2.0 + ghost[members]) * 2.0 + (1.0 - np.clip(probs[members], 0.0, 1.0))
    order = members[np.argsort(key, kind="stable")]
    s = share[order]
    before = np.cumsum(s) - s
    par = parents[order]
    new_group = np.ones(len(order), bool)
    new_group[1:] = par[1:] != par[:-1]
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(len(order)), 0))
    offsets = np.zeros(len(parents))
    offsets[order] = before - before[group_start]
    return offsets


def compute_icicle(tree, mode: str = "empirical") -> Icicle:
    """Every box of the tree, in a handful of numpy passes over the node columns and the rollout paths."""
    if mode not in MODES:
        raise ValueError(f"unknown icicle mode {mode!r}; expected one of {', '.join(MODES)}")
    n = len(tree)
    parents = np.array(tree.parents, dtype=np.int64)
    parents[0] = 0
    ghost = np.array(tree.ghost_mask)
    counts = np.array(tree.counts, dtype=np.float64)
    probs = tree.probs
    real = ~ghost
    real[0] = False
    real_nodes = np.flatnonzero(real)
    n_real_children = np.bincount(parents[real_nodes], minlength=n)[:n]

    model = mode == "model"
    parent_counts = np.maximum(counts[parents], 1.0)
    share = np.where(ghost, probs if model else 0.0, probs if model else counts / parent_counts)
    share[0] = 0.0
    # sampled heights give ghosts no room: leave the ~5x more numerous ghosts out of the sibling pass
    offsets = _sibling_offsets(parents, ghost, probs, share, np.arange(1, n) if model else real_nodes)
    # How much of the parent's extent a taken child carries on to its own children.
    factor = share.copy()
    if model:
        single = real & (n_real_children[parents] == 1)
        factor[single] = 1.0  # a chain: the level is renormalised (see the module doc)
    factor[0] = 1.0

    # Heights and tops of taken nodes: products and sums along every rollout's path (a padded matrix).
    matrix, lengths = tree.path_matrix()  # padded with the root, which the mask leaves out
    width = matrix.shape[1]
    valid = np.arange(width)[None, :] < lengths[:, None]
    y0 = np.zeros(n)
    height = np.zeros(n)
    height[0] = 1.0
    if width:
        f = np.where(valid, factor[matrix], 1.0)
        h = np.cumprod(f, axis=1)
        h_parent = np.concatenate([np.ones((len(matrix), 1)), h[:, :-1]], axis=1)
        top = np.cumsum(np.where(valid, h_parent * offsets[matrix], 0.0), axis=1)
        height[matrix[valid]] = h[valid]
        y0[matrix[valid]] = top[valid]
    # Ghosts (model heights; sampled ones give them no room): their share of their parent's extent, from their offset.
    g = np.flatnonzero(ghost) if model else np.zeros(0, np.int64)
    gp = parents[g]
    y0[g] = y0[gp] + height[gp] * offsets[g]
    height[g] = height[gp] * share[g]

    # Remainders: the untaken mass of each known step distribution (model mode).
    if model and len(g):
        with_children = np.flatnonzero(np.bincount(parents[1:], minlength=n)[:n] > 0)
        total = np.bincount(parents[1:], weights=probs[1:], minlength=n)[:n]
        rest = np.clip(1.0 - total[with_children], 0.0, 1.0)
        keep = rest > 1e-6
        rest_parent = with_children[keep]
        rest_height = height[rest_parent] * rest[keep]
        rest_y0 = y0[rest_parent] + height[rest_parent] * total[rest_parent]
    else:
        rest_parent = np.zeros(0, np.int64)
        rest_y0 = rest_height = np.zeros(0)

    # Runs: a taken node continues its parent's run when it is the parent's only taken child with the same extent.
    continues = real & (parents != 0) & (n_real_children[parents] == 1) & (factor == 1.0) & (offsets == 0.0)
    if not model:
        continues &= counts == counts[parents]
    heads = real_nodes[~continues[real_nodes]]
    run_of = np.full(n, -1, np.int64)
    run_of[heads] = np.arange(len(heads))
    run_tail = np.full(len(heads), -1, np.int64)
    run_row = np.zeros(len(heads), np.int64)
    if width:
        # along each path, a node's run is that of the last head at or before it
        head_mat = valid & ~continues[matrix]
        cols = np.maximum.accumulate(np.where(head_mat, np.arange(width)[None, :], 0), axis=1)
        head_of = np.take_along_axis(matrix, cols, axis=1)
        run_of[matrix[valid]] = run_of[head_of[valid]]
        column_major = valid.T
        nodes_by_depth = matrix.T[column_major]
        run_tail[run_of[nodes_by_depth]] = nodes_by_depth  # the deepest node of each run writes last
        run_row[run_of[nodes_by_depth]] = np.nonzero(column_major)[1]  # a rollout through its tail
    depths = np.array(tree.depths, dtype=np.float64)
    x0 = depths.copy()
    x0[0] = -1.0
    forks = np.flatnonzero(n_real_children >= 2)
    return Icicle(mode=mode, x0=x0, y0=y0, height=height, ghost=ghost, rest_parent=rest_parent, rest_y0=rest_y0,
                  rest_height=rest_height, run_of=run_of, run_row=run_row, run_head=heads, run_tail=run_tail,
                  run_x0=x0[heads] if len(heads) else np.zeros(0),
                  run_x1=x0[run_tail] + 1.0 if len(heads) else np.zeros(0),
                  run_y0=y0[heads], run_height=height[heads], forks=forks,
                  n_children=n_real_children, version=tree.version)


def fork_branches(tree, node: int, annotate: Optional[Callable[[int], Optional[str]]] = None) -> list[str]:
    """One label part per taken child of a fork, most probable first: its token, pi and count ("is .61 4/5").
    annotate(child node), when given, adds its words after the count (a value: "is .63 28/32 V .71")."""
    total = int(tree.counts[node])
    parts = []
    for c in tree.children(node):
        if c.is_ghost:
            continue
        part = f"{display_token(c.text, 16)} {format_short_probability(c.prob)} {c.count}/{total}"
        extra = annotate(c.node) if annotate is not None else None
        parts.append(f"{part} {extra}" if extra else part)
    return parts


def join_fork_label(parts: Sequence[str], shown: int) -> str:
    """The first `shown` parts of a fork's label, and how many more there are: "is .61 4/5 | on .22 1/5 | +2"."""
    shown = max(1, min(shown, len(parts)))
    rest = len(parts) - shown
    return " | ".join(list(parts[:shown]) + ([f"+{rest}"] if rest else []))


def fork_label(tree, node: int, limit: int = 4) -> str:
    """The diverging tokens of a fork with pi and counts, most probable first: "is .61 4/5 | on .22 1/5"."""
    return join_fork_label(fork_branches(tree, node), limit)


def fork_order(tree, icicle: Icicle) -> np.ndarray:
    """The forks by importance, the order they are labelled in: the largest share first (the height drawn: the
    share of the rollouts with sampled heights, of the policy's mass with model heights), then the most rollouts,
    then the shallowest."""
    forks = icicle.forks
    counts = np.asarray(tree.counts, dtype=np.float64)[forks]
    return forks[np.lexsort((icicle.x0[forks], -counts, -icicle.height[forks]))]


def root_prefix_run(icicle: Icicle) -> int:
    """The run every rollout shares from the prompt on (the root's only taken child's run), or -1 when the rollouts
    part at their first token (or there are none)."""
    if len(icicle) < 2 or icicle.n_children[0] != 1:
        return -1
    heads = icicle.run_head
    first = np.flatnonzero(icicle.x0[heads] == 0.0)
    return int(first[0]) if len(first) == 1 else -1


def root_prefix_label(tree, icicle: Icicle, limit: int = 80) -> str:
    """The shared prefix's text and its probability pi(prefix | x): "The largest ocean  π .52"."""
    run = root_prefix_run(icicle)
    if run < 0:
        return ""
    logprob = float(tree.cum_logprobs[int(icicle.run_tail[run])])
    p = float(np.exp(logprob))
    pi = format_short_probability(p) if p >= 0.01 else format_probability(logprob)
    text = display_token(run_text(tree, icicle, run, limit=limit), limit).replace("\u2423", " ").strip()
    return f"{text}  \u03c0 {pi}"


def run_text(tree, icicle: Icicle, run: int, start: float | None = None, limit: int = 200) -> str:
    """The text of a run's tokens from column `start` on (its head when None), at most `limit` characters."""
    head_x, end_x = int(icicle.run_x0[run]), int(icicle.run_x1[run])
    first = head_x if start is None else min(max(int(np.floor(start)), head_x), end_x)
    path = tree.paths()[int(icicle.run_row[run])]
    out, used = [], 0
    for node in path[first:end_x]:
        piece = tree.text(node)
        out.append(piece)
        used += len(piece)
        if used >= limit:
            break
    return "".join(out)[:limit]


def node_shares(tree, node: int) -> tuple[float, float]:
    """(empirical share of the group, model share pi(prefix | x)) of a node: what the two icicle modes compare."""
    total = max(int(tree.counts[0]), 1)
    empirical = float(tree.counts[node]) / total
    model = float(np.exp(tree.cum_logprobs[node])) if node else 1.0
    return empirical, model


def describe_box(tree, node: int) -> str:
    """A box in words (the view's hover text): token, pi, the sampled share against the model's, count, entropy,
    cumulative log pi of the prefix, and the prefix text."""
    if not 0 <= node < len(tree):
        return ""
    if node == 0:
        prompt = tree.prompt if len(tree.prompt) <= 200 else "\u2026" + tree.prompt[-199:]
        return "\n".join([f"prompt ({len(tree.rollout_ids)} rollouts)", prompt] + _next_step_words(tree, node))
    lp = float(tree.logprobs[node])
    parent_count = int(tree.counts[tree.parent(node)])
    empirical, model = node_shares(tree, node)
    lines = [f"\u201c{display_token(tree.text(node), 40)}\u201d  (token {int(tree.token_ids[node])}, "
             f"position {int(tree.depths[node])})",
             f"\u03c0(token | prefix) = {np.exp(lp):.4f}   (log {lp:.3f})" if not np.isnan(lp)
             else "\u03c0(token | prefix) unknown (no logprob recorded)"]
    if tree.ghost_mask[node]:
        lines.append(f"not taken by any of the {parent_count} rollouts here (a top-N alternative)")
    else:
        count = int(tree.counts[node])
        lines.append(f"taken by {count}/{parent_count} rollouts here = {tree.frequency(node):.3f}")
    lines.append(f"share of the group: sampled {empirical:.3f} \u00b7 model \u03c0(prefix | x) {model:.3g}")
    lines.append(f"entropy of the distribution = {float(tree.entropies[node]):.3f} nats")
    lines.append(f"cumulative log \u03c0(prefix through this token) = {float(tree.cum_logprobs[node]):.3f}")
    lines += _reference_words(tree, node) + _next_step_words(tree, node)
    prefix = tree.prefix_text(node)
    if len(prefix) > 240:
        prefix = "\u2026" + prefix[-239:]
    lines.append(f"prefix: {prefix}")
    return "\n".join(lines)


def _preferred(top) -> str:
    return f"\u201c{display_token(top.token, 24)}\u201d {format_probability(top.logprob)}" if top else "unknown"


def _preferences(token) -> str:
    """Both policies' most probable token at a token's position, with their probabilities."""
    same = token.top and token.ref_top_id is not None and token.top[0].id == token.ref_top_id
    verdict = "the same token" if same else "\u2260 they differ"
    return (f"\u03c0 prefers {_preferred(token.top[0] if token.top else None)} \u00b7 \u03c0_ref prefers "
            f"{_preferred(token.ref_top[0] if token.ref_top else None)}  ({verdict})")


def _reference_words(tree, node: int) -> list[str]:
    """pi_ref, the log-ratio and the KL of a node's token, and both preferred tokens there (when evaluated)."""
    token = tree.reference_token(node)
    if token is None:
        return []
    ref_lp, kl = float(tree.ref_logprobs[node]), float(tree.kls[node])
    ratio = float(tree.log_ratios[node])
    return [f"\u03c0_ref(token | prefix) = {format_probability(ref_lp)}   (log {format_logprob(ref_lp)})",
            f"log \u03c0 \u2212 log \u03c0_ref = {'+' if ratio > 0 else ''}{format_logprob(ratio)}",
            f"KL(\u03c0 \u2016 \u03c0_ref) at this position = {format_logprob(kl)} nats",
            "here " + _preferences(token)]


def _next_step_words(tree, node: int) -> list[str]:
    """Where the two policies prefer different next tokens after a node (the view marks it): both of them."""
    for child in tree.child_ids(node):
        token = tree.reference_token(child)  # the taken children were all drawn from one distribution: any says it
        if token is not None:
            if token.top and token.ref_top_id is not None and token.top[0].id != token.ref_top_id:
                return ["next token: " + _preferences(token) + "  \u25bc"]
            return []
    return []


def describe_rest(tree, icicle: Icicle, rest: int) -> str:
    """A remainder box in words: the mass of that step's distribution outside its taken tokens and ghosts."""
    parent = int(icicle.rest_parent[rest])
    parent_height = float(icicle.height[parent]) or 1.0
    mass = float(icicle.rest_height[rest]) / parent_height
    return (f"position {int(tree.depths[parent]) + 1}: probability mass outside the top-N alternatives and the "
            f"tokens taken = {mass:.3f}")
