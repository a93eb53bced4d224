"""Batch-invariant decoding on llama.cpp's CPU kernels: which micro-batch shape makes a model exact, and how far apart
sampled and teacher-forced logprobs are without it.

A token's logits depend on the kernels its micro-batch takes, and on CPU these change with the number of rows
(measured with llama.cpp 0.3.36 on AVX2 / AVX-512; BENCHMARKS.md has the per-type table):
- flash attention takes a tiled kernel from 64 query rows on (llama_backend.N_UBATCH stays at 63), and with several
  threads a single query row over 512+ cells splits the cells across threads;
- a matrix product takes ggml's dot products for one row and llamafile's tinyBLAS from 2 rows on: the two agree bit
  for bit on Q4_0, Q5_0 and Q8_0 (Q4_1 and Q5_1 have only the dot products), not on F32, F16, BF16 or IQ4_NL;
- the K-quants (and the other super-block types) take a tiled kernel from 8 rows on, and where the CPU repacks the
  weights (Q4_K here) a kernel for groups of 4 rows and another for the remainder.
Padding every micro-batch into the shape below keeps each product on one kernel, so a token's logprob is the same
whatever k is, whatever else shares its decode step, and whether it is sampled, branched or teacher-forced.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from explorer.core.engine.llama_backend import LlamaContext, MicroBatchShape

# Types whose one-row and many-row products agree, and those that agree from 2 rows on.
ONE_ROW_TYPES = frozenset({"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"})
TWO_ROW_TYPES = ONE_ROW_TYPES | {"F32", "F16", "BF16", "IQ4_NL"}

# A fixed English text for the probe of a model's band: its tokens are decoded one at a time and in one pass
PROBE_TEXT = (
    "The Pacific Ocean is the largest and deepest of the five oceans. It extends from the Arctic Ocean in the north "
    "to the Southern Ocean in the south, and is bounded by Asia and Australia in the west and the Americas in the "
    "east. Its many islands, trenches and currents shape the weather of half the world."
)
PROBE_TOKENS = 64


def exact_shape(matrix_types: Iterable[str], n_threads: int) -> MicroBatchShape:
    """The cheapest micro-batch shape that makes a model with these matrix types batch-invariant on CPU."""
    types = set(matrix_types)
    if types <= ONE_ROW_TYPES and n_threads == 1:
        return MicroBatchShape(1)
    if types <= TWO_ROW_TYPES:
        return MicroBatchShape(2)
    return MicroBatchShape(8, 4)


def _logprobs(rows: np.ndarray, targets: np.ndarray) -> np.ndarray:
    rows = rows.astype(np.float64)
    top = rows.max(axis=1, keepdims=True)
    log_z = top[:, 0] + np.log(np.exp(rows - top).sum(axis=1))
    return rows[np.arange(len(targets)), targets] - log_z


def batch_band(ctx: LlamaContext, ids: list[int]) -> float:
    """The largest difference (nats) between a token's logprob decoded one row at a time, as a single rollout
    samples it, and decoded in one pass, as teacher forcing scores it: ids (at least 2) in sequence 0 of a context
    that holds them. Leaves the context empty."""
    targets = np.array(ids[1:], dtype=np.int64)
    ctx.clear()
    stepped = np.empty(len(targets))
    for pos in range(len(targets)):
        ctx.decode([ids[pos]], [pos], [[0]], [True])
        stepped[pos] = _logprobs(ctx.logits_rows([0]), targets[pos: pos + 1])[0]
    ctx.clear()
    n = len(targets)
    ctx.decode(ids[:-1], list(range(n)), [[0]] * n, [True] * n)
    batched = _logprobs(ctx.logits_rows(range(n)), targets)
    ctx.clear()
    return float(np.max(np.abs(stepped - batched)))
