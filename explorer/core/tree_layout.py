"""Layout of a TokenTree as plot-ready numpy arrays, probability colours, and the collapsed (chain) form.

The layout reads left to right: x is the token position (the root, the prompt, at -1) and every rollout owns a
horizontal lane, given in the order rollouts joined the tree (lane i is the i-th rollout, so lanes line up with the
panes). A node sits on the lane of the first rollout that passed through it, so a shared prefix runs along the upper
lane and a rollout that parts from it steps down to its own lane at the fork. Ghosts fan out just below their parent's
lane. Nothing here depends on the order tokens arrived in, and adding tokens never moves a node that exists (except a
ghost that a rollout takes, which moves onto that rollout's lane): the picture is stable while it streams.

Every step is a vectorised numpy expression over the node columns: no Python work per node.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# viridis sampled at 9 evenly spaced points (perceptually uniform, colour-blind safe); interpolated linearly.
_VIRIDIS = ("#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c", "#28ae80", "#5ec962", "#addc30", "#fde725")


def colormap_lut(start: float = 0.0, stop: float = 1.0, n: int = 256, anchors=_VIRIDIS) -> np.ndarray:
    """A (n, 4) uint8 RGBA lookup table over [start, stop] of the colormap given by hex anchors (viridis)."""
    rgb = np.array([[int(h[i:i + 2], 16) for i in (1, 3, 5)] for h in anchors], dtype=np.float64)
    where = np.linspace(start, stop, n) * (len(anchors) - 1)
    lut = np.empty((n, 4), np.uint8)
    for ch in range(3):
        lut[:, ch] = np.round(np.interp(where, np.arange(len(anchors)), rgb[:, ch]))
    lut[:, 3] = 255
    return lut


def probability_colors(probs: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """RGBA rows for probabilities in [0, 1] (NaN counts as 0)."""
    p = np.nan_to_num(np.asarray(probs, dtype=np.float64), nan=0.0)
    idx = np.clip((p * (len(lut) - 1)).round().astype(np.int64), 0, len(lut) - 1)
    return lut[idx]


def color_levels(probs: np.ndarray, n_levels: int) -> np.ndarray:
    """The colour bucket (0..n_levels-1) of each probability: views reuse one brush per bucket."""
    p = np.nan_to_num(np.asarray(probs, dtype=np.float64), nan=0.0)
    return np.clip((p * n_levels).astype(np.int64), 0, n_levels - 1)


_VISIBLE = {" ": "\u2423", "\n": "\u21b5", "\t": "\u21e5", "\r": "\u240d"}
_VISIBLE_TABLE = str.maketrans(_VISIBLE)


def display_token(text: str, limit: int = 24) -> str:
    """A token as a label: whitespace made visible, long tokens shortened."""
    if not text:
        return "\u2205"
    cut = text if len(text) <= limit else text[: limit - 1]  # each character maps to one: cut first, it is cheaper
    shown = cut.translate(_VISIBLE_TABLE)
    return shown if cut is text else shown + "\u2026"


@dataclass(frozen=True)
class TreeLayout:
    """Plot-ready arrays; index i of every node array is node i of the tree (node 0 is the root)."""

    positions: np.ndarray  # (N, 2) float64: x = token position (root -1), y = lane (+ ghost offset)
    edges: np.ndarray  # (M, 2) int64 parent -> child, one per non-root node
    edge_counts: np.ndarray  # (M,) rollouts along each edge (the child's count; 0 for a ghost)
    edge_ghost: np.ndarray  # (M,) bool: the edge leads to a ghost
    sizes: np.ndarray  # (N,) float32 marker sizes in pixels, by count
    colors: np.ndarray  # (N, 4) uint8 RGBA, by probability; ghosts faded
    ghost: np.ndarray  # (N,) bool
    probs: np.ndarray  # (N,) float64
    counts: np.ndarray  # (N,) int
    version: int

    def segments(self, edge_mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """x, y arrays of the (masked) edges as point pairs, for a curve drawn with connect='pairs'."""
        edges = self.edges if edge_mask is None else self.edges[edge_mask]
        pts = self.positions[edges.reshape(-1)]
        return pts[:, 0], pts[:, 1]


def node_y(tree, lane_spacing: float = 1.0, ghost_spread: float = 0.7) -> np.ndarray:
    """Vertical position of every node: its owner's lane, ghosts stepped below their parent's lane."""
    parents, owners, slots = tree.parents, tree.owners(), tree.slots()
    ghost = tree.ghost_mask
    lane_owner = np.where(ghost, owners[parents], owners)
    max_slot = int(slots.max()) if len(slots) else 0
    # The step depends only on the largest ghost slot, which is top-N after the first token: stable from then on.
    step = ghost_spread / max(max_slot, 5)
    return lane_owner * lane_spacing + slots * step * lane_spacing


def compute_layout(tree, lut: np.ndarray | None = None, lane_spacing: float = 1.0, ghost_spread: float = 0.7,
                   min_size: float = 5.0, max_size: float = 15.0, ghost_size: float = 4.0,
                   ghost_alpha: int = 90) -> TreeLayout:
    """The whole layout in a handful of numpy passes (well under a millisecond per 10k nodes)."""
    n = len(tree)
    depths = tree.depths
    positions = np.empty((n, 2), np.float64)
    positions[:, 0] = depths
    positions[:, 1] = node_y(tree, lane_spacing, ghost_spread)
    ghost = np.array(tree.ghost_mask)
    counts = np.array(tree.counts)
    probs = tree.probs
    probs[0] = 1.0  # the prompt is given, not drawn
    total = max(int(counts[0]), 1)
    sizes = (min_size + (max_size - min_size) * np.sqrt(np.minimum(counts / total, 1.0))).astype(np.float32)
    sizes[ghost] = ghost_size
    sizes[0] = max_size + 2
    colors = probability_colors(probs, colormap_lut() if lut is None else lut)
    colors[ghost, 3] = ghost_alpha
    children = np.arange(1, n)
    edges = np.stack([tree.parents[1:].astype(np.int64), children], axis=1)
    return TreeLayout(positions=positions, edges=edges, edge_counts=counts[1:], edge_ghost=ghost[1:], sizes=sizes,
                      colors=colors, ghost=ghost, probs=probs, counts=counts, version=tree.version)


@dataclass(frozen=True)
class Chains:
    """The tree with its maximal linear chains collapsed: kept nodes joined by one edge per chain.

    Kept nodes are the root, the branch points, the ends of rollouts (leaves, and nodes where some rollouts stop while
    others go on) -- every place where something happens. Each chain edge runs from a kept node to the next kept node
    below it and is labelled with the text of the tokens it stands for (the lower kept node's token included).
    """

    kept: np.ndarray  # (K,) node ids
    edges: np.ndarray  # (C, 2) node ids (upper kept node, lower kept node)
    starts: np.ndarray  # (C,) the first node of each chain (the upper kept node's child)
    labels: list[str]  # (C,) concatenated token text of each chain
    lengths: np.ndarray  # (C,) tokens in each chain
    counts: np.ndarray  # (C,) rollouts along each chain
    chain_of: np.ndarray  # (N,) chain index of every real non-root node, -1 for the root and ghosts


def collapse_chains(tree) -> Chains:
    n = len(tree)
    parents, ghost, counts = tree.parents, tree.ghost_mask, tree.counts
    real = ~ghost
    real[0] = False
    real_nodes = np.flatnonzero(real)
    n_real_children = np.bincount(parents[real_nodes], minlength=n)[:n]
    # For a node with exactly one taken child, which child: any real child works, there is only one.
    only_child = np.full(n, -1, np.int64)
    only_child[parents[real_nodes]] = real_nodes
    continues = (n_real_children == 1) & (counts[np.maximum(only_child, 0)] == counts)
    kept_mask = np.zeros(n, bool)
    kept_mask[real_nodes] = ~continues[real_nodes]
    kept_mask[0] = True
    # A chain starts at every real node whose parent is kept; it runs down single children to the next kept node.
    starts = real_nodes[kept_mask[parents[real_nodes]]]
    chain_of = np.full(n, -1, np.int64)
    edges, labels, lengths, chain_counts = [], [], [], []
    for index, start in enumerate(starts.tolist()):
        node, parts, length = start, [], 0
        while True:
            chain_of[node] = index
            parts.append(tree.text(node))
            length += 1
            if kept_mask[node]:
                break
            node = int(only_child[node])
        edges.append((int(parents[start]), node))
        labels.append("".join(parts))
        lengths.append(length)
        chain_counts.append(int(counts[start]))
    return Chains(kept=np.flatnonzero(kept_mask), edges=np.array(edges, np.int64).reshape(-1, 2),
                  starts=starts.astype(np.int64), labels=labels,
                  lengths=np.array(lengths, np.int64), counts=np.array(chain_counts, np.int64), chain_of=chain_of)


def rollout_series(tree, rollout_id: str) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, entropies) of a rollout's tokens by position."""
    path = tree.path(rollout_id)
    return tree.probs[path], tree.entropies[path].astype(np.float64)


def mean_series(tree) -> tuple[np.ndarray, np.ndarray]:
    """Per-position mean probability and entropy over the rollouts that reached that position."""
    paths = tree.paths()
    lengths = np.array([len(p) for p in paths], dtype=np.int64)
    if lengths.size == 0 or lengths.max() == 0:
        return np.zeros(0), np.zeros(0)
    flat = np.fromiter((n for p in paths for n in p), dtype=np.int64, count=int(lengths.sum()))
    positions = np.concatenate([np.arange(n) for n in lengths])
    width = int(lengths.max())
    reached = np.bincount(positions, minlength=width)
    probs = np.bincount(positions, weights=tree.probs[flat], minlength=width) / reached
    ent = tree.entropies[flat].astype(np.float64)
    finite = np.isfinite(ent)
    ent_sum = np.bincount(positions[finite], weights=ent[finite], minlength=width)
    ent_n = np.bincount(positions[finite], minlength=width)
    return probs, np.where(ent_n > 0, ent_sum / np.maximum(ent_n, 1), np.nan)


def describe_node(tree, node: int) -> str:
    """A node in words (the view's hover text): token, pi, empirical frequency, count, entropy, cumulative logprob."""
    if not 0 <= node < len(tree):
        return ""
    if node == 0:
        prompt = tree.prompt if len(tree.prompt) <= 200 else "\u2026" + tree.prompt[-199:]
        return f"prompt ({len(tree.rollout_ids)} rollouts)\n{prompt}"
    lp = float(tree.logprobs[node])
    parent_count = int(tree.counts[tree.parent(node)])
    lines = [f"\u201c{display_token(tree.text(node), 40)}\u201d  (token {int(tree.token_ids[node])}, "
             f"position {int(tree.depths[node])})",
             f"\u03c0(token | prefix) = {np.exp(lp):.4f}   (log {lp:.3f})"]
    if tree.ghost_mask[node]:
        lines.append(f"not taken by any of the {parent_count} rollouts here (a top-N alternative)")
    else:
        count = int(tree.counts[node])
        lines.append(f"empirical frequency = {count}/{parent_count} = {tree.frequency(node):.3f}")
        lines.append(f"rollouts through it: {count}   (rank {int(tree.ranks()[node])} under the model)")
    lines.append(f"entropy of the distribution = {float(tree.entropies[node]):.3f} nats")
    lines.append(f"cumulative log \u03c0(prefix through this token) = {float(tree.cum_logprobs[node]):.3f}")
    return "\n".join(lines)
