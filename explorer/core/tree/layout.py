"""What the tree views share: token labels, per-position series, and where a colour scale that follows the data
reaches full colour (the colours themselves are the GUI's, in explorer.gui.widgets.style).

The boxes themselves are laid out in explorer.core.tree.icicle. Every step is a vectorised numpy expression.
"""

from __future__ import annotations

import numpy as np

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
