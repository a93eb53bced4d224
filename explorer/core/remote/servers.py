"""What each serving engine's HTTP API looks like: the capability probe and one dialect per server kind.

A dialect turns our requests (a prompt as token ids, the sampler, a seed, top-N) into that server's request body and
its streamed chunks back into RawTokens; it also tokenizes, detokenizes, applies the chat template and scores where
the server can. remote_engine.py drives them; nothing here knows about rollouts or events.

Facts each dialect relies on (from the servers' own docs and code):
- vLLM: /v1/completions takes the prompt as token ids, `logprobs: N` (capped by --max-logprobs, default 20; above it
  is a 400), `return_tokens_as_token_ids` gives "token_id:N" strings, `prompt_logprobs` scores the prompt (dicts
  keyed by token id with logprob and rank), a per-request `seed`; /tokenize takes `messages` with
  `add_generation_prompt` (the server's own chat template); logprobs are raw by default (--logprobs-mode
  raw_logprobs). Its `text_offset` counts the "token_id:N" strings with that option, so it is not used.
- SGLang: native /generate with `input_ids`, `return_logprob`, `logprob_start_len`, `top_logprobs_num`,
  `return_text_in_logprobs`; streamed meta_info lists are cumulative; /tokenize and /detokenize. Its logprobs are
  taken after temperature scaling unless the server runs with SGLANG_RETURN_ORIGINAL_LOGPROB, so they are marked
  processed. Untested here (no CPU build on PyPI).
- llama-server: /completion takes token ids, `n_probs` gives ids, bytes and raw logprobs (post_sampling_probs off),
  /tokenize, /detokenize, /apply-template, /props (n_ctx, chat template, slots); no prompt logprobs, so no scoring.
- llama_cpp.server (llama-cpp-python): one choice per request, tokens as strings only, refuses token-id prompts,
  /extras/tokenize (adds BOS, parses special tokens); its echo prompt logprobs read each row one position late
  (row i holds the distribution that predicts token i+1, evaluated at token i), so it cannot score. A new request
  interrupts the one streaming (interrupt_requests defaults to on) and it runs one at a time: one request at once.
"""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import dataclass, field
from typing import AsyncIterator, Optional, Sequence
from urllib.parse import urlsplit, urlunsplit

import httpx

from explorer.core.errors import ExplorerError
from explorer.core.types import SamplingParams

API_KEY_ENV = "ROLLOUT_EXPLORER_API_KEY"
RETRY_STATUSES = (429, 503)  # the server asks us to come back; nothing was generated yet, so retrying is safe
MAX_ATTEMPTS = 4
MAX_RETRY_WAIT_S = 10.0


class ServerError(ExplorerError):
    """A server that cannot be reached, refuses us, or breaks a stream."""


@dataclass
class RawToken:
    """One token as a server reported it, before remote_engine.py turns it into a TokenInfo."""

    id: Optional[int]  # None where the server sends only text (llama_cpp.server)
    text: Optional[str]  # None where the server sends only ids (vLLM with token ids)
    logprob: float
    top: list[tuple[Optional[int], Optional[str], float]] = field(default_factory=list)
    delta: str = ""  # what this token adds to the rollout text
    bytes: Optional[bytes] = None
    rank: Optional[int] = None  # exact rank, where the server gives one


@dataclass(frozen=True)
class ServerFacts:
    url: str  # without credentials
    kind: str
    version: Optional[str]
    model: str
    n_ctx: Optional[int]
    max_logprobs: Optional[int]
    token_ids: bool
    prompt_logprobs: bool
    multiple_choices: bool  # n > 1 in one request (not used: rollout i needs its own seed)
    tokenize: bool
    chat_template: bool
    logprob_kind: str
    max_concurrency: Optional[int]

    def summary(self) -> str:
        def yn(v: bool) -> str:
            return "yes" if v else "no"

        return (f"{self.kind} {self.version or '(version unknown)'} at {self.url}, model {self.model}; "
                f"context {self.n_ctx or 'unknown'}; max logprobs {self.max_logprobs or 'unknown'}; "
                f"token ids {yn(self.token_ids)}; prompt logprobs {yn(self.prompt_logprobs)}; n>1 "
                f"{yn(self.multiple_choices)}; tokenize {yn(self.tokenize)}; chat template "
                f"{yn(self.chat_template)}; logprobs {self.logprob_kind}")


def display_url(url: str) -> str:
    """The URL as it may be shown and saved: no user, password, query or fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def is_server_spec(spec: str) -> bool:
    """A model "path" that names a server: http(s)://HOST[:PORT][/base][#model]."""
    return spec.strip().lower().startswith(("http://", "https://"))


def server_spec(url: str, model: Optional[str] = None) -> str:
    """URL and (optionally) one of the server's models in one string, as the window's model picker passes it."""
    return url + (f"#{model}" if model else "")


def parse_server_spec(spec: str) -> tuple[str, Optional[str]]:
    url, _, model = spec.strip().partition("#")
    return url, model or None


def check_url(url: str) -> str:
    url = url.strip()
    parts = urlsplit(url)
    try:
        parts.port
    except ValueError:
        raise ExplorerError(f"{url!r} is not a server URL: its port is not a number") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ExplorerError(f"{url!r} is not a server URL (expected http://HOST:PORT or https://...)")
    return url.rstrip("/")


def _detail(resp: httpx.Response) -> str:
    """The server's own words about a refusal, shortened to one line."""
    try:
        body = resp.json()
    except (ValueError, UnicodeDecodeError):
        body = resp.text
    msg = body
    if isinstance(body, dict):
        err = body.get("error", body.get("detail", body.get("message", body)))
        msg = err.get("message", err) if isinstance(err, dict) else err
    text = " ".join(str(msg).split())
    return text[:200] + ("..." if len(text) > 200 else "")


class Http:
    """The one httpx client of a connection: auth, timeouts, errors worded for a user, retries where safe."""

    def __init__(self, url: str, api_key: Optional[str], timeout_s: float, max_connections: int):
        self.url = check_url(url)
        self.shown = display_url(self.url)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout_s = timeout_s
        self.client = httpx.AsyncClient(
            base_url=self.url, headers=headers, trust_env=False,
            timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections))

    async def aclose(self) -> None:
        await self.client.aclose()

    def fail(self, what: str) -> ServerError:
        return ServerError(f"{self.shown}: {what}")

    def status_error(self, resp: httpx.Response, path: str, model: Optional[str] = None) -> ServerError:
        code, detail = resp.status_code, _detail(resp)
        said = f": {detail}" if detail else ""
        if code in (401, 403):
            return self.fail(f"the server refused the API key (HTTP {code}{said}); pass --api-key KEY or set "
                             f"{API_KEY_ENV}")
        if code == 404 and model and model.lower() in detail.lower():
            return self.fail(f"the server has no model {model!r} (HTTP 404{said}); see --server-model")
        if code == 404:
            return self.fail(f"{path} is not there (HTTP 404{said}): is this the right server and URL?")
        if code == 429:
            return self.fail(f"the server is rate-limiting requests (HTTP 429{said}), still after "
                             f"{MAX_ATTEMPTS} tries; try again later or lower k")
        if code >= 500:
            return self.fail(f"the server failed (HTTP {code}{said})")
        return self.fail(f"the server refused the request to {path} (HTTP {code}{said})")

    def transport_error(self, exc: Exception, path: str) -> ServerError:
        if isinstance(exc, httpx.ConnectError):
            return self.fail("cannot reach the server (connection refused or no such host): is it running?")
        if isinstance(exc, httpx.TimeoutException):
            return self.fail(f"no answer from {path} within {self.timeout_s:g} s (timeout)")
        if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError)):
            return self.fail(f"the server closed the connection during {path} (it stopped or crashed?)")
        return self.fail(f"{path} failed: {type(exc).__name__}: {exc}")

    @staticmethod
    def _retry_wait(attempt: int, resp: Optional[httpx.Response]) -> float:
        wait = 0.25 * (2 ** attempt)
        if resp is not None:
            try:
                wait = max(wait, float(resp.headers.get("retry-after", 0)))
            except ValueError:
                pass
        return min(wait, MAX_RETRY_WAIT_S)

    async def request(self, method: str, path: str, body: Optional[dict] = None, model: Optional[str] = None,
                      allow: Sequence[int] = ()) -> tuple[int, object]:
        """(status, JSON body); statuses in `allow` come back instead of raising (a probe's 404)."""
        for attempt in range(MAX_ATTEMPTS):
            try:
                resp = await self.client.request(method, path, json=body)
            except httpx.ConnectError as exc:
                await self._wait_to_reconnect(attempt, exc, path)
                continue
            except httpx.HTTPError as exc:
                raise self.transport_error(exc, path) from None
            if resp.status_code in RETRY_STATUSES and attempt + 1 < MAX_ATTEMPTS:
                await asyncio.sleep(self._retry_wait(attempt, resp))
                continue
            if resp.status_code in allow:
                return resp.status_code, None
            if resp.status_code >= 400:
                raise self.status_error(resp, path, model)
            try:
                return resp.status_code, resp.json()
            except ValueError:
                raise self.fail(f"{path} answered with something that is not JSON") from None
        raise AssertionError("unreachable")

    async def stream(self, path: str, body: dict, model: Optional[str]) -> AsyncIterator[dict]:
        """The JSON objects of a server-sent-event stream, until [DONE] or its end. Retries only before the first
        event (nothing generated yet, and the request carries its seed, so a retry asks for the same thing)."""
        for attempt in range(MAX_ATTEMPTS):
            try:
                async with self.client.stream("POST", path, json=body) as resp:
                    if resp.status_code in RETRY_STATUSES and attempt + 1 < MAX_ATTEMPTS:
                        await resp.aread()
                        await asyncio.sleep(self._retry_wait(attempt, resp))
                        continue
                    if resp.status_code >= 400:
                        await resp.aread()
                        raise self.status_error(resp, path, model)
                    async for event in self._events(resp, path):
                        yield event
                    return
            except httpx.ConnectError as exc:
                await self._wait_to_reconnect(attempt, exc, path)
            except httpx.HTTPError as exc:
                raise self.transport_error(exc, path) from None

    async def _wait_to_reconnect(self, attempt: int, exc: httpx.ConnectError, path: str) -> None:
        """A refused connection is retried with backoff (nothing reached the server); after the last attempt it is
        the user's one-line error."""
        if attempt + 1 >= MAX_ATTEMPTS:
            raise self.transport_error(exc, path) from None
        await asyncio.sleep(self._retry_wait(attempt, None))

    async def _events(self, resp: httpx.Response, path: str) -> AsyncIterator[dict]:
        data: list[str] = []
        async for line in resp.aiter_lines():
            if line.startswith("data:"):
                data.append(line[5:].lstrip(" "))
                if data[0] != "[DONE]":
                    # one JSON object per data line is what every server here sends: parse at once, no waiting for
                    # the blank line (sse-starlette separates events by a single newline)
                    yield self._parse_event("\n".join(data), path)
                    data = []
                    continue
            if data and data[0] == "[DONE]":
                return
            # comments (": ping"), event names and blank lines carry nothing we use
        if data and data[0] == "[DONE]":
            return

    def _parse_event(self, text: str, path: str) -> dict:
        try:
            obj = json.loads(text)
        except ValueError:
            raise self.fail(f"malformed stream from {path}: an event is not JSON ({text[:60]!r})") from None
        if not isinstance(obj, dict):
            raise self.fail(f"malformed stream from {path}: an event is not a JSON object")
        if "error" in obj and not obj.get("choices"):
            raise self.fail(f"the server reported an error mid-stream: {_detail_of(obj)}")
        return obj


def _detail_of(obj: dict) -> str:
    err = obj.get("error")
    msg = err.get("message", err) if isinstance(err, dict) else err
    return " ".join(str(msg).split())[:200]


def _sampler(params: SamplingParams) -> dict:
    return {"temperature": params.temperature, "top_p": params.top_p, "min_p": params.min_p}


def _num(x) -> float:
    return float(x) if isinstance(x, (int, float)) and x is not None else -math.inf


# ---------------------------------------------------------------------------------------------------------------
# Dialects


class Dialect:
    kind = ""
    gives_ids = True
    text_prompts = False  # the server takes the prompt only as text
    logprob_kind = "raw"
    completion_path = ""

    def __init__(self, http: Http, model: str):
        self.http = http
        self.model = model

    async def tokenize(self, text: str, add_special: bool, parse_special: bool) -> list[int]:
        raise NotImplementedError

    async def detokenize(self, ids: Sequence[int]) -> str:
        raise NotImplementedError

    async def chat_prompt(self, messages: list[dict]) -> tuple[str, list[int]]:
        raise ExplorerError(f"{self.http.shown}: {self.kind} offers no chat-template endpoint: use raw mode")

    def completion(self, prompt_ids: Sequence[int], prompt_text: Optional[str], params: SamplingParams,
                   seed: int) -> dict:
        raise NotImplementedError

    def parse(self, event: dict, state: dict) -> tuple[list[RawToken], Optional[str]]:
        """The tokens an event adds and the finish reason (ours: stop / length / stop_string) when it ends."""
        raise NotImplementedError

    async def score(self, prefix: Sequence[int], ids: Sequence[int], top_n: int) -> list[RawToken]:
        raise ExplorerError(f"{self.http.shown}: scoring is unavailable on {self.kind}: it returns no log-"
                            "probabilities of a given text")


def _id_key(key: str) -> int:
    """vLLM's "token_id:123" (return_tokens_as_token_ids) or a bare "123" (prompt_logprobs keys)."""
    return int(key.rsplit(":", 1)[-1])


class _ModelTokenizerDialect(Dialect):
    """vLLM's and SGLang's shared /tokenize {model, prompt, add_special_tokens} and /detokenize {model, tokens}."""

    async def tokenize(self, text, add_special, parse_special):
        _, body = await self.http.request("POST", "/tokenize", {"model": self.model, "prompt": text,
                                                               "add_special_tokens": add_special}, self.model)
        return [int(t) for t in body["tokens"]]

    async def detokenize(self, ids):
        _, body = await self.http.request("POST", "/detokenize", {"model": self.model, "tokens": list(ids)},
                                          self.model)
        return body.get("prompt", body.get("text", ""))  # vLLM says prompt, SGLang text


class VllmDialect(_ModelTokenizerDialect):
    kind = "vllm"
    completion_path = "/v1/completions"

    async def chat_prompt(self, messages):
        _, body = await self.http.request("POST", "/tokenize", {
            "model": self.model, "messages": messages, "add_generation_prompt": True, "add_special_tokens": False},
            self.model)
        ids = [int(t) for t in body["tokens"]]
        return await self.detokenize(ids), ids

    def completion(self, prompt_ids, prompt_text, params, seed):
        return {"model": self.model, "prompt": list(prompt_ids), "max_tokens": params.max_tokens, "stream": True,
                "seed": seed, "n": 1, "logprobs": params.top_n, "return_tokens_as_token_ids": True,
                "top_k": params.top_k if params.top_k > 0 else -1, "repetition_penalty": params.repeat_penalty,
                "stop": list(params.stop) or None, "skip_special_tokens": False, **_sampler(params)}

    def parse(self, event, state):
        choice = (event.get("choices") or [{}])[0]
        lp = choice.get("logprobs") or {}
        tokens = []
        for i, key in enumerate(lp.get("tokens") or ()):
            top = (lp.get("top_logprobs") or [None] * (i + 1))[i] or {}
            tokens.append(RawToken(id=_id_key(key), text=None, logprob=_num(lp["token_logprobs"][i]),
                                   top=[(_id_key(k), None, _num(v)) for k, v in top.items()]))
        if tokens:
            tokens[-1].delta = choice.get("text") or ""
        finish = choice.get("finish_reason")
        if finish == "stop" and isinstance(choice.get("stop_reason"), str):
            finish = "stop_string"
        return tokens, finish

    async def score(self, prefix, ids, top_n):
        _, body = await self.http.request("POST", "/v1/completions", {
            "model": self.model, "prompt": list(prefix) + list(ids), "max_tokens": 1, "temperature": 0.0,
            "prompt_logprobs": top_n}, self.model)
        rows = body["choices"][0].get("prompt_logprobs") or []
        rows = rows[len(prefix): len(prefix) + len(ids)]
        if len(rows) != len(ids):
            raise self.http.fail("the server returned prompt logprobs for fewer tokens than it was sent")
        out = []
        for tok, row in zip(ids, rows):
            entries = {_id_key(k): v for k, v in (row or {}).items()}
            own = entries.get(tok)
            if own is None:
                raise self.http.fail(f"the server's prompt logprobs miss token {tok}")
            ranked = sorted(((i, e) for i, e in entries.items() if i != tok or e.get("rank", 1) <= top_n),
                            key=lambda ie: -_num(ie[1].get("logprob")))[:top_n]
            out.append(RawToken(id=tok, text=own.get("decoded_token"), logprob=_num(own.get("logprob")),
                                rank=own.get("rank"),
                                top=[(i, e.get("decoded_token"), _num(e.get("logprob"))) for i, e in ranked]))
        return out


class SglangDialect(_ModelTokenizerDialect):
    kind = "sglang"
    logprob_kind = "processed"
    completion_path = "/generate"

    def _sampling(self, params: SamplingParams, seed: Optional[int], max_new: int) -> dict:
        d = {"max_new_tokens": max_new, "top_k": params.top_k if params.top_k > 0 else -1,
             "repetition_penalty": params.repeat_penalty, **_sampler(params)}
        if params.stop:
            d["stop"] = list(params.stop)
        if seed is not None:
            d["sampling_seed"] = seed
        return d

    def completion(self, prompt_ids, prompt_text, params, seed):
        return {"input_ids": list(prompt_ids), "sampling_params": self._sampling(params, seed, params.max_tokens),
                "return_logprob": True, "top_logprobs_num": params.top_n, "logprob_start_len": -1,
                "return_text_in_logprobs": True, "stream": True}

    def parse(self, event, state):
        meta = event.get("meta_info") or {}
        lps = meta.get("output_token_logprobs") or []
        tops = meta.get("output_top_logprobs") or []
        seen = state.get("n", 0)
        text = event.get("text") or ""
        delta, state["text"] = text[len(state.get("text", "")):], text
        tokens = []
        for i in range(seen, len(lps)):
            lp, tid, ttext = (list(lps[i]) + [None, None, None])[:3]
            top = tops[i] if i < len(tops) and tops[i] else []
            tokens.append(RawToken(id=int(tid), text=ttext, logprob=_num(lp),
                                   top=[(int(t[1]), t[2] if len(t) > 2 else None, _num(t[0])) for t in top]))
        state["n"] = max(seen, len(lps))
        if tokens:
            tokens[-1].delta = delta
        fin = meta.get("finish_reason")
        finish = None
        if isinstance(fin, dict):
            kind = fin.get("type")
            if kind == "abort":
                raise self.http.fail(f"the server aborted the request: {fin.get('message', '')}")
            finish = "length" if kind == "length" else ("stop_string" if isinstance(fin.get("matched"), str)
                                                        else "stop")
        return tokens, finish

    async def score(self, prefix, ids, top_n):
        _, body = await self.http.request("POST", "/generate", {
            "input_ids": list(prefix) + list(ids), "sampling_params": self._sampling(SamplingParams(), None, 0),
            "return_logprob": True, "logprob_start_len": len(prefix), "top_logprobs_num": top_n,
            "return_text_in_logprobs": True}, self.model)
        meta = (body[0] if isinstance(body, list) else body).get("meta_info") or {}
        rows = (meta.get("input_token_logprobs") or [])[-len(ids):]
        tops = (meta.get("input_top_logprobs") or [])[-len(ids):]
        if [int(r[1]) for r in rows] != list(ids):
            raise self.http.fail("the server's input logprobs do not line up with the tokens it was sent")
        return [RawToken(id=int(r[1]), text=r[2] if len(r) > 2 else None, logprob=_num(r[0]),
                         top=[(int(t[1]), t[2] if len(t) > 2 else None, _num(t[0])) for t in (top or [])])
                for r, top in zip(rows, tops + [None] * (len(rows) - len(tops)))]


class LlamaServerDialect(Dialect):
    kind = "llama-server"
    completion_path = "/completion"

    async def tokenize(self, text, add_special, parse_special):
        _, body = await self.http.request("POST", "/tokenize", {"content": text, "add_special": add_special,
                                                               "parse_special": parse_special})
        return [int(t["id"]) if isinstance(t, dict) else int(t) for t in body["tokens"]]

    async def detokenize(self, ids):
        _, body = await self.http.request("POST", "/detokenize", {"tokens": list(ids)})
        return body["content"]

    async def chat_prompt(self, messages):
        _, body = await self.http.request("POST", "/apply-template", {"messages": messages})
        prompt = body["prompt"]
        return prompt, await self.tokenize(prompt, False, True)

    def completion(self, prompt_ids, prompt_text, params, seed):
        return {"prompt": list(prompt_ids), "n_predict": params.max_tokens, "stream": True, "seed": seed,
                "n_probs": max(1, params.top_n), "top_k": params.top_k, "repeat_penalty": params.repeat_penalty,
                "repeat_last_n": params.repeat_last_n, "stop": list(params.stop), "cache_prompt": True,
                "post_sampling_probs": False, "typical_p": 1.0, **_sampler(params)}

    def parse(self, event, state):
        tokens = []
        for p in event.get("completion_probabilities") or ():
            if "logprob" not in p:
                raise self.http.fail("this llama-server reports probabilities after sampling, not raw log-"
                                     "probabilities: update it to a build whose n_probs gives `logprob`")
            tokens.append(RawToken(id=int(p["id"]), text=p.get("token"), logprob=_num(p["logprob"]),
                                   bytes=bytes(p["bytes"]) if p.get("bytes") is not None else None,
                                   top=[(int(t["id"]), t.get("token"), _num(t.get("logprob")))
                                        for t in p.get("top_logprobs") or ()]))
        if tokens:
            tokens[-1].delta = event.get("content") or ""
        finish = None
        if event.get("stop"):
            finish = {"eos": "stop", "word": "stop_string", "limit": "length"}.get(event.get("stop_type"), "stop")
        return tokens, finish


class LlamaCppPythonDialect(Dialect):
    kind = "llama_cpp.server"
    gives_ids = False
    text_prompts = True
    completion_path = "/v1/completions"

    def __init__(self, http, model):
        super().__init__(http, model)
        self._bos: Optional[list[int]] = None

    async def tokenize(self, text, add_special, parse_special):
        # /extras/tokenize always adds the model's BOS (if it has one) and parses special tokens
        if self._bos is None:
            _, body = await self.http.request("POST", "/extras/tokenize", {"model": self.model, "input": ""})
            self._bos = [int(t) for t in body["tokens"]]
        _, body = await self.http.request("POST", "/extras/tokenize", {"model": self.model, "input": text})
        ids = [int(t) for t in body["tokens"]]
        if not add_special and self._bos and ids[: len(self._bos)] == self._bos:
            ids = ids[len(self._bos):]
        return ids

    async def detokenize(self, ids):
        _, body = await self.http.request("POST", "/extras/detokenize", {"model": self.model, "tokens": list(ids)})
        return body["text"]

    def completion(self, prompt_ids, prompt_text, params, seed):
        return {"model": self.model, "prompt": prompt_text, "max_tokens": params.max_tokens, "stream": True,
                "seed": seed, "logprobs": params.top_n, "top_k": params.top_k,
                "repeat_penalty": params.repeat_penalty, "stop": list(params.stop) or None, **_sampler(params)}

    def parse(self, event, state):
        choice = (event.get("choices") or [{}])[0]
        lp = choice.get("logprobs") or {}
        tokens = []
        for i, text in enumerate(lp.get("tokens") or ()):
            top = (lp.get("top_logprobs") or [None] * (i + 1))[i] or {}
            tokens.append(RawToken(id=None, text=text, logprob=_num(lp["token_logprobs"][i]),
                                   top=[(None, k, _num(v)) for k, v in top.items()]))
        if tokens:
            tokens[-1].delta = choice.get("text") or ""
        return tokens, choice.get("finish_reason")

    async def score(self, prefix, ids, top_n):
        raise ExplorerError(f"{self.http.shown}: scoring is unavailable on llama_cpp.server: its echo prompt "
                            "logprobs are shifted by one position (each row holds the next token's distribution), "
                            "so its scores would be wrong; use a local model or a vLLM server to score")


# ---------------------------------------------------------------------------------------------------------------
# The probe


async def probe(http: Http, wanted_model: Optional[str]) -> tuple[ServerFacts, Dialect]:
    """Find out which server this is and what it can do; refuse what we cannot use, saying why."""
    status, models = await http.request("GET", "/v1/models", allow=(404,))
    entries = [m for m in (models or {}).get("data", []) if isinstance(m, dict) and "id" in m]
    ids = [str(m["id"]) for m in entries]
    if wanted_model is not None and ids and wanted_model not in ids:
        raise http.fail(f"the server has no model {wanted_model!r} (HTTP 404); it serves: {', '.join(ids)}")
    model = wanted_model or (ids[0] if ids else "")
    entry = next((m for m in entries if m["id"] == model), {})
    n_ctx = entry.get("max_model_len") if isinstance(entry.get("max_model_len"), int) else None

    _, openapi = await http.request("GET", "/openapi.json", allow=(404, 401, 403))
    info = (openapi or {}).get("info", {}) if isinstance(openapi, dict) else {}
    if "llama.cpp python" in str(info.get("title", "")).lower():
        facts = ServerFacts(http.shown, "llama_cpp.server", info.get("version"), model, n_ctx, None, False, False,
                            False, True, False, "raw", 1)
        return facts, LlamaCppPythonDialect(http, model)
    _, props = await http.request("GET", "/props", allow=(404, 401, 403))
    if isinstance(props, dict) and "default_generation_settings" in props:
        gen = props["default_generation_settings"] or {}
        n_ctx = gen.get("n_ctx", n_ctx)
        slots = props.get("total_slots")
        model = model or str(props.get("model_path", ""))
        facts = ServerFacts(http.shown, "llama-server", props.get("build_info"), model, n_ctx, None, True, False,
                            False, True, bool(props.get("chat_template")), "raw",
                            slots if isinstance(slots, int) and slots > 0 else 1)
        return facts, LlamaServerDialect(http, model)
    _, model_info = await http.request("GET", "/get_model_info", allow=(404, 401, 403))
    if isinstance(model_info, dict) and "model_path" in model_info:
        _, server_info = await http.request("GET", "/get_server_info", allow=(404, 401, 403))
        server_info = server_info if isinstance(server_info, dict) else {}
        model = model or str(model_info["model_path"])
        facts = ServerFacts(http.shown, "sglang", server_info.get("version"), model,
                            n_ctx or server_info.get("context_length"), None, True, True, True, True, False,
                            "processed", None)
        return facts, SglangDialect(http, model)
    _, version = await http.request("GET", "/version", allow=(404, 401, 403))
    if isinstance(version, dict) and "version" in version:
        if not model:
            raise http.fail("the server lists no model at /v1/models")
        # vLLM does not publish --max-logprobs; 20 is its default, and a request above the cap is a clear 400
        facts = ServerFacts(http.shown, "vllm", str(version["version"]), model, n_ctx, 20, True, True, True, True,
                            True, "raw", None)
        return facts, VllmDialect(http, model)
    if status == 404 and not ids:
        raise http.fail("no /v1/models here, and none of vLLM's, SGLang's, llama-server's or llama_cpp.server's "
                        "endpoints answered: is this the server's base URL?")
    raise http.fail("this server is not one Rollout Explorer knows (vLLM, SGLang, llama-server, llama_cpp.server)")
