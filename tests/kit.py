"""Builders shared by the tests: tokens, engine events, node lookup in a token tree.

Tokens come in two kinds, as in the app: a *scored* token (teacher-forced, no sampling log-probability) and a
*sampled* one (drawn by the sampler, whose only alternative recorded is itself).
"""

from __future__ import annotations

import math
from typing import Iterable, Optional

from explorer.core.types import (
    GroupHeader,
    Rollout,
    RolloutFinished,
    RolloutHeader,
    RunStarted,
    SamplingParams,
    TokenBatch,
    TokenEvent,
    TokenInfo,
    TopLogprob,
)

OCEAN = "Which is the largest ocean?"


def tok(tid: int, raw, prob: float = 0.5, entropy: float = 1.0, rank: int = 1, top=()) -> TokenInfo:
    """A scored token: `raw` is its text or its bytes (a split UTF-8 character), `prob` its pi(token | prefix)."""
    raw = raw.encode() if isinstance(raw, str) else raw
    return TokenInfo(tid, raw.decode("utf-8", "replace"), raw, math.log(prob), None, entropy, rank, top)


def sampled_tok(tid: int, raw, prob: float = 0.5, entropy: float = 1.0, alternatives=()) -> TokenInfo:
    """A sampled token (at temperature 1: its sampling logprob is its raw logprob), itself first in its top list,
    then `alternatives` as (id, text, prob)."""
    raw = raw.encode() if isinstance(raw, str) else raw
    text = raw.decode("utf-8", "replace")
    top = (TopLogprob(tid, text, raw, math.log(prob)),) + tuple(
        TopLogprob(i, t, t.encode(), math.log(p)) for i, t, p in alternatives)
    return TokenInfo(tid, text, raw, math.log(prob), math.log(prob), entropy, 1, top)


# -- engine events, as engine.generate() sends them -----------------------------------------------------------------
def run_started(k: int, prefixes: Optional[dict] = None, group: str = "q0", query: str = OCEAN) -> RunStarted:
    """k rollouts "q0.r{i}" with seeds 10 + i; prefixes: {rollout index: (prefix tokens, prefix text)}."""
    prefixes = prefixes or {}
    headers = tuple(RolloutHeader(group, f"{group}.r{i}", i, 10 + i, prefix=prefixes.get(i, ((), ""))[0],
                                  prefix_text=prefixes.get(i, ((), ""))[1]) for i in range(k))
    return RunStarted((GroupHeader(group, query, True, "prompt", (1, 2)),), headers, SamplingParams(seed=10),
                      total_tokens=k * 8)


def token_batch(step: int, items: dict, group: str = "q0") -> TokenBatch:
    """items: {rollout index: (token, text delta)}"""
    return TokenBatch(tuple(TokenEvent(group, f"{group}.r{i}", step, t, text) for i, (t, text) in items.items()))


def rollout_finished(i: int, text: str, tokens: Iterable[TokenInfo], reason: str = "stop", group: str = "q0",
                     **extra) -> RolloutFinished:
    return RolloutFinished(group, Rollout(f"{group}.r{i}", i, 10 + i, text, tuple(tokens), reason, **extra))
