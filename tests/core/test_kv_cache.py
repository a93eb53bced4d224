"""KVCache on a real llama context of the tiny GGUF: reuse of a held prefix gives the logits a fresh decode gives,
and what was not remembered is never reused."""

from __future__ import annotations

import threading
from contextlib import closing

import numpy as np
import pytest

from explorer.core.engine import llama_backend as lb
from explorer.core.engine.kv_cache import KVCache, Prefix
from explorer.core.numbers import SequenceLogprob, common_prefix, json_number, mean_std, sequence_logprob

PROMPT = [1, 40, 41, 42, 43, 44, 45, 46]


@pytest.fixture(scope="module")
def model(tiny_gguf):
    lb.ensure_backend()
    m = lb.LlamaModel(str(tiny_gguf), 0)
    yield m
    m.close()


@pytest.fixture
def ctx(model):
    with closing(lb.LlamaContext(model, 512, 4, 1)) as c:
        yield c


def _fresh_rows(model, prefixes):
    with closing(lb.LlamaContext(model, 512, 4, 1)) as c:
        return KVCache(c).prefill(prefixes)


def test_a_remembered_prefix_is_reused_and_gives_the_fresh_logits(model, ctx):
    kv = KVCache(ctx)
    kv.prefill([Prefix(PROMPT, [0])])
    kv.remember({0: PROMPT})
    longer = PROMPT + [50, 51, 52]
    decoded = []
    real_decode = ctx.decode

    def counting_decode(tokens, *rest):
        decoded.append(len(tokens))
        return real_decode(tokens, *rest)

    ctx.decode = counting_decode
    (row,) = kv.prefill([Prefix(longer, [1, 2])])
    assert decoded == [3]  # the held prompt stays, copied to both sequences; only the new tokens are decoded
    (fresh,) = _fresh_rows(model, [Prefix(longer, [1, 2])])
    np.testing.assert_allclose(row, fresh, atol=1e-5)
    # the same prefix again: its last token is decoded once more, as its logits are not kept
    kv.remember({1: longer, 2: longer})
    (again,) = kv.prefill([Prefix(longer, [0])])
    assert decoded == [3, 1]
    np.testing.assert_allclose(again, fresh, atol=1e-5)


def test_prefill_consumes_what_it_knew_so_a_failed_run_leaves_nothing_to_reuse(model, ctx):
    kv = KVCache(ctx)
    kv.prefill([Prefix(PROMPT, [0])])
    kv.remember({0: PROMPT + [60, 61]})
    kv.prefill([Prefix(PROMPT, [0])])  # a run that never calls remember (it failed, or was cancelled)
    decoded = []
    real_decode = ctx.decode
    ctx.decode = lambda tokens, *rest: (decoded.append(len(tokens)), real_decode(tokens, *rest))[1]
    kv.prefill([Prefix(PROMPT, [0])])
    assert decoded == [len(PROMPT)]  # decoded from scratch


def test_several_prefixes_each_get_their_own_rows_and_cancel_stops_before_decoding(model, ctx):
    kv = KVCache(ctx)
    prefixes = [Prefix(PROMPT, [0, 1]), Prefix([1, 70, 71], [2])]
    rows = kv.prefill(prefixes)
    fresh = [_fresh_rows(model, [p])[0] for p in prefixes]
    for got, want in zip(rows, fresh):
        np.testing.assert_allclose(got, want, atol=1e-5)
    cancel = threading.Event()
    cancel.set()
    assert kv.prefill(prefixes, cancel) is None


def test_sequence_logprob_has_one_overflow_rule():
    assert sequence_logprob([]) == SequenceLogprob(0.0, None, None)
    s = sequence_logprob([-1.0, -2.0, -3.0])
    assert s.logprob == -6.0 and s.mean == -2.0 and s.perplexity == pytest.approx(np.exp(2.0))
    huge = sequence_logprob([-800.0, -800.0])
    assert huge.perplexity == float("inf") and json_number(huge.perplexity) is None
    assert sequence_logprob([float("-inf")]).perplexity == float("inf")


def test_small_helpers():
    assert common_prefix([1, 2, 3], [1, 2, 4, 5]) == 2 and common_prefix([], [1]) == 0
    assert common_prefix((1, 2), (1, 2)) == 2
    assert mean_std([1.0, 3.0]) == (2.0, 1.0)
    assert json_number(np.float32(0.5)) == 0.5 and type(json_number(np.float32(0.5))) is float
    assert json_number(float("nan")) is None and json_number(None) is None
