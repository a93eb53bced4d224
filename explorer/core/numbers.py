"""Small numeric helpers every part shares, so each rule exists once: a sequence's logprob / mean / perplexity, numbers
as JSON writes them, the common prefix of two id lists, mean and population std.
"""

from __future__ import annotations

import math
from typing import Iterable, NamedTuple, Optional, Sequence


class SequenceLogprob(NamedTuple):
    """log pi(y|x) of a token sequence, its mean per token, and perplexity exp(-mean)."""

    logprob: float  # 0.0 for no tokens
    mean: Optional[float]  # None for no tokens
    perplexity: Optional[float]  # None for no tokens; math.inf where exp overflows (JSON writes it as null)


def sequence_logprob_of(total: float, n_tokens: int) -> SequenceLogprob:
    """From a running sum of n_tokens logprobs (a streaming pane keeps one)."""
    if n_tokens <= 0:
        return SequenceLogprob(0.0, None, None)
    mean = total / n_tokens
    try:
        ppl = math.exp(-mean)
    except OverflowError:  # past ~709 nats per token
        ppl = math.inf
    return SequenceLogprob(total, mean, ppl)


def sequence_logprob(logprobs: Iterable[float]) -> SequenceLogprob:
    """From the per-token logprobs (summed exactly with fsum)."""
    values = list(logprobs)
    return sequence_logprob_of(math.fsum(values), len(values))


def json_number(x: Optional[float]) -> Optional[float]:
    """A plain float for JSON (numpy scalars become float), null for None, NaN and infinities."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading items a and b share."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and population standard deviation (fsum); values must not be empty."""
    mean = math.fsum(values) / len(values)
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / len(values))
