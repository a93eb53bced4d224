"""Small numeric helpers every part shares, so each rule exists once: a sequence's logprob / mean / perplexity, numbers
as JSON writes them, the common prefix of two id lists, mean and population std, and every display format: the
window, the tree's labels and the command line print a number the same way (the command line with an ASCII minus,
plain_minus, since other programs may parse its tables).
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


# -- display formats (the window and the CLI print the same) -------------------------------------------------------
_LN10 = math.log(10.0)
MINUS = "\u2212"


def signed(text: str) -> str:
    return text.replace("-", MINUS)


def plain_minus(text: str) -> str:
    """A display format with an ASCII '-' (a terminal table other programs may parse)."""
    return text.replace(MINUS, "-")


def format_logprob(logprob: Optional[float]) -> str:
    if logprob is None or math.isnan(logprob):
        return "—"
    if math.isinf(logprob):
        return signed("-inf") if logprob < 0 else "inf"
    return signed(f"{logprob:.3f}" if abs(logprob) < 100 else f"{logprob:.1f}")


def format_probability(logprob: Optional[float], html_markup: bool = False) -> str:
    """exp(logprob) in scientific notation, e.g. 3.2e-14; as 10^x when exp underflows a double."""
    if logprob is None or math.isnan(logprob):
        return "—"
    if logprob == -math.inf:
        return "0"
    if logprob >= math.log(0.001):
        return f"{math.exp(logprob):.3g}"
    p = math.exp(logprob)
    if p >= 1e-300:  # well inside the normal doubles: the mantissa is exact enough to print
        return signed(f"{p:.1e}")
    exponent = logprob / _LN10
    if html_markup:
        return f"10<sup>{signed(f'{exponent:.1f}')}</sup>"
    return signed(f"10^{exponent:.1f}")


def format_percent(p: float) -> str:
    """A probability as a percentage, with the digits its size needs: 87.3%, 0.42%, 4.2e-05."""
    if p >= 0.0995:
        return f"{100 * p:.1f}%"
    if p >= 0.000995:
        return f"{100 * p:.2f}%"
    if p <= 0:
        return "0%"
    return signed(f"{p:.1e}")


def format_short_probability(p: float) -> str:
    """.61, .07, 1.0, <.01: two digits, no leading zero (the tree's labels are read at a glance)."""
    if p >= 0.995:
        return "1.0"
    if p < 0.005:
        return "<.01"
    return f"{p:.2f}".lstrip("0")


def format_kl(kl: Optional[float]) -> str:
    """A KL divergence in nats (>= 0; inf where pi_ref gives 0 to a token pi does not)."""
    if kl is None or math.isnan(kl):
        return "—"
    if math.isinf(kl):
        return "inf"
    return f"{kl:.3g}"


def format_implicit_reward(reward: Optional[float]) -> str:
    """beta * log-ratio, signed like an advantage."""
    if reward is None or math.isnan(reward):
        return "—"
    return signed(f"{reward:+.3g}")


def format_perplexity(ppl: Optional[float]) -> str:
    if ppl is None or math.isnan(ppl):
        return "—"
    if math.isinf(ppl):
        return "inf"
    return f"{ppl:.3f}" if ppl < 100 else f"{ppl:.4g}"
