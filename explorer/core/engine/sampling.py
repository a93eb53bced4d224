"""Logits -> raw log-probabilities, entropy, top-N, and the sampler chain; numpy, vectorised over the batch.

The vocabulary-wide work (max, exp, sums, top-K selection) is done once per decode step for all rows at once; only the
small candidate lists left after top-k are handled row by row. Nothing loops over the vocabulary in Python.
The chain follows llama.cpp's order: repeat penalty, top-k, top-p, min-p, temperature, draw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from explorer.core.types import SamplingParams

# When top-k is off, top-p / min-p candidates are first looked for among this many best tokens (exact check below).
_WIDE_CANDIDATES = 512
# Values per group in the fast top-K search (top_indices): small enough that k groups are a small part of the row.
_GROUP = 64


@dataclass
class RawStats:
    """Per row: log of the normaliser (so logprob = logit - log_z), entropy in nats, top-N ids and logprobs."""

    log_z: np.ndarray  # (n,) float64
    entropy: np.ndarray  # (n,) float64
    top_ids: np.ndarray  # (n, N) int64, most probable first
    top_logprobs: np.ndarray  # (n, N) float64
    row_max: Optional[np.ndarray] = None  # (n,) float32: the largest logit of each row
    ranked_ids: Optional[np.ndarray] = None  # (n, M) int64, M >= N best ids, most probable first, when asked for


@dataclass
class StepResult:
    token_ids: np.ndarray  # (n,) chosen tokens
    logprobs: np.ndarray  # raw log pi(token)
    sampling_logprobs: np.ndarray  # log-probability under the sampler chain (NaN where forced)
    ranks: np.ndarray  # 1 = most probable under the raw distribution
    stats: RawStats


class Workspace:
    """Scratch buffers reused across steps so a step allocates nothing vocabulary-sized."""

    def __init__(self, n_vocab: int, n_rows: int = 8):
        self.n_vocab = n_vocab
        self._shifted = np.empty((0, n_vocab), dtype=np.float32)
        self._exp = np.empty((0, n_vocab), dtype=np.float32)
        self.reserve(n_rows)

    def reserve(self, n_rows: int) -> None:
        if self._shifted.shape[0] < n_rows:
            self._shifted = np.empty((n_rows, self.n_vocab), dtype=np.float32)
            self._exp = np.empty((n_rows, self.n_vocab), dtype=np.float32)

    def buffers(self, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
        self.reserve(n_rows)
        return self._shifted[:n_rows], self._exp[:n_rows]


def top_indices(values: np.ndarray, k: int) -> np.ndarray:
    """The k largest entries of each row, sorted descending (ties: lower id first)."""
    n, v = values.shape
    k = min(k, v)
    if k <= 0:
        return np.empty((n, 0), dtype=np.int64)
    if n and k * _GROUP * 8 <= v:
        fast = _top_by_groups(values, k)
        if fast is not None:
            return fast
    if k == v:
        return _sorted_top(values, np.broadcast_to(np.arange(v), (n, v)).copy(), k)
    part = np.argpartition(values, v - k, axis=1)[:, v - k:]
    cut = np.take_along_axis(values, part, axis=1).min(axis=1)
    out = _sorted_top(values, part, k)
    for row in np.flatnonzero(np.count_nonzero(values >= cut[:, None], axis=1) > k):
        # values tied with the k-th largest straddle the partition's cut: pick the lowest ids among them
        ids = np.flatnonzero(values[row] >= cut[row])
        out[row] = ids[np.argsort(-values[row, ids], kind="stable")[:k]]
    return out


def _sorted_top(values: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    vals = np.take_along_axis(values, ids, axis=1)
    # lexsort: primary key value descending, secondary id ascending, so results do not depend on partition order
    order = np.lexsort((ids, -vals), axis=1)[:, :k]
    return np.take_along_axis(ids, order, axis=1).astype(np.int64, copy=False)


def _top_by_groups(values: np.ndarray, k: int) -> Optional[np.ndarray]:
    """top_indices without partitioning the whole row (an argpartition over a 262k vocabulary costs ~2 ms a row).

    The row is cut into groups of _GROUP values; a value among the k largest lies in a group whose maximum is among
    the k largest group maxima (else k groups would each hold a value strictly greater than it). So one vectorised
    max pass, a partition of the group maxima, and a sort of k * _GROUP candidates give the exact answer. Group j
    holds ids j, j + n_groups, j + 2 n_groups, ...: strided, so the group maxima are an elementwise max of _GROUP
    contiguous slices. Returns None (caller falls back) when group maxima tie at the cut or are NaN.
    """
    n, v = values.shape
    n_groups = v // _GROUP
    main = n_groups * _GROUP
    gmax = values[:, :main].reshape(n, _GROUP, n_groups).max(axis=1)
    best_groups = np.argpartition(gmax, n_groups - k, axis=1)[:, n_groups - k:]
    cut = np.take_along_axis(gmax, best_groups, axis=1).min(axis=1)
    if np.isnan(cut).any() or np.any(np.count_nonzero(gmax >= cut[:, None], axis=1) != k):
        return None
    members = (np.arange(_GROUP, dtype=np.int64) * n_groups)[None, None, :]
    cand = (best_groups[:, :, None].astype(np.int64) + members).reshape(n, k * _GROUP)
    if main < v:  # the few values past the last whole group are always candidates
        cand = np.concatenate([cand, np.broadcast_to(np.arange(main, v, dtype=np.int64), (n, v - main))], axis=1)
    # the k best candidates by a partition, then a sort of those k only (a lexsort of every candidate costs 3x more)
    vals = np.take_along_axis(values, cand, axis=1)
    m = vals.shape[1]
    part = np.argpartition(vals, m - k, axis=1)[:, m - k:]
    part_vals = np.take_along_axis(vals, part, axis=1)
    if np.any(np.count_nonzero(vals >= part_vals.min(axis=1)[:, None], axis=1) != k):
        return _sorted_top(values, cand, k)  # candidates tie at the cut: sort them all, lowest ids win
    ids = np.take_along_axis(cand, part, axis=1)
    order = np.lexsort((ids, -part_vals), axis=1)
    return np.take_along_axis(ids, order, axis=1)


def raw_stats(logits: np.ndarray, top_n: int, ws: Workspace, keep_shifted: bool = False,
              n_ranked: int = 0) -> tuple[RawStats, np.ndarray]:
    """Log-softmax facts of each row of logits (n, V) float32 at temperature 1.

    n_ranked > top_n also lists the n_ranked best ids (stats.ranked_ids) from the same search as the top-N.
    Returns the stats and the shifted logits buffer (logits - row max), which the caller may modify afterwards.
    """
    n = logits.shape[0]
    shifted, expd = ws.buffers(n)
    row_max = logits.max(axis=1, keepdims=True)
    np.subtract(logits, row_max, out=shifted)
    np.exp(shifted, out=expd)
    # float32 sums along a row are pairwise in numpy (error ~ log2(V) ulps, far below what is shown); accumulating in
    # float64 instead costs 2-4x as much on a 262k vocabulary
    z = expd.sum(axis=1).astype(np.float64)
    log_z_shifted = np.log(z)
    # H = log Z - E[x - max]; expd is scratch from here on
    np.multiply(expd, shifted, out=expd)
    mean_shifted = expd.sum(axis=1).astype(np.float64) / z
    entropy = np.maximum(log_z_shifted - mean_shifted, 0.0)
    log_z = row_max[:, 0].astype(np.float64) + log_z_shifted
    ranked = top_indices(shifted, max(top_n, n_ranked))
    top_ids = ranked[:, :top_n]
    top_lps = np.take_along_axis(shifted, top_ids, axis=1).astype(np.float64) - log_z_shifted[:, None]
    return RawStats(log_z=log_z, entropy=entropy, top_ids=top_ids, top_logprobs=top_lps, row_max=row_max[:, 0],
                    ranked_ids=ranked if n_ranked > top_n else None), shifted


def _apply_repeat_penalty(shifted: np.ndarray, row_max: np.ndarray, histories: Sequence[Sequence[int]],
                          penalty: float, last_n: int):
    """llama.cpp's rule: a recent token's logit is divided by the penalty when positive, multiplied when negative.

    shifted holds logits - row_max; the shift is undone around the rule so the sign test and the scaling see the
    real logit (on shifted values every entry is <= 0 and the most probable token would never be penalised).
    """
    if penalty == 1.0:
        return
    for row, history in enumerate(histories):
        recent = history[-last_n:] if last_n > 0 else history
        if not recent:
            continue
        ids = np.unique(np.asarray(recent, dtype=np.int64))
        vals = shifted[row, ids] + row_max[row]
        shifted[row, ids] = np.where(vals > 0, vals / penalty, vals * penalty) - row_max[row]


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def _filter_row(cand_ids: np.ndarray, cand_vals: np.ndarray, params: SamplingParams,
                log_norm: Optional[float] = None):
    """top-p then min-p on candidates sorted by value descending; returns the kept prefix.

    log_norm, when given, is the log of the normaliser over the whole row: the candidates are then only the head
    of the distribution and top-p measures their mass against all of it.
    """
    keep = len(cand_ids)
    if params.top_p < 1.0 and keep > 1:
        vals64 = cand_vals.astype(np.float64)
        cum = np.cumsum(_softmax(vals64) if log_norm is None else np.exp(vals64 - log_norm))
        keep = min(keep, int(np.searchsorted(cum, params.top_p, side="left")) + 1)
    if params.min_p > 0.0 and keep > 1:
        threshold = cand_vals[0] + math.log(params.min_p)
        keep = max(1, min(keep, int(np.count_nonzero(cand_vals[:keep] >= threshold))))
    return cand_ids[:keep], cand_vals[:keep]


def _candidates(values: np.ndarray, params: SamplingParams) -> tuple[np.ndarray, np.ndarray]:
    """Per-row candidate ids/values, sorted descending, after top-k (vectorised over rows)."""
    n, v = values.shape
    if params.top_k > 0:
        ids = top_indices(values, params.top_k)
        return ids, np.take_along_axis(values, ids, axis=1)
    # top-k off: a wide first cut, good enough when top-p / min-p keep fewer tokens than it holds (checked per row)
    ids = top_indices(values, min(v, _WIDE_CANDIDATES))
    return ids, np.take_along_axis(values, ids, axis=1)


def _full_row_candidates(row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ids = np.argsort(-row, kind="stable")
    return ids, row[ids]


def sample_step(
    logits: np.ndarray,
    params: SamplingParams,
    histories: Sequence[Sequence[int]],
    rngs: Sequence[np.random.Generator],
    ws: Workspace,
    forced: Optional[Sequence[Optional[int]]] = None,
) -> StepResult:
    """Choose one token per row of logits (n, V). forced[i], when not None, is taken instead of sampling."""
    n, v = logits.shape
    greedy = params.temperature <= 0.0
    penalised = params.repeat_penalty != 1.0 and any(len(h) for h in histories)
    # without a penalty the top-k candidates are the head of the raw ranking: one search serves both
    shared_top_k = not greedy and not penalised and params.top_k > 0
    stats, shifted = raw_stats(logits, params.top_n, ws, n_ranked=params.top_k if shared_top_k else 0)
    raw_row = shifted  # holds logits - max until the penalty below touches it
    chosen = np.empty(n, dtype=np.int64)
    chosen_raw = np.empty(n, dtype=np.float64)
    sampling_lp = np.full(n, np.nan, dtype=np.float64)
    ranks = np.zeros(n, dtype=np.int64)

    # the raw values of the tokens the penalty is about to change are kept for the raw logprob
    raw_copy = shifted.copy() if penalised else None
    _apply_repeat_penalty(shifted, stats.row_max, histories, params.repeat_penalty, params.repeat_last_n)
    raw_values = raw_copy if raw_copy is not None else raw_row

    if greedy:
        cand_ids, cand_vals = None, None
    elif shared_top_k:
        ranked = stats.ranked_ids if stats.ranked_ids is not None else stats.top_ids
        cand_ids = ranked[:, : params.top_k]
        cand_vals = np.take_along_axis(shifted, cand_ids, axis=1)
    else:
        cand_ids, cand_vals = _candidates(shifted, params)
    log_norm = None
    if not greedy and params.top_k == 0 and params.top_p < 1.0 and v > _WIDE_CANDIDATES:
        # the wide first cut is only the head of the vocabulary: top-p needs the whole row's normaliser
        _, expd = ws.buffers(n)
        row_max = shifted.max(axis=1, keepdims=True)
        np.subtract(shifted, row_max, out=expd)
        np.exp(expd, out=expd)
        log_norm = row_max[:, 0].astype(np.float64) + np.log(expd.sum(axis=1, dtype=np.float64))
    for row in range(n):
        if forced is not None and forced[row] is not None:
            tok = int(forced[row])
        elif greedy:
            tok = int(np.argmax(shifted[row]))
            sampling_lp[row] = 0.0
        else:
            ids, vals = cand_ids[row], cand_vals[row]
            if params.top_k == 0:
                kept_ids, kept_vals = _filter_row(ids, vals, params, None if log_norm is None else log_norm[row])
                # the first cut held every kept token only if the filter stopped inside it
                if len(kept_ids) == len(ids) and len(ids) < v:
                    kept_ids, kept_vals = _filter_row(*_full_row_candidates(shifted[row]), params)
            else:
                kept_ids, kept_vals = _filter_row(ids, vals, params)
            probs = _softmax(kept_vals.astype(np.float64) / params.temperature)
            cum = np.cumsum(probs)
            pick = min(int(np.searchsorted(cum, rngs[row].random() * cum[-1], side="right")), len(probs) - 1)
            tok = int(kept_ids[pick])
            sampling_lp[row] = math.log(probs[pick]) if probs[pick] > 0 else -math.inf
        chosen[row] = tok
        chosen_raw[row] = float(raw_values[row, tok])

    logprobs = chosen_raw - (stats.log_z - stats.row_max.astype(np.float64))
    # rank = 1 + number of tokens strictly more probable. A token inside the raw ranking has every better token in
    # it too, so the count runs over that short list; other rows (forced tokens, a penalty) scan the whole row.
    chosen32 = chosen_raw.astype(np.float32)
    full = np.ones(n, dtype=bool)
    if not penalised:
        listed = stats.ranked_ids if stats.ranked_ids is not None else stats.top_ids
        inside = (listed == chosen[:, None]).any(axis=1)
        listed_vals = np.take_along_axis(raw_values, listed, axis=1)
        ranks[inside] = 1 + np.count_nonzero(listed_vals[inside] > chosen32[inside, None], axis=1)
        full = ~inside
    if full.any():
        ranks[full] = 1 + np.count_nonzero(raw_values[full] > chosen32[full, None], axis=1)
    return StepResult(token_ids=chosen, logprobs=logprobs, sampling_logprobs=sampling_lp, ranks=ranks, stats=stats)


def score_rows(logits: np.ndarray, targets: np.ndarray, top_n: int, ws: Workspace) -> tuple[RawStats, np.ndarray, np.ndarray]:
    """Teacher forcing: raw logprob and rank of targets[i] under row i of logits."""
    stats, shifted = raw_stats(logits, top_n, ws)
    rows = np.arange(logits.shape[0])
    target_vals = shifted[rows, targets]
    lse_shifted = stats.log_z - stats.row_max.astype(np.float64)
    logprobs = target_vals.astype(np.float64) - lse_shifted
    ranks = 1 + np.count_nonzero(shifted > target_vals[:, None], axis=1)
    return stats, logprobs, ranks
