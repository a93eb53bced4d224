"""The KV cache of one llama context: what each sequence holds, and filling it with prefixes.

`KVCache` is the one owner of that knowledge. A run asks it to `prefill` a set of prefixes (a query's prompt, a
prompt + a branch prefix, a prompt to score after), each tagged with the sequences that continue it; it keeps what the
cache already holds of a single prefix (a re-run, a branch after a run, a score after a run) and decodes the rest.
Prefilling consumes what it knew: after a run the caller says what each sequence now holds with `remember`. A run that
fails in between leaves nothing remembered, so stale cells are never reused. Prefixes that begin alike (a value run's:
one prompt, a few states, several next tokens at each) can be prefilled `shared`: what they have in common is decoded
once, into cells every sequence continuing it shares.

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

    def prefill(self, prefixes: Sequence[Prefix], cancel: Optional[threading.Event] = None, shared: bool = False,
                ) -> Optional[list[np.ndarray]]:
        """Decode each prefix into the cache for all its sequences; returns the logits after each prefix's last token
        (copies), or None when cancel was set first. Every prefix must have at least one token. shared: the leading
        tokens prefixes have in common are decoded once, for all the sequences continuing them."""
        starts = self._reuse(prefixes)
        if shared and len(prefixes) > 1:
            flat = _shared_entries(prefixes)
        else:
            flat = []  # (part, token, position, seqs, the prefixes ending at this token)
            for u, (p, start) in enumerate(zip(prefixes, starts)):
                for i in range(start, len(p.tokens)):
                    flat.append((u, p.tokens[i], i, p.seqs, (u,) if i == len(p.tokens) - 1 else ()))
        rows: dict[int, np.ndarray] = {}
        # each prefix (each shared part) gets llama_decode calls of its own: mixing two prompts in one batch changes
        # the float summation order and the logprobs would no longer match a teacher-forced score exactly
        for chunk in _chunks_by_prefix(flat, self._ctx.n_batch):
            if cancel is not None and cancel.is_set():
                return None
            self._ctx.decode([f[1] for f in chunk], [f[2] for f in chunk], [f[3] for f in chunk],
                             [bool(f[4]) for f in chunk])
            wanted = [(j, f[4]) for j, f in enumerate(chunk) if f[4]]
            if wanted:
                block = self._ctx.logits_rows([j for j, _ in wanted])
                for (_, ending), row in zip(wanted, block):
                    for u in ending:
                        rows[u] = np.array(row)
        # the first prefix follows the cells kept in place (or an empty cache), so it fills the first cells in order;
        # a shared prefill lays the prefixes' cells out interleaved, so none of them counts as in order
        self._in_place = {seq: len(prefixes[0].tokens) for seq in prefixes[0].seqs} \
            if prefixes and not (shared and len(prefixes) > 1) else {}
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


def _shared_entries(prefixes: Sequence[Prefix]) -> list:
    """The prefixes' tokens as a prefix tree, depth first: each token once, tagged with every sequence whose prefix
    passes it. A part is a run of tokens with the same sequences: a new one starts where the prefixes part."""
    root: dict = {}  # token -> [children, seqs, the prefixes ending at it]
    for u, p in enumerate(prefixes):
        children, node = root, None
        for token in p.tokens:
            node = children.setdefault(token, [{}, [], []])
            node[1].extend(p.seqs)
            children = node[0]
        node[2].append(u)
    flat, parts = [], 0
    stack = [(token, node, 0, (), -1) for token, node in reversed(root.items())]
    while stack:  # a node, then its subtree, then its next sibling: each part's tokens come one after the other
        token, (below, seqs, ending), depth, above, part = stack.pop()
        seqs = tuple(seqs)
        if seqs != above:
            part, parts = parts, parts + 1
        flat.append((part, token, depth, seqs, tuple(ending)))
        stack.extend((t, n, depth + 1, seqs, part) for t, n in reversed(below.items()))
    return flat


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
