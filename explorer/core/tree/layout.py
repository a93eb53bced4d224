"""What the tree views share: the viridis and diverging colour tables, probability buckets, token labels, and per-position series.

The boxes themselves are laid out in explorer.core.tree.icicle. Every step is a vectorised numpy expression.
"""

from __future__ import annotations

import numpy as np

# viridis sampled at 9 evenly spaced points (perceptually uniform, colour-blind safe); interpolated linearly.
_VIRIDIS = ("#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c", "#28ae80", "#5ec962", "#addc30", "#fde725")
# ColorBrewer's PiYG, pink end first (diverging, apart under the common colour blindnesses), as the panes shade the
# log-ratio: pink where pi gives a token less than pi_ref, green where more, a near-white midpoint at 0
DIVERGING = ("#c51b7d", "#de77ae", "#f1b6da", "#fde0ef", "#f7f7f7", "#e6f5d0", "#b8e186", "#7fbc41", "#4d9221")


def colormap_lut(start: float = 0.0, stop: float = 1.0, n: int = 256, anchors=_VIRIDIS) -> np.ndarray:
    """A (n, 4) uint8 RGBA lookup table over [start, stop] of the colormap given by hex anchors (viridis)."""
    rgb = np.array([[int(h[i:i + 2], 16) for i in (1, 3, 5)] for h in anchors], dtype=np.float64)
    where = np.linspace(start, stop, n) * (len(anchors) - 1)
    lut = np.empty((n, 4), np.uint8)
    for ch in range(3):
        lut[:, ch] = np.round(np.interp(where, np.arange(len(anchors)), rgb[:, ch]))
    lut[:, 3] = 255
    return lut


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


def mean_kl_series(tree) -> np.ndarray:
    """Per-position mean KL(pi || pi_ref) over the rollouts that reached that position with reference facts (NaN
    where none did; inf where one of them is infinite: a mean with an infinite term is infinite)."""
    matrix, lengths = tree.path_matrix()
    if matrix.size == 0:
        return np.zeros(0)
    kl = tree.kls[matrix]
    known = (np.arange(matrix.shape[1])[None, :] < lengths[:, None]) & ~np.isnan(kl)
    n = known.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(known, kl, 0.0).sum(axis=0) / n
    mean[n == 0] = np.nan
    last = np.flatnonzero(n)
    return mean[: last[-1] + 1] if len(last) else np.zeros(0)


def rollout_kl_series(tree, rollout_id: str) -> np.ndarray:
    """KL(pi || pi_ref) of a rollout's tokens by position (NaN where it has no reference facts)."""
    return np.array(tree.kls[tree.path(rollout_id)], dtype=np.float64)


SCALE_QUANTILE = 99  # a data-following colour scale reaches full colour at this percentile of the values shown


def data_full_scale(values: np.ndarray, fallback: float, floor: float = 1e-4) -> float:
    """Where a colour scale of non-negative values (a KL) reaches full colour: the SCALE_QUANTILE-th percentile of
    the finite values, rounded up to 1, 2 or 5 times a power of ten so that the colour bar reads plainly. The
    percentile, not the maximum: one far larger value (an infinite KL where pi_ref excludes a token) would leave
    every other box dark; the values above it saturate. fallback where there is nothing finite above 0."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return fallback
    top = float(np.percentile(v, SCALE_QUANTILE))
    if top <= 0.0:
        return fallback
    top = max(top, floor)
    exponent = np.floor(np.log10(top))
    for step in (1.0, 2.0, 5.0):
        nice = step * 10.0 ** exponent
        if nice >= top * (1 - 1e-12):
            return float(nice)
    return float(10.0 ** (exponent + 1))
