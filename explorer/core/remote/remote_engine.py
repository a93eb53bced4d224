"""RemoteEngine: the engine protocol (generate, branch, score, info, close) against a serving engine over HTTP.

Same semantics as the local Engine, said honestly where a server cannot match them:
- rollout i of a query is its own request with n = 1 and seed + i; requests run concurrently in a bounded pool
  (the server's prefix cache shares the prompt); a branch sends the prompt ids + the kept ids (+ the forced token);
- everything is keyed on token ids; a server that sends only text (llama_cpp.server) has each rollout's ids recovered
  through its tokenize endpoint when the rollout ends, and a position where that disagrees with the text the server
  streamed gets an `id_flag`; its tokens therefore arrive per rollout, not per step;
- `logprob` is what the server reports; ModelInfo.logprob_kind says whether that is the raw policy or post-sampler,
  entropy is NaN (null in JSON, entropy_kind "unavailable": only the top N is known) and a rank past the top N is the
  lower bound N + 1;
- Stop cancels the requests at once (their streams close); what arrived is kept, finish_reason "cancelled";
- a failure (unreachable, refused key, unknown model, rate limit, a stream cut or malformed, a timeout) ends the run
  with one ServerError line after every rollout's partial tokens have been handed over.

The HTTP client lives on an asyncio loop in a thread this object owns; generate() and branch() are plain generators
for the worker thread, like Engine's.
"""

from __future__ import annotations

import asyncio
import codecs
import difflib
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator, Optional, Sequence, Union

from explorer.core.errors import ExplorerError
from explorer.core.engine.plan import chat_messages, check_branch, plan_continuations, plan_generate, raw_prompt
from explorer.core.remote.servers import Http, RawToken, ServerError, probe
from explorer.core.types import (
    GroupHeader, Messages, ModelInfo, Query, QueryGroup, Rollout, RolloutFinished, RolloutHeader, RunFinished,
    RunStarted, SamplingParams, Score, Timings, TokenBatch, TokenEvent, TokenInfo, TopLogprob, ValueStart,
)

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 120.0  # longest silence a stream may keep (a long prompt on a busy server)
DEFAULT_CONCURRENCY = 64  # requests in flight at once at most, whatever k is
CANCEL_GRACE_S = 15.0  # after Stop: how long recovering a cut rollout's ids may take before it is given up


@dataclass
class _Job:
    header: RolloutHeader
    prompt_ids: list[int]
    prompt_text: Optional[str]


@dataclass
class _Live:
    header: RolloutHeader
    tokens: list[TokenInfo]
    text: str
    finish: Optional[str] = None


@dataclass
class _Run:
    """One generate/branch: the queue the loop thread fills and the tasks Stop cancels."""

    out: "queue.Queue[tuple]" = field(default_factory=queue.Queue)
    streaming: set = field(default_factory=set)  # tasks Stop may cut (not those recovering ids of what arrived)


class RemoteEngine:
    def __init__(self, url: str, api_key: Optional[str] = None, model: Optional[str] = None,
                 timeout_s: float = DEFAULT_TIMEOUT_S, max_concurrency: int = DEFAULT_CONCURRENCY):
        t0 = time.perf_counter()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="remote-engine-http", daemon=True)
        self._thread.start()
        self._http: Optional[Http] = None
        try:
            self._http = self._call(self._make_http(url, api_key, timeout_s, max_concurrency))
            self.facts, self._dialect = self._call(probe(self._http, model))
        except BaseException:
            self.close()
            raise
        cap = self.facts.max_concurrency
        self._concurrency = max(1, min(max_concurrency, cap) if cap else max_concurrency)
        self._pieces: dict[int, str] = {}  # token id -> its text, as the server detokenizes it alone
        self._single_ids: dict[str, Optional[int]] = {}  # text -> the one id it tokenizes to (None: not one)
        self.load_s = time.perf_counter() - t0

    @staticmethod
    async def _make_http(url, api_key, timeout_s, max_concurrency) -> Http:
        return Http(url, api_key, timeout_s, max_concurrency)

    def _call(self, coro, timeout: Optional[float] = None):
        """Run a coroutine on the loop thread and wait for it (from the worker thread)."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # -- facts -------------------------------------------------------------------------------------------------
    @property
    def info(self) -> ModelInfo:
        f = self.facts
        return ModelInfo(
            path=f.url, name=f.model, architecture="remote", n_params=None, n_vocab=None, n_ctx=f.n_ctx,
            file_size=0, fingerprint=f"{f.kind}:{f.model}", chat_template=f.chat_template, n_gpu_layers=0,
            gpu_offload=False, llama_cpp_python=None, quantization=None, n_ctx_train=f.n_ctx, n_layers=None,
            backend=f"{f.kind} server", system_info=f.summary(), server_url=f.url, server_kind=f.kind,
            server_version=f.version, logprob_kind=f.logprob_kind, entropy_kind="unavailable",
            server_facts=f.summary())

    def close(self) -> None:
        if self._loop.is_closed():
            return
        if self._http is not None and self._thread.is_alive():
            try:
                self._call(self._http.aclose(), timeout=5)
            except Exception:  # noqa: BLE001 -- closing must not fail the caller; the process may be ending
                log.debug("closing the HTTP client failed", exc_info=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()

    # -- prompts -----------------------------------------------------------------------------------------------
    def uses_chat(self, chat: bool) -> bool:
        return bool(chat and self.facts.chat_template)

    def format_prompt(self, query: str, chat: bool = True, system: Optional[str] = None,
                      messages: Messages = ()) -> tuple[str, tuple[int, ...]]:
        """The prompt after the server's own chat template (raw text when chat is off or it has none), and its ids
        as the server tokenizes it; messages, a dataset's conversation, replace the query (plan.chat_messages)."""
        if chat and self.facts.chat_template:
            prompt, ids = self._call(self._dialect.chat_prompt(chat_messages(query, system, messages)))
        else:
            prompt = raw_prompt(query, system, messages)
            ids = self._call(self._dialect.tokenize(prompt, True, False))
        if not ids:
            raise ExplorerError("the query is empty: there is nothing to condition on")
        return prompt, tuple(ids)

    def _check_fits(self, n_prefix: int, max_tokens: int, what: str) -> None:
        limit = self.facts.n_ctx
        if limit and n_prefix + max_tokens > limit:
            raise ExplorerError(f"{what} ({n_prefix} tokens) + max tokens ({max_tokens}) exceeds the server's "
                                f"context of {limit} tokens")

    # -- generation --------------------------------------------------------------------------------------------
    def generate(self, queries: Sequence[Union[Query, str]], k: int, params: SamplingParams,
                 cancel: Optional[threading.Event] = None, chat: bool = True,
                 system: Optional[str] = None) -> Iterator:
        """Stream k rollouts for each query (events, see types.py). Rollout i of a query uses seed + i."""
        plan = plan_generate(queries, k, params, self.uses_chat(chat), system, self.format_prompt, self._check_fits)
        jobs = [_Job(h, list(header.prompt_token_ids), header.prompt) for header, rollouts in plan for h in rollouts]
        yield RunStarted(tuple(header for header, _ in plan), tuple(j.header for j in jobs), params,
                         total_tokens=len(plan) * k * params.max_tokens)
        yield from self._run(jobs, params, cancel)

    def branch(self, group: QueryGroup, rollout_id: str, position: int, forced_token: Optional[int] = None,
               k: int = 1, params: Optional[SamplingParams] = None,
               cancel: Optional[threading.Event] = None) -> Iterator:
        """k new rollouts that keep the first `position` tokens of rollout_id, then (optionally) forced_token."""
        params, parent, kept = check_branch(group, rollout_id, position, k, params)
        prefix = list(group.prompt_token_ids) + [t.id for t in kept]
        if forced_token is not None:
            kept = kept + (self._forced_info(parent, position, prefix, forced_token, params.top_n),)
            prefix.append(forced_token)
        self._check_fits(len(prefix), params.max_tokens, "the branch prefix")
        prefix_text = self._text_of(prefix) if self._dialect.text_prompts else None
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        kept_text = "".join(decoder.decode(t.bytes) for t in kept) + decoder.decode(b"", final=True)
        first = max((r.index for r in group.rollouts), default=-1) + 1
        jobs = []
        for j in range(k):
            idx = first + j
            header = RolloutHeader(group.id, f"{group.id}.r{idx}", idx, params.seed + idx, parent_id=rollout_id,
                                   branch_position=position, prefix=kept, prefix_text=kept_text)
            jobs.append(_Job(header, prefix, prefix_text))
        gh = GroupHeader.of(group)
        yield RunStarted((gh,), tuple(j.header for j in jobs), params, total_tokens=k * params.max_tokens,
                         is_branch=True)
        yield from self._run(jobs, params, cancel)

    def continuations(self, group: QueryGroup, starts: Sequence[ValueStart], m: int,
                      params: Optional[SamplingParams] = None,
                      cancel: Optional[threading.Event] = None) -> Iterator:
        """A value run: one request per continuation (n = 1, its own seed), each sending the prompt ids + the
        prefix's ids + the token; the server's prefix cache shares what they have in common."""
        plan = plan_continuations(group, starts, m, params, self.info.n_vocab, self._check_fits, self._forced_info,
                                  self._kept_text)
        jobs = []
        for unit in plan.units:
            prompt_text = self._text_of(list(unit.prefix)) if self._dialect.text_prompts else None
            jobs += [_Job(h, list(unit.prefix), prompt_text) for h in unit.rollouts]
        yield RunStarted((plan.group,), plan.rollouts, plan.params,
                         total_tokens=len(plan.rollouts) * plan.params.max_tokens, is_branch=True)
        yield from self._run(jobs, plan.params, cancel)

    @staticmethod
    def _kept_text(kept: Sequence[TokenInfo]) -> str:
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        return "".join(decoder.decode(t.bytes) for t in kept) + decoder.decode(b"", final=True)

    def _forced_info(self, parent: Rollout, position: int, prefix: list[int], token: int, top_n: int) -> TokenInfo:
        """The forced token's facts: from the parent's own top-N at that position (the same context), else scored."""
        if position < len(parent.tokens):
            here = parent.tokens[position]
            alt = next((a for a in here.top if a.id == token), None)
            if here.id == token:
                return TokenInfo(here.id, here.token, here.bytes, here.logprob, None, here.entropy, here.rank,
                                 here.top)
            if alt is not None:
                rank = 1 + sum(1 for a in here.top if a.logprob > alt.logprob)
                return TokenInfo(token, alt.token, alt.bytes, alt.logprob, None, math.nan, rank, here.top)
        try:
            return self._infos(self._call(self._dialect.score(prefix, [token], top_n)), top_n)[0]
        except ServerError:
            raise
        except ExplorerError as exc:
            raise ExplorerError(f"token {token} is not among the top alternatives shown at position {position}, "
                                f"and its probability cannot be asked for: {exc}") from None

    def _text_of(self, ids: list[int]) -> str:
        """The text a text-only server must be sent for these ids, refused when it would not tokenize back to them
        (the server would then condition on other tokens than the ones kept)."""
        try:
            text = self._call(self._dialect.detokenize(ids))
        except ServerError as exc:
            raise ExplorerError(f"this branch cannot be sent as text (a character is cut in two?): {exc}") from None
        back = self._call(self._dialect.tokenize(text, True, True))
        if back != list(ids):
            at = next((i for i, (a, b) in enumerate(zip(back, ids)) if a != b), min(len(back), len(ids)))
            raise ExplorerError(f"{self.facts.kind} takes prompts only as text, and the kept tokens' text tokenizes "
                                f"differently from token {at} on: branching here would condition on other tokens")
        return text

    # -- scoring -----------------------------------------------------------------------------------------------
    def score(self, query: str, responses: Sequence[str], chat: bool = True, system: Optional[str] = None,
              top_n: int = 5) -> tuple[Score, ...]:
        """Teacher-forced log pi(response | query) of each response, token by token (where the server can)."""
        if not self.facts.prompt_logprobs:
            # asks the dialect anyway so the message says why this server cannot
            self._call(self._dialect.score([], [], top_n))
        _, prompt_ids = self.format_prompt(query, self.uses_chat(chat), system)

        async def all_scores():
            id_lists = [await self._dialect.tokenize(r, False, False) if r else [] for r in responses]
            return await asyncio.gather(*(self._dialect.score(list(prompt_ids), ids, top_n) if ids else _empty()
                                          for ids in id_lists))

        raws = self._call(all_scores())
        return tuple(Score(response=r, tokens=tuple(self._infos(raw, top_n))) for r, raw in zip(responses, raws))

    # -- token facts -------------------------------------------------------------------------------------------
    async def _fill_pieces(self, raws: Sequence[RawToken]) -> None:
        missing = {t.id for t in raws if t.text is None and t.id is not None}
        missing |= {i for t in raws for i, text, _ in t.top if text is None and i is not None}
        missing -= self._pieces.keys()
        if missing:
            ids = sorted(missing)
            texts = await asyncio.gather(*(self._piece(i) for i in ids))
            self._pieces.update(zip(ids, texts))

    async def _piece(self, token: int) -> str:
        try:
            return await self._dialect.detokenize([token])
        except ServerError:  # a token that is part of a character: the server cannot decode it alone
            return ""

    def _infos(self, raws: Sequence[RawToken], top_n: int, ids: Optional[Sequence[int]] = None,
               flags: Optional[Sequence[Optional[str]]] = None) -> list[TokenInfo]:
        out = []
        for j, t in enumerate(raws):
            tid = ids[j] if ids is not None else t.id
            text = t.text if t.text is not None else self._pieces.get(tid, "")
            top = []
            for i, alt_text, lp in t.top:
                if i is None:
                    i = self._single_ids.get(alt_text or "")
                    if i is None:
                        continue  # an alternative whose text is not one token: its id is unknown, so it is left out
                alt_text = alt_text if alt_text is not None else self._pieces.get(i, "")
                top.append(TopLogprob(i, alt_text, alt_text.encode("utf-8"), lp))
            top.sort(key=lambda a: -a.logprob)
            seen: set[int] = set()
            top = [a for a in top if not (a.id in seen or seen.add(a.id))][:top_n]
            rank = t.rank or 1 + sum(1 for a in top if a.logprob > t.logprob)
            data = t.bytes if t.bytes is not None else text.encode("utf-8")
            out.append(TokenInfo(id=int(tid), token=text, bytes=data, logprob=t.logprob, sampling_logprob=None,
                                 entropy=math.nan, rank=rank, top=tuple(top),
                                 id_flag=flags[j] if flags is not None else None))
        return out

    async def _recover_ids(self, raws: list[RawToken]) -> tuple[list[int], list[Optional[str]]]:
        """Ids for a rollout whose server sent only text: tokenize the whole text, and each token's text alone; a
        position where the two disagree (or where the token's text is not one token) is flagged."""
        texts = {t.text or "" for t in raws} | {alt or "" for t in raws for _, alt, _ in t.top}
        await self._learn_single_ids(texts)
        whole = await self._dialect.tokenize("".join(t.delta for t in raws), False, True)
        alone = [self._single_ids.get(t.text or "") for t in raws]
        ids: list[int] = []
        flags: list[Optional[str]] = []
        matcher = difflib.SequenceMatcher(None, alone, whole, autojunk=False)
        for op, i1, i2, j1, j2 in matcher.get_opcodes():
            if op == "insert":
                continue
            for n, i in enumerate(range(i1, i2)):
                if op == "equal":
                    ids.append(whole[j1 + n])
                    flags.append(None)
                    continue
                paired = whole[j1 + n] if op == "replace" and i2 - i1 == j2 - j1 else None
                mine = alone[i]
                guess = mine if mine is not None else paired
                if guess is None:
                    guess = whole[min(j1 + n, len(whole) - 1)] if whole else 0
                ids.append(guess)
                flags.append(f"the server sent text {raws[i].text!r}, which tokenizes "
                             f"{'to no single id' if mine is None else f'alone to {mine}'}; the whole rollout's "
                             f"text tokenizes {'to ' + str(paired) if paired is not None else 'differently'} here")
        return ids, flags

    async def _learn_single_ids(self, texts: set[str]) -> None:
        todo = sorted(t for t in texts if t and t not in self._single_ids)
        if not todo:
            return
        results = await asyncio.gather(*(self._dialect.tokenize(t, False, True) for t in todo))
        for text, ids in zip(todo, results):
            self._single_ids[text] = ids[0] if len(ids) == 1 else None

    # -- the run -----------------------------------------------------------------------------------------------
    def _run(self, jobs: list[_Job], params: SamplingParams, cancel: Optional[threading.Event]) -> Iterator:
        t0 = time.perf_counter()
        run = _Run()
        lives = {j.header.rollout_id: _Live(j.header, list(j.header.prefix), j.header.prefix_text) for j in jobs}
        self._loop.call_soon_threadsafe(self._start, run, jobs, params)
        error: Optional[BaseException] = None
        cancelled_at: Optional[float] = None
        pending = len(jobs)
        n_tokens = 0
        while pending:
            stopping = (cancel is not None and cancel.is_set()) or error is not None
            if stopping and cancelled_at is None:
                cancelled_at = time.perf_counter()
                self._loop.call_soon_threadsafe(self._cancel, run)
            if cancelled_at is not None and time.perf_counter() - cancelled_at > CANCEL_GRACE_S:
                break  # a request that ignores cancellation must not hold the run: what arrived is kept
            try:
                item = run.out.get(timeout=0.05)
            except queue.Empty:
                continue
            kind, rid = item[0], item[1]
            live = lives[rid]
            if kind == "tokens":
                events = []
                for info, delta in item[2]:
                    events.append(TokenEvent(live.header.group_id, rid, len(live.tokens), info, delta))
                    live.tokens.append(info)
                    live.text += delta
                n_tokens += len(events)
                if events:
                    yield TokenBatch(tuple(events))
            elif kind == "error":
                if error is None and not (cancel is not None and cancel.is_set()):
                    error = item[2]
            elif kind == "done":
                pending -= 1
                live.finish = item[2]
                yield RolloutFinished(live.header.group_id, self._final(live))
        if cancelled_at is not None:
            self._loop.call_soon_threadsafe(self._cancel, run)
        for live in lives.values():
            if live.finish is None:
                live.finish = "cancelled"
                yield RolloutFinished(live.header.group_id, self._final(live))
        if error is not None:
            raise error
        wall = time.perf_counter() - t0
        yield RunFinished(Timings(load_s=self.load_s, generation_s=wall, tokens_per_s=n_tokens / wall if wall else 0.0),
                          cancelled=any(lv.finish == "cancelled" for lv in lives.values()))

    @staticmethod
    def _final(live: _Live) -> Rollout:
        h = live.header
        return Rollout(id=h.rollout_id, index=h.index, seed=h.seed, text=live.text, tokens=tuple(live.tokens),
                       finish_reason=live.finish, parent_id=h.parent_id, branch_position=h.branch_position,
                       value_position=h.value_position)

    def _start(self, run: _Run, jobs: list[_Job], params: SamplingParams) -> None:
        pool = asyncio.Semaphore(self._concurrency)
        for job in jobs:
            run.streaming.add(self._loop.create_task(self._rollout(run, job, params, pool)))

    @staticmethod
    def _cancel(run: _Run) -> None:
        for task in list(run.streaming):
            task.cancel()

    async def _rollout(self, run: _Run, job: _Job, params: SamplingParams, pool: asyncio.Semaphore) -> None:
        rid = job.header.rollout_id
        held: list[RawToken] = []  # tokens of a text-only server, held until their ids are recovered
        finish = "cancelled"
        try:
            async with pool:
                try:
                    finish = await self._stream(run, job, params, held)
                except asyncio.CancelledError:
                    pass
                except ExplorerError as exc:
                    run.out.put(("error", rid, exc))
                except Exception as exc:  # noqa: BLE001 -- a bug must reach the user as a failed run; traceback logged
                    log.exception("rollout %s failed", rid)
                    run.out.put(("error", rid, exc))
                finally:
                    run.streaming.discard(asyncio.current_task())
                if held:
                    # inside the pool: llama_cpp.server cuts the stream it is sending when another request arrives
                    finish = await self._hand_over_held(run, rid, held, params.top_n, finish)
        except asyncio.CancelledError:  # Stop while waiting for a place in the pool
            finish = "cancelled"
        run.out.put(("done", rid, finish))

    async def _hand_over_held(self, run: _Run, rid: str, held: list[RawToken], top_n: int, finish: str) -> str:
        try:
            ids, flags = await asyncio.wait_for(self._recover_ids(held), CANCEL_GRACE_S)
        except (ExplorerError, asyncio.TimeoutError) as exc:
            # tokens without ids are dropped rather than given made-up ones
            run.out.put(("error", rid, ExplorerError(
                f"the ids of rollout {rid}'s {len(held)} tokens could not be recovered: {exc or 'timeout'}")))
            return "cancelled"
        run.out.put(("tokens", rid, list(zip(self._infos(held, top_n, ids, flags), (t.delta for t in held)))))
        return finish

    async def _stream(self, run: _Run, job: _Job, params: SamplingParams, held: list[RawToken]) -> str:
        d = self._dialect
        body = d.completion(job.prompt_ids, job.prompt_text, params, job.header.seed)
        state: dict = {}
        n = 0
        finished: Optional[str] = None
        # read to the stream's own end even after the finish: a response closed early costs the pooled connection
        async for event in self._http.stream(d.completion_path, body, self.facts.model):
            raws, finish = d.parse(event, state)
            finished = finished or finish
            if raws:
                n += len(raws)
                if d.gives_ids:
                    await self._fill_pieces(raws)
                    run.out.put(("tokens", job.header.rollout_id,
                                 list(zip(self._infos(raws, params.top_n), (t.delta for t in raws)))))
                else:
                    held.extend(raws)
        if finished is not None:
            return finished if finished in ("stop", "length", "stop_string") else "stop"
        hint = (" (llama_cpp.server ends the stream it is sending when another request arrives, unless started "
                "with --interrupt_requests false)" if self.facts.kind == "llama_cpp.server" else "")
        raise self._http.fail(f"the stream ended before rollout {job.header.rollout_id} finished (truncated after "
                              f"{n} tokens){hint}")


async def _empty() -> list:
    return []
