"""Teacher forcing: the model's per-token facts for given token lists after a prefix, batched into few decodes.

Each token list gets a sequence of its own after a shared prefix (decoded once through the KV cache); all the lists
are decoded together, llama.cpp splitting every decode into micro-batches that run the same kernels as a generation
step (see llama_backend.N_UBATCH), so a teacher-forced logprob equals the one recorded when the same token was sampled.
Logits rows are turned into statistics a block at a time (SCORE_ROWS), which bounds the scratch memory.

A pass leaves its sequences in the cache; it returns what they hold and the caller decides whether the next run may
reuse them (KVCache.remember).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from explorer.core.engine import llama_backend as lb
from explorer.core.engine.kv_cache import KVCache, Prefix
from explorer.core.engine.sampling import Workspace, score_rows
from explorer.core.types import TokenInfo

SCORE_ROWS = 64  # logits rows turned into statistics at once (bounds scratch memory)

# (list indices, positions in the lists, target ids, logits rows (n, V)); the rows are only valid during the call
RowSink = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], None]
TokenInfoMaker = Callable[..., TokenInfo]  # Engine._token_info


def plan_passes(n_prefix: int, lengths: Sequence[int], cell_cap: int) -> list[list[int]]:
    """Indices of the non-empty token lists grouped into passes that fit the context's cells and the sequence limit."""
    todo = [i for i, n in enumerate(lengths) if n]
    passes = []
    while todo:
        batch, cells = [], n_prefix
        while todo and len(batch) < lb.MAX_SEQ and (not batch or cells + lengths[todo[0]] <= cell_cap):
            cells += lengths[todo[0]]
            batch.append(todo.pop(0))
        passes.append(batch)
    return passes


def teacher_force(ctx: lb.LlamaContext, kv: KVCache, prefix: Sequence[int], id_lists: Sequence[Sequence[int]],
                  sink: RowSink) -> dict[int, list[int]]:
    """Decode every token list after prefix, list s in sequence s, and hand each logits row that predicts a token to
    sink(list indices, token positions, target ids, rows), SCORE_ROWS rows at most per call, every row exactly once.
    Returns what each sequence then holds. The context must have the cells and sequences for it."""
    (first_row,) = kv.prefill([Prefix(list(prefix), list(range(len(id_lists))))])
    pending: list[tuple[int, int, np.ndarray]] = [(s, 0, first_row) for s in range(len(id_lists))]

    def flush(rows: list[tuple[int, int, np.ndarray]]) -> None:
        for c in range(0, len(rows), SCORE_ROWS):
            part = rows[c: c + SCORE_ROWS]
            seqs = np.array([s for s, _, _ in part], dtype=np.int64)
            positions = np.array([t for _, t, _ in part], dtype=np.int64)
            targets = np.array([id_lists[s][t] for s, t, _ in part], dtype=np.int64)
            sink(seqs, positions, targets, np.stack([row for _, _, row in part]))

    # (token, cache position, sequence, whether its logits predict a further token of the list)
    flat = [(ids[t], len(prefix) + t, s, t + 1 < len(ids)) for s, ids in enumerate(id_lists) for t in range(len(ids))]
    for c in range(0, len(flat), ctx.n_batch):
        chunk = flat[c: c + ctx.n_batch]
        ctx.decode([f[0] for f in chunk], [f[1] for f in chunk], [[f[2]] for f in chunk], [f[3] for f in chunk])
        wanted = [j for j, f in enumerate(chunk) if f[3]]
        if wanted:
            for j, row in zip(wanted, ctx.logits_rows(wanted)):
                s, pos = chunk[j][2], chunk[j][1]
                pending.append((s, pos - len(prefix) + 1, np.array(row)))
        if len(pending) >= SCORE_ROWS:
            flush(pending)
            pending = []
    flush(pending)
    return {s: list(prefix) + list(ids) for s, ids in enumerate(id_lists)}


def score_pass(ctx: lb.LlamaContext, kv: KVCache, prefix: Sequence[int], id_lists: Sequence[Sequence[int]],
               top_n: int, ws: Workspace, token_info: TokenInfoMaker,
               ) -> tuple[list[tuple[TokenInfo, ...]], dict[int, list[int]]]:
    """Per-token facts (logprob, entropy, rank, top-N; no sampling logprob) of each list, and what the cache holds."""
    out: list[list] = [[None] * len(ids) for ids in id_lists]

    def facts(seqs, positions, targets, rows) -> None:
        stats, lps, ranks = score_rows(rows, targets, top_n, ws)
        for j, (s, t) in enumerate(zip(seqs.tolist(), positions.tolist())):
            out[s][t] = token_info(int(targets[j]), lps[j], None, stats.entropy[j], ranks[j], stats.top_ids[j],
                                   stats.top_logprobs[j])

    held = teacher_force(ctx, kv, prefix, id_lists, facts)
    return [tuple(infos) for infos in out], held
