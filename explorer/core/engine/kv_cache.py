"""The KV cache of one llama context: what each sequence holds, and filling it with prefixes.

`KVCache` is the one owner of that knowledge. A run asks it to `prefill` a set of prefixes (a query's prompt, a
prompt + a branch prefix, a prompt to score after), each tagged with the sequences that continue it; it keeps what the
cache already holds of a single prefix (a re-run, a branch after a run, a score after a run) and decodes the rest.
Prefilling consumes what it knew: after a run the caller says what each sequence now holds with `remember`. A run that
fails in between leaves nothing remembered, so stale cells are never reused.

In an exact context (LlamaContext.shape) only cells that sit in order at the start of the cache are reused: flash
attention sums a row's cells in the order they sit in the cache, so a token decoded into a cell freed between two
older ones would get other numbers than teacher forcing, which lays its cells out in order.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from explorer.core.engine import llama_backend as lb
from explorer.core.numbers import common_prefix


@dataclass(frozen=True)
class Prefix:
    """Token ids to decode once, shared by every sequence in seqs."""

    tokens: Sequence[int]
    seqs: Sequence[int]


class KVCache:
    def __init__(self, ctx: lb.LlamaContext):
        self._ctx = ctx
        self._held: dict[int, list[int]] = {}  # sequence id -> the token ids its cells hold, from position 0
        # sequence id -> how many of its first tokens fill the cache's first cells, in order (the prefix decoded first)
        self._in_place: dict[int, int] = {}

    def remember(self, held: dict[int, Sequence[int]]) -> None:
        """What each sequence holds now (after a run or a scoring pass), for the next prefill to reuse."""
        self._held = {seq: list(ids) for seq, ids in held.items()}
        self._in_place = {seq: n for seq, n in self._in_place.items() if seq in self._held}

    def forget(self) -> None:
        self._held = {}
        self._in_place = {}

    def prefill(self, prefixes: Sequence[Prefix], cancel: Optional[threading.Event] = None,
                ) -> Optional[list[np.ndarray]]:
        """Decode each prefix into the cache for all its sequences; returns the logits after each prefix's last token
        (copies), or None when cancel was set first. Every prefix must have at least one token."""
        starts = self._reuse(prefixes)
        flat = []  # (prefix index, token, position, seqs, wants logits)
        for u, (p, start) in enumerate(zip(prefixes, starts)):
            for i in range(start, len(p.tokens)):
                flat.append((u, p.tokens[i], i, p.seqs, i == len(p.tokens) - 1))
        rows: dict[int, np.ndarray] = {}
        # each prefix gets llama_decode calls of its own: mixing two prompts in one batch changes the float summation
        # order and the logprobs would no longer match a teacher-forced score exactly
        for chunk in _chunks_by_prefix(flat, self._ctx.n_batch):
            if cancel is not None and cancel.is_set():
                return None
            self._ctx.decode([f[1] for f in chunk], [f[2] for f in chunk], [f[3] for f in chunk],
                             [f[4] for f in chunk])
            wanted = [(j, f[0]) for j, f in enumerate(chunk) if f[4]]
            if wanted:
                block = self._ctx.logits_rows([j for j, _ in wanted])
                for (_, u), row in zip(wanted, block):
                    rows[u] = np.array(row)
        # the first prefix follows the cells kept in place (or an empty cache), so it fills the first cells in order
        self._in_place = {seq: len(prefixes[0].tokens) for seq in prefixes[0].seqs} if prefixes else {}
        return [rows[u] for u in range(len(prefixes))]

    def _reuse(self, prefixes: Sequence[Prefix]) -> list[int]:
        """Keep what the cache holds of a single prefix, copied to each of its sequences, and drop everything else;
        returns per prefix how many of its tokens are already in place."""
        held, self._held = self._held, {}
        ctx = self._ctx
        if len(prefixes) == 1 and held:
            prefix = prefixes[0]
            best_seq, best = max(((seq, common_prefix(ids, prefix.tokens)) for seq, ids in held.items()),
                                 key=lambda item: item[1])
            keep = min(best, len(prefix.tokens) - 1)  # the last prefix token is decoded again: its logits are needed
            if ctx.shape is not None:
                keep = min(keep, self._in_place.get(best_seq, 0))
            if keep > 0:
                ok = all(ctx.seq_rm(s, 0, -1) for s in held if s != best_seq) and ctx.seq_rm(best_seq, keep, -1)
                if ok:
                    for t in prefix.seqs:
                        if t != best_seq:
                            ctx.seq_cp(best_seq, t, 0, keep)
                    if best_seq not in prefix.seqs:
                        ctx.seq_rm(best_seq, 0, -1)
                    return [keep]
        ctx.clear()
        return [0] * len(prefixes)


def _chunks_by_prefix(flat: list, size: int) -> list[list]:
    chunks, cur = [], []
    for f in flat:
        if cur and (len(cur) == size or cur[-1][0] != f[0]):
            chunks.append(cur)
            cur = []
        cur.append(f)
    if cur:
        chunks.append(cur)
    return chunks
