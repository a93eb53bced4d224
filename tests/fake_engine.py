"""A scripted, deterministic stand-in for explorer.core.engine.local.Engine (an EngineLike, see core/engine/protocol.py).

Same constructor, attributes and methods as the real engine, the same event protocol, real TokenInfo values: the
"model" is a fixed small vocabulary whose next-token distribution is a deterministic function of the context, so
logprobs sum to one, entropies and ranks are honest, and the same seed gives the same rollout.

Hooks for tests:
- `calls` records (method, threading.get_ident()) for every call, including each step of a generator, so a test can
  assert the engine never ran on the GUI thread.
- `hold_at_step = n`: before decode step n (0-based) the generator sets `held` and waits until `release` is set or
  the run's cancel event is set; a test holds a run mid-way without sleeping.
- `step_hook(step)`: called before every decode step (after the cancel check).
- `step_delay`: seconds to sleep per step (demos only; tests use hold_at_step).
- `fail_at_step` / `fail_with`: raise at that step (EngineError by default) to exercise error paths.
"""

from __future__ import annotations

import math
import os
import random
import threading
import time
import zlib
from typing import Callable, Iterator, Optional, Sequence, Union

from explorer.core.errors import ContextOverflowError, EngineError, ExplorerError, ModelError
from explorer.core.engine.plan import chat_messages, check_branch, check_generate, plan_continuations, raw_prompt
from explorer.core.types import (
    Event,
    GroupHeader,
    Messages,
    ModelInfo,
    Query,
    QueryGroup,
    Rollout,
    RolloutFinished,
    RolloutHeader,
    RunFinished,
    RunStarted,
    SamplingParams,
    Score,
    Timings,
    TokenBatch,
    TokenEvent,
    TokenInfo,
    TopLogprob,
    ValueStart,
)

WORDS = (
    " The", " Atlantic", " Pacific", " Indian", " Ocean", " is", " the", " largest", " ocean", " on", " Earth",
    ".", ",", " It", " covers", " about", " a", " third", " of", " surface", "\n", " Here", " some", " Python",
    " code", ":", "\n```python", "\ndef", " hello", "():", "\n    print", "(\"hi\")", "\n```", " Sure", "!",
)
CHARS = tuple(chr(c) for c in range(32, 127))
EOS = "</s>"
VOCAB: tuple[str, ...] = WORDS + CHARS + (EOS,)
EOS_ID = len(VOCAB) - 1
FAKE_BAND = 0.25  # the band a fake engine without exact decoding reports (ModelInfo.logprob_band)
_WORD_IDS = range(len(WORDS))
_BY_TEXT = {text: i for i, text in enumerate(VOCAB) if text != EOS}


def tokenize(text: str) -> tuple[int, ...]:
    """Greedy longest match over the vocabulary; any character outside it becomes '?'."""
    ids: list[int] = []
    i = 0
    longest = max(len(t) for t in _BY_TEXT)
    while i < len(text):
        for n in range(min(longest, len(text) - i), 0, -1):
            piece = text[i:i + n]
            if piece in _BY_TEXT:
                ids.append(_BY_TEXT[piece])
                i += n
                break
        else:
            ids.append(_BY_TEXT["?"])
            i += 1
    return tuple(ids)


def raw_logprobs(context: Sequence[int], generated: int = 0) -> list[float]:
    """log pi(. | context): words are likely, single characters rare, end-of-text likelier as the response grows
    (`generated` tokens so far), so short runs rarely stop early and long ones do end."""
    rng = random.Random(zlib.crc32(repr(tuple(context[-6:])).encode()) ^ len(context))
    logits = [rng.gauss(0.0, 1.6) + 2.0 for _ in WORDS] + [rng.gauss(-4.0, 1.0) for _ in CHARS]
    logits.append(-8.0 + 0.4 * generated)
    top = max(logits)
    log_z = top + math.log(math.fsum(math.exp(x - top) for x in logits))
    return [x - log_z for x in logits]


def _entropy(logprobs: Sequence[float]) -> float:
    return -math.fsum(math.exp(lp) * lp for lp in logprobs)


def _token_info(token_id: int, logprobs: Sequence[float], sampling_logprob: Optional[float], top_n: int) -> TokenInfo:
    order = sorted(range(len(logprobs)), key=lambda i: (-logprobs[i], i))
    text = VOCAB[token_id]
    top = tuple(TopLogprob(i, VOCAB[i], VOCAB[i].encode(), logprobs[i]) for i in order[:top_n])
    return TokenInfo(id=token_id, token=text, bytes=text.encode(), logprob=logprobs[token_id],
                     sampling_logprob=sampling_logprob, entropy=_entropy(logprobs), rank=order.index(token_id) + 1,
                     top=top)


def _sample(logprobs: Sequence[float], params: SamplingParams, rng: random.Random) -> tuple[int, float]:
    """Temperature then top-k (the fake's sampler chain); returns the token and its log-probability under it."""
    order = sorted(range(len(logprobs)), key=lambda i: (-logprobs[i], i))
    if params.temperature == 0:
        return order[0], 0.0
    kept = order[:params.top_k] if params.top_k > 0 else order
    scaled = [logprobs[i] / params.temperature for i in kept]
    top = max(scaled)
    weights = [math.exp(x - top) for x in scaled]
    total = math.fsum(weights)
    pick = rng.choices(range(len(kept)), weights=weights)[0]
    return kept[pick], math.log(weights[pick] / total)


class _Live:
    def __init__(self, header: RolloutHeader, context: list[int], rng: random.Random):
        self.header = header
        self.context = context
        self.rng = rng
        self.tokens: list[TokenInfo] = list(header.prefix)
        self.text = header.prefix_text
        self.new_tokens = 0
        self.finish: Optional[str] = None

    def rollout(self) -> Rollout:
        h = self.header
        return Rollout(id=h.rollout_id, index=h.index, seed=h.seed, text=self.text, tokens=tuple(self.tokens),
                       finish_reason=self.finish, parent_id=h.parent_id, branch_position=h.branch_position,
                       value_position=h.value_position)


class FakeEngine:
    """See the module docstring. Paths that exist must start with the GGUF magic; "fake:..." paths need no file."""

    n_layers = 4

    def __init__(self, model_path: str, n_gpu_layers: Optional[int] = None, n_ctx: Optional[int] = None,
                 exact: bool = True):
        self.calls: list[tuple[str, int]] = []
        self._record("__init__")
        path = str(model_path)
        if os.path.exists(path):
            with open(path, "rb") as f:
                if f.read(4) != b"GGUF":
                    raise ModelError(f"{path}: not a GGUF file (the first bytes are not 'GGUF')")
            size = os.path.getsize(path)
        elif path.startswith("fake:"):
            size = 0
        else:
            raise ModelError(f"{path}: no such file")
        self.model_path = path
        self.closed = False
        self.hold_at_step: Optional[int] = None
        self.held = threading.Event()
        self.release = threading.Event()
        self.step_hook: Optional[Callable[[int], None]] = None
        self.step_delay = 0.0
        self.fail_at_step: Optional[int] = None
        self.fail_with: Optional[BaseException] = None
        self._info = ModelInfo(
            path=path, name=os.path.splitext(os.path.basename(path))[0] or path, architecture="fake",
            n_params=1_000_000, n_vocab=len(VOCAB), n_ctx=n_ctx or 2048, file_size=size,
            fingerprint=f"{zlib.crc32(path.encode()):016x}", chat_template=True, n_gpu_layers=0,
            gpu_offload=False, llama_cpp_python=None, quantization="F32", n_ctx_train=2048, n_layers=self.n_layers,
            backend="CPU", system_info="fake engine", exact=exact,
            logprob_band=None if exact else FAKE_BAND,
        )

    # -- bookkeeping -----------------------------------------------------------------------------------------------
    def _record(self, name: str) -> None:
        self.calls.append((name, threading.get_ident()))

    def threads(self) -> set[int]:
        return {ident for _, ident in self.calls}

    def _check_open(self) -> None:
        if self.closed:
            raise EngineError("the engine is closed")

    # -- the engine API --------------------------------------------------------------------------------------------
    @property
    def info(self) -> ModelInfo:
        self._record("info")
        return self._info

    def uses_chat(self, chat: bool) -> bool:
        return chat  # the fake always has a chat template

    def format_prompt(self, query: str, chat: bool = True, system: Optional[str] = None,
                      messages: Messages = ()) -> tuple[str, tuple[int, ...]]:
        self._record("format_prompt")
        if chat:
            parts = [f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n"
                     for m in chat_messages(query, system, messages)]
            parts.append("<|im_start|>assistant\n")
            prompt = "".join(parts)
        else:
            prompt = raw_prompt(query, None, messages) if messages else query
        return prompt, tokenize(prompt)

    def generate(self, queries: Sequence[Union[Query, str]], k: int, params: SamplingParams,
                 cancel: Optional[threading.Event] = None, chat: bool = True,
                 system: Optional[str] = None) -> Iterator[Event]:
        self._record("generate")
        return self._generate(queries, k, params, cancel, chat, system)

    def _generate(self, queries, k, params, cancel, chat, system) -> Iterator[Event]:
        self._record("generate.start")
        self._check_open()
        groups, lives = [], []
        for qi, query in enumerate(check_generate(queries, k, params)):
            prompt, ids = self.format_prompt(query.text, chat, system, messages=query.messages)
            if k * (len(ids) + params.max_tokens) > self._info.n_ctx:
                raise ContextOverflowError(
                    f"query {qi + 1}: {k} rollouts x ({len(ids)} prompt + {params.max_tokens} new tokens) do not fit "
                    f"the context of {self._info.n_ctx} tokens")
            gid = query.group_id or f"q{qi}"
            groups.append(GroupHeader(gid, query.text, chat, prompt, ids, query.reference_answer, query.columns,
                                      query.messages))
            for i in range(k):
                header = RolloutHeader(gid, f"{gid}.r{i}", i, params.seed + i)
                lives.append(_Live(header, list(ids), random.Random(params.seed + i)))
        yield RunStarted(tuple(groups), tuple(lv.header for lv in lives), params, len(lives) * params.max_tokens)
        yield from self._decode(lives, params, cancel)

    def branch(self, group: QueryGroup, rollout_id: str, position: int, forced_token: Optional[int] = None,
               k: int = 1, params: Optional[SamplingParams] = None,
               cancel: Optional[threading.Event] = None) -> Iterator[Event]:
        self._record("branch")
        return self._branch(group, rollout_id, position, forced_token, k, params, cancel)

    def _branch(self, group, rollout_id, position, forced_token, k, params, cancel) -> Iterator[Event]:
        self._record("branch.start")
        self._check_open()
        params, parent, kept = check_branch(group, rollout_id, position, k, params)  # the engines' own checks
        prefix = list(kept)
        context = list(group.prompt_token_ids) + [t.id for t in prefix]
        if forced_token is not None:
            if not 0 <= forced_token < len(VOCAB):
                raise ExplorerError(f"token id {forced_token} is outside the vocabulary")
            prefix.append(_token_info(forced_token, raw_logprobs(context, len(prefix)), None, params.top_n))
            context.append(forced_token)
        prefix_text = "".join(t.token for t in prefix)
        first = max((r.index for r in group.rollouts), default=-1) + 1
        lives = []
        for i in range(first, first + k):
            header = RolloutHeader(group.id, f"{group.id}.r{i}", i, params.seed + i, rollout_id, position,
                                   tuple(prefix), prefix_text)
            lives.append(_Live(header, list(context), random.Random(params.seed + i)))
        gh = GroupHeader.of(group)
        yield RunStarted((gh,), tuple(lv.header for lv in lives), params, k * params.max_tokens, is_branch=True)
        yield from self._decode(lives, params, cancel)

    def continuations(self, group: QueryGroup, starts: Sequence[ValueStart], m: int,
                      params: Optional[SamplingParams] = None,
                      cancel: Optional[threading.Event] = None) -> Iterator[Event]:
        self._record("continuations")
        return self._continuations(group, starts, m, params, cancel)

    def _continuations(self, group, starts, m, params, cancel) -> Iterator[Event]:
        self._record("continuations.start")
        self._check_open()

        def forced_info(parent, position, prefix, token, top_n):
            return _token_info(token, raw_logprobs(prefix, position), None, top_n)

        plan = plan_continuations(group, starts, m, params, len(VOCAB), self._check_fits, forced_info,
                                  lambda tokens: "".join("" if t.id == EOS_ID else t.token for t in tokens),
                                  lambda token: token == EOS_ID)
        lives, ended = [], []
        for unit in plan.units:
            for h in unit.rollouts:
                live = _Live(h, list(unit.prefix), random.Random(h.seed))
                if unit.ends:
                    live.finish = "stop"
                    ended.append(live)
                else:
                    lives.append(live)
        yield RunStarted((plan.group,), plan.rollouts, plan.params, len(plan.rollouts) * plan.params.max_tokens,
                         is_branch=True)
        for live in ended:
            yield RolloutFinished(live.header.group_id, live.rollout())
        yield from self._decode(lives, plan.params, cancel)

    def _check_fits(self, n_prefix: int, max_tokens: int, what: str) -> None:
        if n_prefix + max_tokens > self._info.n_ctx:
            raise ContextOverflowError(f"{what} ({n_prefix} tokens) + max tokens ({max_tokens}) exceeds the context "
                                       f"of {self._info.n_ctx} tokens")

    def _decode(self, lives: list[_Live], params: SamplingParams, cancel: Optional[threading.Event]) -> Iterator[Event]:
        start = time.perf_counter()
        produced = 0
        step = 0
        cancelled = False
        while any(lv.finish is None for lv in lives):
            if cancel is not None and cancel.is_set():
                cancelled = True
                break
            self._before_step(step, cancel)
            if cancel is not None and cancel.is_set():
                cancelled = True
                break
            self._record("decode")
            batch, done = [], []
            for lv in lives:
                if lv.finish is not None:
                    continue
                lps = raw_logprobs(lv.context, len(lv.tokens))
                token_id, slp = _sample(lps, params, lv.rng)
                info = _token_info(token_id, lps, slp, params.top_n)
                position = len(lv.tokens)
                lv.tokens.append(info)
                lv.context.append(token_id)
                lv.new_tokens += 1
                text = "" if token_id == EOS_ID else info.token
                lv.text += text
                batch.append(TokenEvent(lv.header.group_id, lv.header.rollout_id, position, info, text))
                if token_id == EOS_ID:
                    lv.finish = "stop"
                elif any(s in lv.text for s in params.stop):
                    lv.finish = "stop_string"
                elif lv.new_tokens >= params.max_tokens:
                    lv.finish = "length"
                if lv.finish is not None:
                    done.append(lv)
            produced += len(batch)
            step += 1
            yield TokenBatch(tuple(batch))
            for lv in done:
                yield RolloutFinished(lv.header.group_id, lv.rollout())
        for lv in lives:
            if lv.finish is None:
                lv.finish = "cancelled"
                yield RolloutFinished(lv.header.group_id, lv.rollout())
        elapsed = time.perf_counter() - start
        yield RunFinished(Timings(0.0, 0.0, elapsed, produced / elapsed if elapsed > 0 else 0.0), cancelled)

    def _before_step(self, step: int, cancel: Optional[threading.Event]) -> None:
        if self.fail_at_step is not None and step == self.fail_at_step:
            raise self.fail_with or EngineError(f"llama_decode failed at step {step} (scripted)")
        if self.hold_at_step is not None and step == self.hold_at_step:
            self.held.set()
            while not self.release.wait(0.005):  # poll so a cancel still ends the hold promptly
                if cancel is not None and cancel.is_set():
                    break
        if self.step_hook is not None:
            self.step_hook(step)
        if self.step_delay:
            time.sleep(self.step_delay)

    def score(self, query: str, responses: Sequence[str], chat: bool = True, system: Optional[str] = None,
              top_n: int = 5) -> tuple[Score, ...]:
        self._record("score")
        self._check_open()
        _, prompt_ids = self.format_prompt(query, chat, system)
        scores = []
        for response in responses:
            context = list(prompt_ids)
            tokens = []
            for position, token_id in enumerate(tokenize(response)):
                tokens.append(_token_info(token_id, raw_logprobs(context, position), None, top_n))
                context.append(token_id)
            scores.append(Score(response, tuple(tokens)))
        return tuple(scores)

    def close(self) -> None:
        self._record("close")
        self.closed = True
