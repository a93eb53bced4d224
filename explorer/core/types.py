"""Frozen value types shared by the engine, the exporters and the GUI.

Everything that crosses a thread boundary is one of these: immutable, made of tuples, safe to hand to another thread.
Log-probabilities are natural logs. `logprob` is always the raw model log-probability pi(token | context) at
temperature 1 (the policy); `sampling_logprob` is under the sampler chain that actually drew the token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Optional, Union

from explorer.core.errors import SamplingParamsError
from explorer.core.numbers import SequenceLogprob, sequence_logprob

FINISH_REASONS = ("stop", "length", "stop_string", "cancelled")


@dataclass(frozen=True)
class SamplingParams:
    """The sampler chain, applied in llama.cpp's order: repeat penalty, top-k, top-p, min-p, temperature, draw.

    top_k=0, top_p=1 and min_p=0 switch those filters off; temperature=0 is greedy decoding.
    Rollout i of a query uses seed + i.
    """

    temperature: float = 1.0
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    max_tokens: int = 128
    seed: int = 0
    top_n: int = 5
    stop: tuple[str, ...] = ()
    repeat_last_n: int = 64

    def validate(self) -> None:
        problems = []
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):
            problems.append(f"temperature must be >= 0 (got {self.temperature})")
        if self.top_k < 0:
            problems.append(f"top-k must be >= 0 (got {self.top_k})")
        if not (0 < self.top_p <= 1):
            problems.append(f"top-p must be in (0, 1] (got {self.top_p})")
        if not (0 <= self.min_p < 1):
            problems.append(f"min-p must be in [0, 1) (got {self.min_p})")
        if not (self.repeat_penalty > 0 and math.isfinite(self.repeat_penalty)):
            problems.append(f"repeat penalty must be > 0 (got {self.repeat_penalty})")
        if self.seed < 0:
            problems.append(f"seed must be >= 0 (got {self.seed})")
        if self.max_tokens < 1:
            problems.append(f"max tokens must be >= 1 (got {self.max_tokens})")
        if not (0 <= self.top_n <= 100):
            problems.append(f"top-N must be in [0, 100] (got {self.top_n})")
        if any(s == "" for s in self.stop):
            problems.append("stop strings must not be empty")
        if problems:
            raise SamplingParamsError("; ".join(problems))


@dataclass(frozen=True, slots=True)  # millions per large set: no __dict__ each
class TopLogprob:
    id: int
    token: str
    bytes: bytes
    logprob: float


@dataclass(frozen=True, slots=True)  # millions per large set: no __dict__ each
class TokenInfo:
    """One token of a rollout or of a scored response."""

    id: int
    token: str  # the token's own bytes decoded with replacement (a split UTF-8 character shows as U+FFFD here)
    bytes: bytes
    logprob: float  # raw log pi(token | prefix), temperature 1
    sampling_logprob: Optional[float]  # under the sampler that drew it; None for scored or forced tokens
    entropy: float  # entropy (nats) of the raw distribution this token was drawn from
    rank: int  # 1 = the most probable token under the raw distribution
    top: tuple[TopLogprob, ...] = ()  # top-N raw alternatives, most probable first
    # Set when the id was recovered from a server that sends no ids and re-tokenizing its text disagrees here
    id_flag: Optional[str] = None
    # With a reference policy (core/reference): log pi_ref(token | prefix) (set on every token it evaluated),
    # KL(pi || pi_ref) at this position over the whole vocabulary (nats; inf where pi_ref gives 0 to a token pi does
    # not; None where it cannot be known: a policy on a server sends no full rows), pi_ref's most probable token and
    # its top-N alternatives
    ref_logprob: Optional[float] = None
    kl: Optional[float] = None
    ref_top_id: Optional[int] = None
    ref_top: tuple[TopLogprob, ...] = ()  # pi_ref's top-N here (as many as `top`), most probable first

    @property
    def prob(self) -> float:
        return math.exp(self.logprob) if self.logprob is not None and math.isfinite(self.logprob) else 0.0

    @property
    def has_reference(self) -> bool:
        """Whether a reference policy evaluated this token (its KL may still be unknown)."""
        return self.ref_logprob is not None

    @property
    def log_ratio(self) -> Optional[float]:
        """log pi(token | prefix) - log pi_ref(token | prefix); None without reference facts (+inf where pi_ref gives
        the token 0, NaN where both do)."""
        return None if self.ref_logprob is None else self.logprob - self.ref_logprob


class _TokenSequence:
    """log pi(y|x) and friends of anything that holds `tokens` (a rollout, a scored response)."""

    tokens: tuple[TokenInfo, ...]

    @property
    def token_ids(self) -> tuple[int, ...]:
        return tuple(t.id for t in self.tokens)

    @cached_property
    def _stats(self) -> SequenceLogprob:
        # computed once: tokens never change (frozen), and headers, sorting and export all ask for these
        return sequence_logprob(t.logprob for t in self.tokens)

    @property
    def logprob(self) -> float:
        return self._stats.logprob

    @property
    def mean_logprob(self) -> Optional[float]:
        return self._stats.mean

    @property
    def perplexity(self) -> Optional[float]:
        """math.inf where exp(-mean) overflows"""
        return self._stats.perplexity

    @cached_property
    def _reference(self) -> tuple[Optional[float], Optional[float]]:
        if not self.tokens or any(t.ref_logprob is None for t in self.tokens):
            return None, None
        mean_kl = (None if any(t.kl is None for t in self.tokens)
                   else math.fsum(t.kl for t in self.tokens) / len(self.tokens))
        return math.fsum(t.ref_logprob for t in self.tokens), mean_kl

    @property
    def ref_logprob(self) -> Optional[float]:
        """log pi_ref(y|x) when every token has its reference logprob, else None"""
        return self._reference[0]

    @property
    def log_ratio(self) -> Optional[float]:
        """log pi(y|x) - log pi_ref(y|x)"""
        ref = self._reference[0]
        return None if ref is None else self.logprob - ref

    @property
    def mean_kl(self) -> Optional[float]:
        """KL(pi || pi_ref) per token, averaged over the sequence's positions (None where the KL is unknown)"""
        return self._reference[1]

    def implicit_reward(self, beta: float) -> Optional[float]:
        """DPO's implicit reward beta * log(pi(y|x) / pi_ref(y|x))."""
        ratio = self.log_ratio
        return None if ratio is None else beta * ratio


@dataclass(frozen=True)
class Rollout(_TokenSequence):
    id: str
    index: int
    seed: int
    text: str
    tokens: tuple[TokenInfo, ...]
    finish_reason: Optional[str]  # one of FINISH_REASONS once finished; None while streaming
    parent_id: Optional[str] = None
    branch_position: Optional[int] = None
    reward: Optional[float] = None
    advantage: Optional[float] = None
    reward_error: Optional[str] = None
    # the parameters that drew it when they are not its set's (a branch run with other controls); None: the set's
    sampling: Optional[SamplingParams] = None
    # A value rollout: one of the Monte-Carlo continuations that estimate Q(prefix, token), where the prefix is its
    # first value_position tokens and the token the one at value_position. Never an i.i.d. sample of the group (never
    # in a baseline or an advantage). None: not a value rollout
    value_position: Optional[int] = None

    @property
    def is_value_rollout(self) -> bool:
        return self.value_position is not None

    @property
    def value_key(self) -> Optional[tuple[int, ...]]:
        """The ids of prefix + token its estimate is of (None for any other rollout)."""
        if self.value_position is None:
            return None
        return tuple(t.id for t in self.tokens[: self.value_position + 1])


@dataclass(frozen=True)
class Score(_TokenSequence):
    """The teacher-forced log pi(response | query) with its per-token breakdown."""

    response: str
    tokens: tuple[TokenInfo, ...]


# A prompt given as a conversation: (role, content) pairs in order, as a dataset's {"role", "content"} messages
Messages = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class ValueEstimate:
    """Q(prefix, token), estimated by Monte-Carlo (VinePPO's values from continuations): the mean reward of the value
    rollouts that continue prefix + token, with a 95 % interval (interval: "wilson" when every reward of the group is
    0 or 1, else "t", Student's t; None where it is undefined: no reward yet, or one reward for a t interval). The
    prefix is the response tokens before the token; n counts the continuations with a reward (finished, not cut off);
    rollout_ids lists every continuation."""

    prefix_token_ids: tuple[int, ...]
    token_id: int
    n: int
    mean_reward: Optional[float]
    ci_low: Optional[float]
    ci_high: Optional[float]
    interval: Optional[str]
    rollout_ids: tuple[str, ...]

    @property
    def key(self) -> tuple[int, ...]:
        """prefix + token, as Rollout.value_key gives it."""
        return self.prefix_token_ids + (self.token_id,)

    @property
    def position(self) -> int:
        return len(self.prefix_token_ids)


@dataclass(frozen=True)
class ValueStart:
    """Where a value run continues from: the first `position` tokens of rollout rollout_id (the prefix), then token_id
    (kept where the rollout took it, forced where it did not)."""

    rollout_id: str
    position: int
    token_id: int


@dataclass(frozen=True)
class Query:
    """A query as the user gave it; reference_answer is the expected answer (for rewards), if any."""

    text: str  # a conversation's last user message
    reference_answer: Optional[str] = None
    # a dataset row's other columns, (name, JSON value) pairs: a TRL-style reward gets them as keyword arguments
    columns: tuple[tuple[str, object], ...] = ()
    # the prompt as a conversation when the dataset gave one (a system message and earlier turns included): the chat
    # template gets these messages; empty: the query is the text alone
    messages: Messages = ()
    # the id its group takes (a dataset row's, so a resumed run names its groups as the first run did); None: the
    # engine numbers the groups of a run q0, q1, ...
    group_id: Optional[str] = None


@dataclass(frozen=True)
class QueryGroup:
    id: str
    query: str
    chat: bool
    prompt: str  # the text after the chat template
    prompt_token_ids: tuple[int, ...]
    rollouts: tuple[Rollout, ...] = ()
    scores: tuple[Score, ...] = ()
    reference_answer: Optional[str] = None  # the expected answer (JSON 'reference')
    stats: Optional[tuple[tuple[str, Optional[float]], ...]] = None  # (name, value) pairs
    columns: tuple[tuple[str, object], ...] = ()  # the dataset row's other columns (Query.columns)
    messages: Messages = ()  # the prompt as the dataset's conversation (Query.messages); empty: the query alone


@dataclass(frozen=True)
class ModelInfo:
    path: str
    name: str
    architecture: str
    n_params: Optional[int]
    n_vocab: Optional[int]
    n_ctx: Optional[int]  # the context the engine runs with
    file_size: int
    fingerprint: str
    chat_template: bool
    n_gpu_layers: int = 0
    gpu_offload: bool = False
    llama_cpp_python: Optional[str] = None
    quantization: Optional[str] = None
    n_ctx_train: Optional[int] = None
    n_layers: Optional[int] = None
    backend: str = "CPU"
    system_info: str = ""
    # A policy on a server (core/remote): its URL without credentials, kind and version, and what its numbers are
    server_url: Optional[str] = None
    server_kind: Optional[str] = None  # "vllm" | "sglang" | "llama-server" | "llama_cpp.server"
    server_version: Optional[str] = None
    logprob_kind: str = "raw"  # "raw": before temperature and truncation (the policy); "processed": after them
    entropy_kind: str = "exact"  # "exact" over the vocabulary, or "unavailable" (a server gives only the top N)
    server_facts: Optional[str] = None  # what the capability probe found, one line
    # a local policy decoded batch-invariantly: a token's logprob the same whatever shares its decode step (None: a
    # server's policy, whose batching is its own)
    exact: Optional[bool] = None
    # without exact decoding: the largest difference (nats) between a token's logprob decoded alone and in a batch,
    # measured on this model at load (how far sampled and teacher-forced numbers may part)
    logprob_band: Optional[float] = None

    def exactness(self) -> Optional[str]:
        """How this policy's sampled and teacher-forced logprobs agree, in words (None for a server's policy)."""
        if self.exact is None:
            return None
        if self.exact:
            if self.gpu_offload:  # the shape that makes it exact is what llama.cpp's CPU kernels need
                return ("exact decoding on, made for llama.cpp's CPU kernels: the GPU's may still let a token's "
                        "logprob depend on its batch")
            return "exact: a token's logprob is the same sampled or scored, whatever k or the batch"
        if self.logprob_band is None:
            return "not exact: sampled and scored logprobs may differ"
        if self.logprob_band == 0:
            return ("not exact: sampled and scored logprobs agreed on this model's probe, but may differ in other "
                    "batches")
        return (f"not exact: sampled and scored logprobs may differ by {self.logprob_band:.2g} nats or more "
                "(measured on this model)")


@dataclass(frozen=True)
class Timings:
    load_s: float = 0.0
    prompt_s: float = 0.0
    generation_s: float = 0.0
    tokens_per_s: float = 0.0


@dataclass(frozen=True)
class ReferenceInfo:
    """A reference policy (core/reference) as a rollout set records it: JSON 'reference_policy'."""

    kind: str  # "model" | "exact" | "system" | "temperature" | "top_p"
    description: str
    fingerprint: str  # of the reference's GGUF; for a system prompt or sampler reference, the policy's own
    path: Optional[str] = None
    system: Optional[str] = None
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    # "exact": KL(pi || pi_ref) over the whole vocabulary at every position; "unavailable": the policy is on a server,
    # which sends no full rows, so only the sampled tokens' log-ratios (and what needs only them) are known
    kl_kind: str = "exact"

    @property
    def has_kl(self) -> bool:
        return self.kl_kind == "exact"


@dataclass(frozen=True)
class RolloutSet:
    model: ModelInfo
    sampling: SamplingParams
    groups: tuple[QueryGroup, ...]
    timings: Timings = field(default_factory=Timings)
    created_at: str = ""  # ISO-8601 UTC; filled in by the exporter when empty
    reference_policy: Optional[ReferenceInfo] = None  # set when the tokens carry ref_logprob and kl


# ---------------------------------------------------------------------------------------------------------------
# Streaming events. engine.generate() / engine.branch() yield these, in this order:
# RunStarted, then TokenBatch (one per decode step) interleaved with RolloutFinished, then RunFinished.


@dataclass(frozen=True)
class RolloutHeader:
    """A rollout about to stream. prefix holds the tokens it starts with (a branch copies its parent's)."""

    group_id: str
    rollout_id: str
    index: int
    seed: int
    parent_id: Optional[str] = None
    branch_position: Optional[int] = None
    prefix: tuple[TokenInfo, ...] = ()
    prefix_text: str = ""
    value_position: Optional[int] = None  # a value rollout's (Rollout.value_position): it starts with prefix + token


@dataclass(frozen=True)
class GroupHeader:
    id: str
    query: str
    chat: bool
    prompt: str
    prompt_token_ids: tuple[int, ...]
    reference_answer: Optional[str] = None
    columns: tuple[tuple[str, object], ...] = ()  # the dataset row's other columns (Query.columns)
    messages: Messages = ()  # the dataset's conversation (Query.messages)

    @classmethod
    def of(cls, group: "QueryGroup") -> "GroupHeader":
        """The header of a group that exists (a branch of it, a group taken whole)."""
        return cls(group.id, group.query, group.chat, group.prompt, group.prompt_token_ids, group.reference_answer,
                   group.columns, group.messages)


@dataclass(frozen=True)
class RunStarted:
    groups: tuple[GroupHeader, ...]
    rollouts: tuple[RolloutHeader, ...]
    sampling: SamplingParams
    total_tokens: int  # upper bound on tokens this run will generate (rollouts x max tokens)
    is_branch: bool = False


@dataclass(frozen=True)
class TokenEvent:
    group_id: str
    rollout_id: str
    position: int  # index of this token within the rollout
    token: TokenInfo
    text: str  # what this token adds to the rollout text (UTF-8 completed across tokens)


@dataclass(frozen=True)
class TokenBatch:
    """All tokens produced by one decode step, across every active rollout."""

    events: tuple[TokenEvent, ...]


@dataclass(frozen=True)
class RolloutFinished:
    group_id: str
    rollout: Rollout


@dataclass(frozen=True)
class RunFinished:
    timings: Timings
    cancelled: bool = False


Event = Union[RunStarted, TokenBatch, RolloutFinished, RunFinished]
