"""`EngineLike`: what the window's worker, the CLI and the tests may ask of an engine.

Three things implement it: the llama.cpp `Engine` (local.py), the scripted fake the tests use (tests/fake_engine.py)
and a remote engine that forwards these calls over HTTP. Keep it small: anything added here must be added to each.

Threading: an engine lives on one thread; every call, and every step of the iterators `generate` and `branch`
return, happens on that thread. `cancel` is the one thing other threads touch: setting it stops a run at its next
decode step, and the run still ends with RolloutFinished events (finish "cancelled") and RunFinished(cancelled=True).

Errors: bad user input (an unknown rollout, a position outside it, a prompt that does not fit the context, a token id
outside the vocabulary) raises an `ExplorerError` subclass with a message fit for the user; anything else is a bug.
Generator methods check their arguments when the iterator is first advanced, not when it is created.
"""

from __future__ import annotations

import threading
from typing import Iterator, Optional, Protocol, Sequence, Union, runtime_checkable

from explorer.core.types import Event, Messages, ModelInfo, Query, QueryGroup, SamplingParams, Score, ValueStart


@runtime_checkable
class EngineLike(Protocol):
    @property
    def info(self) -> ModelInfo:
        """Facts about the loaded model (path, name, vocabulary size, context, backend...)."""

    def uses_chat(self, chat: bool) -> bool:
        """Whether a run asked for chat formatting gets it (False when the model has no chat template)."""

    def format_prompt(self, query: str, chat: bool = True, system: Optional[str] = None,
                      messages: Messages = ()) -> tuple[str, tuple[int, ...]]:
        """The prompt text a query becomes and its token ids (what generate and score condition on); messages, a
        dataset's conversation (Query.messages), stand for the query when given (plan.chat_messages)."""

    def generate(self, queries: Sequence[Union[Query, str]], k: int, params: SamplingParams,
                 cancel: Optional[threading.Event] = None, chat: bool = True,
                 system: Optional[str] = None) -> Iterator[Event]:
        """k rollouts per query, streamed: RunStarted, TokenBatch..., RolloutFinished per rollout, RunFinished.
        Rollout i of a query is drawn with seed params.seed + i."""

    def branch(self, group: QueryGroup, rollout_id: str, position: int, forced_token: Optional[int] = None,
               k: int = 1, params: Optional[SamplingParams] = None,
               cancel: Optional[threading.Event] = None) -> Iterator[Event]:
        """k new rollouts of `group` keeping the first `position` tokens of rollout_id, then forced_token if given;
        same event stream as generate (RunStarted.is_branch is True). New rollouts get the next free indices."""

    def continuations(self, group: QueryGroup, starts: Sequence[ValueStart], m: int,
                      params: Optional[SamplingParams] = None,
                      cancel: Optional[threading.Event] = None) -> Iterator[Event]:
        """A value run: m continuations of each start's prefix + token (its rollout's first `position` tokens, then
        token_id, kept where that rollout took it and forced where not), all in one run with the event stream of
        branch; every new rollout is a value rollout (value_position = its start's position). Each prefix is sent
        or decoded once where the engine can share it."""

    def score(self, query: str, responses: Sequence[str], chat: bool = True, system: Optional[str] = None,
              top_n: int = 5) -> tuple[Score, ...]:
        """Teacher-forced per-token facts of each response after the query's prompt: the logprob of a token equals
        the one recorded when the same token is sampled after the same context."""

    def close(self) -> None:
        """Free the model; the engine answers nothing after this."""
