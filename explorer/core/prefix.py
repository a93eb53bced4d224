"""Prefixes in the shared KV cache: reusing what it holds, decoding prompts and branch prefixes, teacher forcing.

A mixin of Engine (engine.py), which provides the model, the context, the workspace and the token-fact helpers.
"""

from __future__ import annotations

import codecs
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from . import llama_backend as lb
from .errors import ExplorerError
from .sampling import score_rows
from .types import RolloutHeader, Score, TokenInfo

SCORE_ROWS = 64  # logits rows turned into statistics at once while scoring (bounds scratch memory)


@dataclass
class _Live:
    """A rollout being generated (engine-internal, mutable)."""

    header: RolloutHeader
    rng: np.random.Generator
    history: list[int]  # prompt + prefix + generated ids: what the repeat penalty looks at
    tokens: list[TokenInfo]
    text: str
    decoder: codecs.IncrementalDecoder
    n_new: int = 0
    seq: int = 0
    pos: int = 0  # position of the next token to decode
    last: Optional[int] = None  # sampled but not yet decoded
    finish: Optional[str] = None


@dataclass
class _Unit:
    """One prefix (a query's prompt, or a prompt + a branch prefix) and the rollouts that continue it."""

    group_id: str
    prefix: list[int]
    rollouts: list[_Live] = field(default_factory=list)


class PrefixMixin:
    # -- KV prefix reuse ---------------------------------------------------------------------------------------
    def _prepare_kv(self, units: list[_Unit]) -> list[int]:
        """Keep what the cache already holds of a single prefix (a re-run, a branch, a score after a run).

        Returns per unit how many of its prefix tokens are already in place for every one of its sequences.
        """
        ctx = self._ctx
        if len(units) == 1 and self._kv:
            prefix = units[0].prefix
            best_seq, best = -1, 0
            for seq, held in self._kv.items():
                n = _common_prefix(held, prefix)
                if n > best:
                    best_seq, best = seq, n
            keep = min(best, len(prefix) - 1)  # the last prefix token is decoded again: its logits are needed
            if keep > 0:
                ok = all(ctx.seq_rm(s, 0, -1) for s in self._kv if s != best_seq) and ctx.seq_rm(best_seq, keep, -1)
                if ok:
                    targets = [r.seq for r in units[0].rollouts]
                    for t in targets:
                        if t != best_seq:
                            ctx.seq_cp(best_seq, t, 0, keep)
                    if best_seq not in targets:
                        ctx.seq_rm(best_seq, 0, -1)
                    self._kv = {}
                    return [keep]
        ctx.clear()
        self._kv = {}
        return [0] * len(units)

    def _decode_prefixes(self, units: list[_Unit], starts: list[int], cancel, timing: dict,
                         extra_rows: Optional[dict[int, int]] = None) -> Optional[list[np.ndarray]]:
        """Decode each unit's prefix, tagged with all its sequences; returns the last-token logits of each unit
        (a copy), or None when cancelled. extra_rows[u] = a further prefix index whose logits are wanted too."""
        ctx = self._ctx
        flat = []  # (unit, token, pos, seqs, (unit, prefix index) or None)
        for u, (unit, start) in enumerate(zip(units, starts)):
            seqs = [r.seq for r in unit.rollouts]
            for i in range(start, len(unit.prefix)):
                want = i == len(unit.prefix) - 1 or (extra_rows is not None and extra_rows.get(u) == i)
                flat.append((u, unit.prefix[i], i, seqs, (u, i) if want else None))
        rows: dict[tuple[int, int], np.ndarray] = {}
        t0 = time.perf_counter()
        # each prefix gets llama_decode calls of its own: mixing two prompts in one ubatch changes the
        # float summation order and the logprobs would no longer match a teacher-forced score exactly
        chunks = _chunks_by_unit(flat, ctx.n_batch)
        for chunk in chunks:
            if cancel is not None and cancel.is_set():
                return None
            ctx.decode([f[1] for f in chunk], [f[2] for f in chunk], [f[3] for f in chunk],
                       [f[4] is not None for f in chunk])
            wanted = [(j, f[4]) for j, f in enumerate(chunk) if f[4] is not None]
            if wanted:
                block = ctx.logits_rows([j for j, _ in wanted])
                for (_, key), row in zip(wanted, block):
                    rows[key] = np.array(row)
        timing["prompt_s"] += time.perf_counter() - t0
        return [rows[(u, len(unit.prefix) - 1)] for u, unit in enumerate(units)]

    # -- scoring -----------------------------------------------------------------------------------------------
    def score(self, query: str, responses: Sequence[str], chat: bool = True, system: Optional[str] = None,
              top_n: int = 5) -> tuple[Score, ...]:
        """Teacher-forced log pi(response | query) of each response, token by token."""
        _, prompt_ids = self.format_prompt(query, self.uses_chat(chat), system)
        id_lists = [self.model.tokenize(r, add_special=False, parse_special=False) for r in responses]
        infos = self.score_token_ids(list(prompt_ids), id_lists, top_n)
        return tuple(Score(response=r, tokens=t) for r, t in zip(responses, infos))

    def score_token_ids(self, prefix: Sequence[int], id_lists: Sequence[Sequence[int]],
                        top_n: int = 5) -> list[tuple[TokenInfo, ...]]:
        """Per-token facts of each token list following prefix (the logprob a sampler would have recorded)."""
        results: list[tuple[TokenInfo, ...]] = [()] * len(id_lists)
        if not prefix:
            raise ExplorerError("nothing to condition on: the prompt has no tokens")
        self._check_vocab(prefix, "the prompt")
        todo = [i for i, ids in enumerate(id_lists) if ids]
        for i in todo:
            self._check_fits(len(prefix), len(id_lists[i]), "the prompt", after=f"response {i + 1}")
            self._check_vocab(id_lists[i], "the response")
        cap = self._cell_cap()
        while todo:  # as many responses per pass as the context and the sequence limit allow
            batch, cells = [], len(prefix)
            while todo and len(batch) < lb.MAX_SEQ and (not batch or cells + len(id_lists[todo[0]]) <= cap):
                cells += len(id_lists[todo[0]])
                batch.append(todo.pop(0))
            for i, infos in zip(batch, self._score_pass(list(prefix), [list(id_lists[i]) for i in batch], top_n)):
                results[i] = infos
        return results

    def _score_pass(self, prefix: list[int], id_lists: list[list[int]], top_n: int) -> list[tuple[TokenInfo, ...]]:
        self._ensure_context(len(prefix) + sum(map(len, id_lists)), len(id_lists))
        ctx = self._ctx
        unit = _Unit("score", prefix, [])
        for s in range(len(id_lists)):
            live = self._new_live(RolloutHeader("score", f"s{s}", s, 0), [])
            live.seq = s
            unit.rollouts.append(live)
        starts = self._prepare_kv([unit])
        first_row = self._decode_prefixes([unit], starts, None, {"prompt_s": 0.0})[0]
        # rows[(s, t)]: logits that predict token t of response s
        pending_rows: list[tuple[int, int, np.ndarray]] = [(s, 0, first_row) for s in range(len(id_lists))]
        flat = [(ids[t], len(prefix) + t, s, t + 1 < len(ids)) for s, ids in enumerate(id_lists) for t in range(len(ids))]
        out: list[list[Optional[TokenInfo]]] = [[None] * len(ids) for ids in id_lists]

        def flush(rows):
            for c in range(0, len(rows), SCORE_ROWS):
                part = rows[c: c + SCORE_ROWS]
                targets = np.array([id_lists[s][t] for s, t, _ in part], dtype=np.int64)
                stats, lps, ranks = score_rows(np.stack([row for _, _, row in part]), targets, top_n, self._ws)
                for j, (s, t, _) in enumerate(part):
                    out[s][t] = self._token_info(int(targets[j]), lps[j], None, stats.entropy[j], ranks[j],
                                                 stats.top_ids[j], stats.top_logprobs[j])

        for c in range(0, len(flat), ctx.n_batch):
            chunk = flat[c: c + ctx.n_batch]
            ctx.decode([f[0] for f in chunk], [f[1] for f in chunk], [[f[2]] for f in chunk], [f[3] for f in chunk])
            wanted = [j for j, f in enumerate(chunk) if f[3]]
            if wanted:
                block = ctx.logits_rows(wanted)
                for j, row in zip(wanted, block):
                    s = chunk[j][2]
                    t = chunk[j][1] - len(prefix) + 1
                    pending_rows.append((s, t, np.array(row)))
            if len(pending_rows) >= SCORE_ROWS:
                flush(pending_rows)
                pending_rows = []
        flush(pending_rows)
        self._kv = {s: prefix + ids for s, ids in enumerate(id_lists)}
        return [tuple(infos) for infos in out]


def _chunks_by_unit(flat: list, size: int) -> list[list]:
    chunks, cur = [], []
    for f in flat:
        if cur and (len(cur) == size or cur[-1][0] != f[0]):
            chunks.append(cur)
            cur = []
        cur.append(f)
    if cur:
        chunks.append(cur)
    return chunks


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
