"""The rollout engine: k rollouts per query decoded together, scoring, branching, cancellation.

One engine lives on one thread. Per decode step, every active rollout of every query in the current wave advances by
one token in a single llama_decode; each query's prompt is decoded once and its KV cells are shared by all of its
rollouts (unified KV cache, prompt tokens tagged with every sequence id). Logits become raw log-probabilities,
entropies and top-N lists in numpy (sampling.py), vectorised over the batch.
"""

from __future__ import annotations

import codecs
import math
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import numpy as np

from explorer.core.engine import llama_backend as lb
from explorer.core.engine import scoring
from explorer.core.engine.exactness import PROBE_TEXT, PROBE_TOKENS, batch_band, exact_shape
from explorer.core.errors import ContextOverflowError, EngineError, ExplorerError
from explorer.core.engine.kv_cache import KVCache, Prefix
from explorer.core.models.discovery import read_gguf
from explorer.core.engine.plan import (
    chat_messages, check_branch, plan_continuations, plan_generate, raw_prompt, token_from_top,
)
from explorer.core.engine.sampling import Workspace, sample_step
from explorer.core.types import (
    GroupHeader, Messages, ModelInfo, Query, QueryGroup, Rollout, RolloutFinished, RolloutHeader, RunFinished,
    RunStarted, SamplingParams, Score, Timings, TokenBatch, TokenEvent, TokenInfo, TopLogprob, ValueStart,
)

AUTO_CTX_MIN = 4096  # cells a fresh context gets when the user does not choose
AUTO_CTX_MAX = 1 << 16
AUTO_KV_BUDGET = 1 << 30  # bytes of KV cache the automatic sizing may use


@dataclass
class _LiveRollout:
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
class _PrefixGroup:
    """One prefix (a query's prompt, or a prompt + a branch prefix) and the rollouts that continue it."""

    group_id: str
    prefix: list[int]
    rollouts: list[_LiveRollout] = field(default_factory=list)
    header: Optional[GroupHeader] = None  # the query the prefix starts with (a lock-step reference reads it)


class Engine:
    def __init__(self, model_path: Union[str, Path], n_gpu_layers: Optional[int] = None, n_ctx: Optional[int] = None,
                 n_threads: Optional[int] = None, exact: bool = True):
        """exact: batch-invariant decoding (llama_backend.MicroBatchShape): a token's logprob is the same whatever
        else shares its decode step, sampled, branched or teacher-forced."""
        t0 = time.perf_counter()
        self.path = str(model_path)
        self.gguf = read_gguf(self.path)  # refuses bad files before llama.cpp can crash on them
        self.gpu_offload = lb.gpu_offload_supported()
        if n_gpu_layers is None or n_gpu_layers < 0:
            n_gpu_layers = 999 if self.gpu_offload else 0  # 999: every layer, whatever the model has
        if not self.gpu_offload:
            n_gpu_layers = 0
        self._system_info = lb.system_info()
        self.model = lb.LlamaModel(self.path, n_gpu_layers)
        self.n_gpu_layers = min(n_gpu_layers, self.model.n_layers + 1)
        if n_ctx is not None and n_ctx < 16:
            self.model.close()
            raise ContextOverflowError(f"a context of {n_ctx} tokens is too small (at least 16)")
        self._fixed_ctx = n_ctx
        self._n_threads = n_threads
        self._exact = exact
        self._exact_shape = exact_shape(self.gguf.matrix_types, n_threads or lb.default_threads())
        self._band: Optional[float] = None  # measured when exact decoding is off
        self._ctx: Optional[lb.LlamaContext] = None
        self._kv: Optional[KVCache] = None  # what each sequence of _ctx holds; a new context gets a new one
        self._ws = Workspace(self.model.n_vocab)
        self._formatter = None
        try:
            self._ensure_context(n_ctx or min(AUTO_CTX_MIN, self._auto_cap()), 1)
            if not exact:
                self._band = self._measure_band()
        except BaseException:
            self.close()
            raise
        self.load_s = time.perf_counter() - t0

    # -- facts -------------------------------------------------------------------------------------------------
    @property
    def info(self) -> ModelInfo:
        import llama_cpp

        g = self.gguf
        return ModelInfo(
            path=self.path, name=g.name, architecture=g.architecture, n_params=self.model.n_params,
            n_vocab=self.model.n_vocab, n_ctx=self._fixed_ctx or (self._ctx.n_ctx if self._ctx else None), file_size=g.file_size,
            fingerprint=g.fingerprint, chat_template=self.model.chat_template is not None,
            n_gpu_layers=self.n_gpu_layers, gpu_offload=self.gpu_offload and self.n_gpu_layers > 0,
            llama_cpp_python=getattr(llama_cpp, "__version__", None), quantization=g.quantization,
            n_ctx_train=self.model.n_ctx_train, n_layers=self.model.n_layers,
            backend=lb.backend_name(self._system_info, self.gpu_offload and self.n_gpu_layers > 0),
            system_info=self._system_info.strip(), exact=self._exact,
            logprob_band=None if self._exact else self._band,
        )

    @property
    def exact(self) -> bool:
        return self._exact

    def set_exact(self, exact: bool) -> None:
        """Switch batch-invariant decoding on or off; the KV cache, filled under the other setting, is dropped.
        Off, the band sampled and scored logprobs may differ by is measured on this model (ModelInfo.logprob_band)."""
        if exact != self._exact:
            self._exact = exact
            if self._ctx is not None:
                self._ctx.close()
                self._ctx, self._kv = None, None
            if not exact and self._band is None:
                self._band = self._measure_band()

    def _measure_band(self) -> float:
        """How far a token's logprob moves between a decode step of one row and a teacher-forced pass, on a fixed
        text: a lower bound of what non-exact decoding does to this model on this machine."""
        ids = self.model.tokenize(PROBE_TEXT, add_special=True, parse_special=False)[: PROBE_TOKENS + 1]
        ctx = self._ensure_context(len(ids), 1)
        self._kv.forget()
        return batch_band(ctx, ids)

    @property
    def exact_shape(self) -> lb.MicroBatchShape:
        """The micro-batch shape exact decoding pads to on this model and thread count (exactness.exact_shape)."""
        return self._exact_shape

    def _micro_batch_shape(self) -> Optional[lb.MicroBatchShape]:
        return self._exact_shape if self._exact else None

    def close(self) -> None:
        if self._ctx is not None:
            self._ctx.close()
            self._ctx = None
        if self.model is not None:
            self.model.close()
            self.model = None

    # -- prompts -----------------------------------------------------------------------------------------------
    def format_prompt(self, query: str, chat: bool = True, system: Optional[str] = None,
                      messages: Messages = ()) -> tuple[str, tuple[int, ...]]:
        """The prompt text after the GGUF's own chat template (raw text when chat is off or there is none); messages,
        a dataset's conversation, replace the query (plan.chat_messages)."""
        if chat and self.model.chat_template:
            prompt = self._apply_template(chat_messages(query, system, messages))
            ids = self.model.tokenize(prompt, add_special=False, parse_special=True)
        else:
            prompt = raw_prompt(query, system, messages)
            ids = self.model.tokenize(prompt, add_special=True, parse_special=False)
        if not ids:
            raise ExplorerError("the query is empty: there is nothing to condition on")
        return prompt, tuple(ids)

    def _apply_template(self, messages: list[dict]) -> str:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        try:
            if self._formatter is None:
                m = self.model
                self._formatter = Jinja2ChatFormatter(
                    template=m.chat_template, eos_token=m.token_text(m.eos), bos_token=m.token_text(m.bos),
                    add_generation_prompt=True)
            return self._formatter(messages=messages).prompt
        except Exception as exc:  # a template is code from the file: any failure is the file's
            raise EngineError(f"{self.path}: the model's chat template failed: {type(exc).__name__}: {exc}; "
                              "use raw mode (--raw) to run without it") from exc

    def uses_chat(self, chat: bool) -> bool:
        return bool(chat and self.model.chat_template)

    # -- contexts ----------------------------------------------------------------------------------------------
    def _auto_cap(self) -> int:
        by_memory = AUTO_KV_BUDGET // max(1, self.model.kv_bytes_per_cell)
        return int(min(AUTO_CTX_MAX, max(AUTO_CTX_MIN, by_memory)))

    def _cell_cap(self) -> int:
        return self._fixed_ctx if self._fixed_ctx else self._auto_cap()

    def _position_limit(self) -> int:
        """Longest single sequence (prompt + generated): the training context, or the fixed context if smaller."""
        limit = self.model.n_ctx_train or self._cell_cap()
        return min(limit, self._fixed_ctx) if self._fixed_ctx else limit

    def _ensure_context(self, cells: int, n_seq: int) -> lb.LlamaContext:
        ctx = self._ctx
        if ctx is not None and ctx.n_ctx >= cells and ctx.n_seq >= n_seq:
            return ctx
        n_ctx = self._fixed_ctx or max(cells, ctx.n_ctx if ctx else 0)
        n_ctx = int(math.ceil(n_ctx / 256) * 256)
        n_seq = max(n_seq, ctx.n_seq if ctx else 1)
        if ctx is not None:
            ctx.close()
            self._ctx = None
        self._kv = None
        self._ctx = lb.LlamaContext(self.model, n_ctx, n_seq, self._n_threads, self._micro_batch_shape())
        self._kv = KVCache(self._ctx)
        return self._ctx

    def step_decoder(self) -> "StepDecoder":
        """A context of its own on this model (the weights are shared) that decodes tokens another engine samples."""
        return StepDecoder(self.model, self._n_threads, self._micro_batch_shape())

    def _check_fits(self, n_prefix: int, max_tokens: int, what: str, after: str = "") -> None:
        """after: what follows the prefix when it is not generated (a scored response, so no max tokens)."""
        limit = self._position_limit()
        if n_prefix + max_tokens > limit:
            if n_prefix >= limit:
                raise ContextOverflowError(f"{what} is {n_prefix} tokens long; the context holds {limit}")
            if after:
                raise ContextOverflowError(f"{what} ({n_prefix} tokens) + {after} ({max_tokens} tokens) exceeds the "
                                           f"context of {limit} tokens")
            raise ContextOverflowError(
                f"{what} ({n_prefix} tokens) + max tokens ({max_tokens}) exceeds the context of {limit} tokens; "
                f"lower max tokens to {limit - n_prefix} or less")

    def _check_vocab(self, ids: Sequence[int], what: str) -> None:
        """Token ids from elsewhere (a file, another model) must be refused here: llama.cpp only logs them."""
        bad = next((t for t in ids if not 0 <= t < self.model.n_vocab), None)
        if bad is not None:
            raise ExplorerError(f"{what} holds token id {bad}, outside this model's vocabulary "
                                f"(0..{self.model.n_vocab - 1}); was it made with another model?")

    # -- token facts -------------------------------------------------------------------------------------------
    def _top(self, ids: np.ndarray, lps: np.ndarray) -> tuple[TopLogprob, ...]:
        m = self.model
        return tuple(TopLogprob(int(i), m.token_text(int(i)), m.piece(int(i)), float(lp)) for i, lp in zip(ids, lps))

    def _token_info(self, tok: int, logprob: float, sampling_lp: Optional[float], entropy: float, rank: int,
                    top_ids, top_lps) -> TokenInfo:
        piece = self.model.piece(tok)
        return TokenInfo(id=tok, token=piece.decode("utf-8", "replace"), bytes=piece, logprob=float(logprob),
                         sampling_logprob=sampling_lp, entropy=float(entropy), rank=int(rank),
                         top=self._top(top_ids, top_lps))

    def _text_bytes(self, tok: int) -> bytes:
        """What a token adds to a rollout's text: nothing for end-of-generation and control tokens."""
        return b"" if self.model.is_eog(tok) else self.model.piece(tok, special=False)

    # -- generation --------------------------------------------------------------------------------------------
    def generate(self, queries: Sequence[Union[Query, str]], k: int, params: SamplingParams,
                 cancel: Optional[threading.Event] = None, chat: bool = True,
                 system: Optional[str] = None, follower=None) -> Iterator:
        """Stream k rollouts for each query (events, see types.py). Rollout i of a query uses seed + i.

        follower (reference.LockstepReference): a reference policy evaluated on the tokens as they are sampled; its
        facts (ref_logprob, kl, ref_top) come in the tokens themselves."""
        plan = plan_generate(queries, k, params, self.uses_chat(chat), system, self.format_prompt, self._check_fits)
        units = [_PrefixGroup(header.id, list(header.prompt_token_ids),
                              [self._new_live(h, list(header.prompt_token_ids)) for h in rollouts], header)
                 for header, rollouts in plan]
        yield RunStarted(tuple(header for header, _ in plan), tuple(r.header for u in units for r in u.rollouts),
                         params, total_tokens=len(plan) * k * params.max_tokens)
        yield from self._run(units, params, cancel, follower)

    def branch(self, group: QueryGroup, rollout_id: str, position: int, forced_token: Optional[int] = None,
               k: int = 1, params: Optional[SamplingParams] = None,
               cancel: Optional[threading.Event] = None, follower=None) -> Iterator:
        """k new rollouts that keep the first `position` tokens of rollout_id, then (optionally) forced_token."""
        params, parent, kept = check_branch(group, rollout_id, position, k, params)
        if kept and self.model.is_eog(kept[-1].id):
            raise ExplorerError(f"rollout {rollout_id} has ended at token {position - 1}: nothing follows it")
        if forced_token is not None and not 0 <= forced_token < self.model.n_vocab:
            raise ExplorerError(f"token id {forced_token} is outside the vocabulary (0..{self.model.n_vocab - 1})")
        prefix = list(group.prompt_token_ids) + [t.id for t in kept]
        self._check_vocab(prefix, f"group {group.id}'s prompt and rollout {rollout_id}")
        self._check_fits(len(prefix) + (forced_token is not None), params.max_tokens, "the branch prefix")
        if forced_token is not None:
            (forced,), held = self._score_pass(prefix, [[forced_token]], params.top_n)
            self._kv.remember(held)  # the branch's rollouts continue from the cells this pass decoded
            kept = kept + forced
            prefix.append(forced_token)
        first = max((r.index for r in group.rollouts), default=-1) + 1
        group_header = GroupHeader.of(group)
        unit = _PrefixGroup(group.id, prefix, header=group_header)
        for j in range(k):
            idx = first + j
            decoder = codecs.getincrementaldecoder("utf-8")("replace")
            prefix_text = "".join(decoder.decode(self._text_bytes(t.id)) for t in kept)
            header = RolloutHeader(group.id, f"{group.id}.r{idx}", idx, params.seed + idx, parent_id=rollout_id,
                                   branch_position=position, prefix=kept, prefix_text=prefix_text)
            live = self._new_live(header, list(prefix))
            live.tokens, live.text, live.decoder = list(kept), prefix_text, decoder
            unit.rollouts.append(live)
        yield RunStarted((group_header,), tuple(r.header for r in unit.rollouts), params,
                         total_tokens=k * params.max_tokens, is_branch=True)
        if forced_token is not None and self.model.is_eog(forced_token):
            # a forced end-of-generation ends the rollouts there: nothing may be sampled after it
            for live in unit.rollouts:
                live.finish = "stop"
                yield RolloutFinished(group.id, self._final(live))
            yield RunFinished(Timings(load_s=self.load_s))
            return
        yield from self._run([unit], params, cancel, follower)

    def continuations(self, group: QueryGroup, starts: Sequence[ValueStart], m: int,
                      params: Optional[SamplingParams] = None, cancel: Optional[threading.Event] = None) -> Iterator:
        """m continuations of each start's prefix + token (value rollouts), all in one run: the prefixes are
        prefilled as a prefix tree (the prompt and each state decoded once, shared in the KV cache by every
        continuation of them), then every continuation advances in the same decode steps."""
        plan = plan_continuations(group, starts, m, params, self.model.n_vocab, self._check_fits,
                                  self._forced_info, self._text_of, self.model.is_eog)
        params = plan.params
        units = []
        for u in plan.units:
            unit = _PrefixGroup(group.id, list(u.prefix), header=plan.group)
            for h in u.rollouts:
                live = self._new_live(h, list(u.prefix))
                live.decoder = self._decoder_after(h.prefix)
                unit.rollouts.append(live)
            units.append((u, unit))
        yield RunStarted((plan.group,), plan.rollouts, params, total_tokens=len(plan.rollouts) * params.max_tokens,
                         is_branch=True)
        for u, unit in units:  # a forced end-of-generation ends its continuations there: nothing follows it
            if u.ends:
                for live in unit.rollouts:
                    live.finish = "stop"
                    yield RolloutFinished(group.id, self._final(live))
        yield from self._run([unit for u, unit in units if not u.ends], params, cancel, shared=True)

    def _forced_info(self, parent: Rollout, position: int, prefix: list[int], token: int, top_n: int) -> TokenInfo:
        """A token forced after the parent's first `position` tokens: from the parent's own top-N there, else
        scored."""
        known = token_from_top(parent, position, token)
        if known is not None and len(known.top) >= top_n:
            return known
        (forced,), held = self._score_pass(prefix, [[token]], top_n)
        self._kv.remember(held)
        return forced[0]

    def _text_of(self, tokens: Sequence[TokenInfo]) -> str:
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        return "".join(decoder.decode(self._text_bytes(t.id)) for t in tokens)

    def _decoder_after(self, tokens: Sequence[TokenInfo]) -> codecs.IncrementalDecoder:
        """A UTF-8 decoder that has read these tokens (a character they leave split is completed by the next)."""
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        for t in tokens:
            decoder.decode(self._text_bytes(t.id))
        return decoder

    def _new_live(self, header: RolloutHeader, history: list[int]) -> _LiveRollout:
        return _LiveRollout(header=header, rng=np.random.Generator(np.random.PCG64(header.seed)), history=history,
                     tokens=list(header.prefix), text=header.prefix_text,
                     decoder=codecs.getincrementaldecoder("utf-8")("replace"))

    def _run(self, units: list[_PrefixGroup], params: SamplingParams, cancel, follower=None,
             shared: bool = False) -> Iterator:
        """shared: the units' prefixes begin alike (a value run's): prefill them as a prefix tree (KVCache)."""
        timing = {"prompt_s": 0.0, "generation_s": 0.0, "n": 0}
        cancelled = False
        for wave in self._plan_waves(units, params.max_tokens):
            if not cancelled and not (cancel is not None and cancel.is_set()):
                yield from self._run_wave(wave, params, cancel, timing, follower, shared)
            for unit in wave:  # whatever the wave left unfinished was cancelled
                for r in unit.rollouts:
                    if r.finish is None:
                        cancelled = True
                        r.finish = "cancelled"
                        yield RolloutFinished(r.header.group_id, self._final(r))
        gen_s = timing["generation_s"]
        yield RunFinished(Timings(load_s=self.load_s, prompt_s=timing["prompt_s"], generation_s=gen_s,
                                  tokens_per_s=timing["n"] / gen_s if gen_s > 0 else 0.0), cancelled=cancelled)

    def _plan_waves(self, units: list[_PrefixGroup], max_tokens: int) -> list[list[_PrefixGroup]]:
        """Pack (prefix, rollouts) into waves that fit the cell cap and the sequence limit; a query whose rollouts
        do not fit together is split across waves (its prompt is decoded once per wave)."""
        cap = self._cell_cap()
        waves, cur, cells, seqs = [], [], 0, 0
        for unit in units:
            pending = list(unit.rollouts)
            while pending:
                room = cap - cells - len(unit.prefix)
                fit = min(len(pending), lb.MAX_SEQ - seqs, room // max_tokens if room > 0 else 0)
                if fit <= 0:
                    if not cur:
                        raise ContextOverflowError(
                            f"one rollout needs {len(unit.prefix) + max_tokens} tokens; the context holds {cap}")
                    waves.append(cur)
                    cur, cells, seqs = [], 0, 0
                    continue
                cur.append(_PrefixGroup(unit.group_id, unit.prefix, pending[:fit], unit.header))
                pending = pending[fit:]
                cells += len(unit.prefix) + fit * max_tokens
                seqs += fit
        if cur:
            waves.append(cur)
        return waves

    def _run_wave(self, units: list[_PrefixGroup], params: SamplingParams, cancel, timing: dict,
                  follower=None, shared: bool = False) -> Iterator:
        n_seq = sum(len(u.rollouts) for u in units)
        cells = sum(len(u.prefix) + len(u.rollouts) * params.max_tokens for u in units)
        ctx = self._ensure_context(cells, n_seq)
        seq = 0
        for unit in units:
            for r in unit.rollouts:
                r.seq, r.pos = seq, len(unit.prefix)
                seq += 1
        t0 = time.perf_counter()
        prefix_rows = self._kv.prefill([Prefix(u.prefix, [r.seq for r in u.rollouts]) for u in units], cancel, shared)
        timing["prompt_s"] += time.perf_counter() - t0
        if prefix_rows is None:
            return
        if follower is not None and not follower.start([(u.header, u.prefix, [r.seq for r in u.rollouts])
                                                        for u in units], params.max_tokens, cancel):
            return
        active = [r for u in units for r in u.rollouts]
        logits = np.stack([prefix_rows[u] for u, unit in enumerate(units) for _ in unit.rollouts])
        self._ws.reserve(len(active))
        t0 = time.perf_counter()
        try:
            while active:
                step = sample_step(logits, params, [r.history for r in active], [r.rng for r in active], self._ws)
                facts = None if follower is None else follower.facts([r.seq for r in active], logits, step.token_ids)
                events, still = [], []
                for j, r in enumerate(active):
                    events.append(self._advance(r, j, step, params, facts[j] if facts is not None else None))
                    if r.finish is None:
                        still.append(r)
                timing["n"] += len(active)
                yield TokenBatch(tuple(events))
                for r in active:
                    if r.finish is not None:
                        yield RolloutFinished(r.header.group_id, self._final(r))
                active = still
                if not active or (cancel is not None and cancel.is_set()):
                    break
                ctx.decode([r.last for r in active], [r.pos for r in active], [[r.seq] for r in active],
                           [True] * len(active))
                if follower is not None:
                    follower.decode([r.last for r in active], [r.seq for r in active])
                for r in active:
                    r.pos += 1
                    r.last = None
                logits = ctx.logits_rows(range(len(active)))
        finally:
            timing["generation_s"] += time.perf_counter() - t0
        self._kv.remember({r.seq: r.history[: r.pos] for u in units for r in u.rollouts})  # for the next run's reuse

    def _advance(self, r: _LiveRollout, j: int, step, params: SamplingParams, comparison=None) -> TokenEvent:
        tok = int(step.token_ids[j])
        s = step.stats
        sampling_lp = float(step.sampling_logprobs[j])
        info = self._token_info(tok, step.logprobs[j], sampling_lp if math.isfinite(sampling_lp) else None,
                                s.entropy[j], step.ranks[j], s.top_ids[j], s.top_logprobs[j])
        if comparison is not None:
            # log pi_ref as a teacher-forced evaluation gives it: the recorded log pi minus the log-ratio (0 exactly
            # for a reference identical to the policy)
            info = replace(info, ref_logprob=info.logprob - comparison.log_ratio, kl=comparison.kl,
                           ref_top_id=comparison.ref_top_id,
                           ref_top=self._top([i for i, _ in comparison.ref_top], [lp for _, lp in comparison.ref_top]))
        position = len(r.tokens)
        r.tokens.append(info)
        r.history.append(tok)
        r.last = tok
        r.n_new += 1
        delta = ""
        if self.model.is_eog(tok):
            r.finish = "stop"
        else:
            delta = r.decoder.decode(self._text_bytes(tok))
            before = len(r.text)
            r.text += delta
            if params.stop:
                longest = max(len(s_) for s_ in params.stop)
                window_start = max(0, before - longest + 1)
                hits = [i for i in (r.text.find(s_, window_start) for s_ in params.stop) if i >= 0]
                if hits:
                    r.text = r.text[: min(hits)]
                    r.finish = "stop_string"
            if r.finish is None and r.n_new >= params.max_tokens:
                r.finish = "length"
        return TokenEvent(r.header.group_id, r.header.rollout_id, position, info, delta)

    def _final(self, r: _LiveRollout) -> Rollout:
        text = r.text
        if r.finish != "stop_string":
            text += r.decoder.decode(b"", final=True)  # a character cut off by the end shows as U+FFFD
        h = r.header
        return Rollout(id=h.rollout_id, index=h.index, seed=h.seed, text=text, tokens=tuple(r.tokens),
                       finish_reason=r.finish, parent_id=h.parent_id, branch_position=h.branch_position,
                       value_position=h.value_position)

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
        for batch in self._score_passes(prefix, id_lists):
            infos, held = self._score_pass(list(prefix), [list(id_lists[i]) for i in batch], top_n)
            self._kv.remember(held)  # a run or score after the same prompt reuses its cells
            for i, token_infos in zip(batch, infos):
                results[i] = token_infos
        return results

    def teacher_force(self, prefix: Sequence[int], id_lists: Sequence[Sequence[int]], sink: scoring.RowSink) -> None:
        """The raw logits row before every token of every list after prefix, handed to sink(list indices, positions,
        target ids, rows) in blocks (see scoring.teacher_force); the rows are those scoring and sampling see."""
        for batch in self._score_passes(prefix, id_lists):
            lists = [list(id_lists[i]) for i in batch]
            ctx = self._ensure_context(len(prefix) + sum(map(len, lists)), len(lists))
            index = np.array(batch, dtype=np.int64)

            def renumbered(seqs, positions, targets, rows):
                sink(index[seqs], positions, targets, rows)

            self._kv.remember(scoring.teacher_force(ctx, self._kv, list(prefix), lists, renumbered))

    def _score_passes(self, prefix: Sequence[int], id_lists: Sequence[Sequence[int]]) -> list[list[int]]:
        """The lists' indices grouped into passes, once prefix and lists are known to fit and be in the vocabulary."""
        if not prefix:
            raise ExplorerError("nothing to condition on: the prompt has no tokens")
        self._check_vocab(prefix, "the prompt")
        for i, ids in enumerate(id_lists):
            if ids:
                self._check_fits(len(prefix), len(ids), "the prompt", after=f"response {i + 1}")
                self._check_vocab(ids, "the response")
        return scoring.plan_passes(len(prefix), [len(ids) for ids in id_lists], self._cell_cap())

    def _score_pass(self, prefix: list[int], id_lists: list[list[int]],
                    top_n: int) -> tuple[list[tuple[TokenInfo, ...]], dict[int, list[int]]]:
        ctx = self._ensure_context(len(prefix) + sum(map(len, id_lists)), len(id_lists))
        return scoring.score_pass(ctx, self._kv, prefix, id_lists, top_n, self._ws, self._token_info)


class StepDecoder:
    """A second llama context on a model, fed step by step with the tokens a policy samples: a reference policy
    evaluated in lock-step with generation (reference.LockstepReference) decodes each step's tokens once, as
    generation does, instead of teacher-forcing policy and reference again after the run. Its rows are the rows
    teacher forcing gives (the policy's micro-batch shape: see llama_backend)."""

    def __init__(self, model: lb.LlamaModel, n_threads: Optional[int] = None,
                 shape: Optional[lb.MicroBatchShape] = None):
        self._model = model
        self._n_threads = n_threads
        self._shape = shape
        self._ctx: Optional[lb.LlamaContext] = None
        self._kv: Optional[KVCache] = None

    def start(self, prefixes: Sequence[Prefix], cells: int, cancel: Optional[threading.Event] = None,
              ) -> Optional[list[np.ndarray]]:
        """Decode the prefixes (each for its sequences); the rows after each, or None when cancelled."""
        n_seq = sum(len(p.seqs) for p in prefixes)
        ctx = self._ctx
        if ctx is None or ctx.n_ctx < cells or ctx.n_seq < n_seq:
            if ctx is not None:
                ctx.close()
            self._ctx = lb.LlamaContext(self._model, int(math.ceil(cells / 256) * 256), n_seq, self._n_threads,
                                        self._shape)
            self._kv = KVCache(self._ctx)
        return self._kv.prefill(prefixes, cancel)

    def decode(self, tokens: Sequence[int], positions: Sequence[int], seqs: Sequence[int]) -> np.ndarray:
        """One token per sequence at its position; the (n, V) rows after them (a copy)."""
        self._ctx.decode(list(tokens), list(positions), [[s] for s in seqs], [True] * len(tokens))
        return np.array(self._ctx.logits_rows(range(len(tokens))))

    def close(self) -> None:
        if self._ctx is not None:
            self._ctx.close()
            self._ctx = None
            self._kv = None
