"""The numpy sampler chain on synthetic logits: raw statistics, each filter's kept set, penalty, temperature, ranks.

Support checks draw one token per row of a batch whose rows all hold the same logits, each row with its own seeded
generator: one call gives hundreds of independent draws.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from explorer.core.engine.sampling import Workspace, raw_stats, sample_step, score_rows, top_indices
from explorer.core.types import SamplingParams

NO_FILTERS = dict(top_k=0, top_p=1.0, min_p=0.0)


def log_softmax(row: np.ndarray) -> np.ndarray:
    row = np.asarray(row, dtype=np.float64)
    shifted = row - row.max()
    return shifted - math.log(np.exp(shifted).sum())


def draw(logits_row, n: int, seed: int = 0, histories=None, **params):
    """n independent draws from one row of logits; returns the StepResult."""
    row = np.asarray(logits_row, dtype=np.float32)
    logits = np.tile(row, (n, 1))
    rngs = [np.random.default_rng(seed * 100_003 + i) for i in range(n)]
    histories = histories if histories is not None else [[] for _ in range(n)]
    return sample_step(logits, SamplingParams(**params), histories, rngs, Workspace(len(row)))


def probs_to_logits(probs) -> list[float]:
    return [math.log(p) for p in probs]


# -- raw statistics -------------------------------------------------------------------------------------------


def test_raw_stats_match_an_independent_log_softmax():
    rng = np.random.default_rng(7)
    logits = (rng.standard_normal((6, 257)) * 3).astype(np.float32)
    stats, _ = raw_stats(logits, 5, Workspace(257))
    for i, row in enumerate(logits):
        ref = log_softmax(row)
        order = np.argsort(-ref, kind="stable")[:5]
        assert list(stats.top_ids[i]) == list(order)
        np.testing.assert_allclose(stats.top_logprobs[i], ref[order], atol=1e-5)
        assert np.all(np.diff(stats.top_logprobs[i]) <= 0)
        entropy = -(np.exp(ref) * ref).sum()
        assert stats.entropy[i] == pytest.approx(entropy, abs=1e-5)
        assert stats.log_z[i] == pytest.approx(math.log(np.exp(row.astype(np.float64)).sum()), abs=1e-5)


def test_entropy_bounds_uniform_and_peaked():
    v = 300
    stats, _ = raw_stats(np.zeros((1, v), dtype=np.float32), 3, Workspace(v))
    assert stats.entropy[0] == pytest.approx(math.log(v), abs=1e-6)
    peaked = np.full((1, v), -100.0, dtype=np.float32)
    peaked[0, 17] = 0.0
    stats, _ = raw_stats(peaked, 3, Workspace(v))
    assert 0.0 <= stats.entropy[0] < 1e-6
    assert stats.top_ids[0, 0] == 17


def test_top_indices_ties_break_by_lower_id():
    values = np.array([[1.0, 3.0, 3.0, 0.0, 3.0]], dtype=np.float32)
    assert top_indices(values, 3).tolist() == [[1, 2, 4]]
    assert top_indices(values, 10).tolist() == [[1, 2, 4, 0, 3]]  # k beyond the vocabulary: everything, sorted
    assert top_indices(values, 0).shape == (1, 0)


def test_score_rows_logprob_and_rank_with_ties():
    logits = np.array([[1.0, 3.0, 3.0, 0.0], [0.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    stats, lps, ranks = score_rows(logits, np.array([2, 3]), 2, Workspace(4))
    np.testing.assert_allclose(lps, [log_softmax(logits[0])[2], math.log(0.25)], atol=1e-6)
    assert ranks.tolist() == [1, 1]  # equal logits share the best rank: rank counts strictly better tokens
    _, _, ranks = score_rows(logits[:1], np.array([0]), 2, Workspace(4))
    assert ranks.tolist() == [3]


# -- filters keep the right sets ------------------------------------------------------------------------------


def test_top_k_support_is_exactly_the_k_best():
    rng = np.random.default_rng(1)
    row = rng.standard_normal(50) * 0.3  # flat enough that every kept token gets drawn
    res = draw(row, 600, top_k=5, top_p=1.0, min_p=0.0)
    assert set(res.token_ids.tolist()) == set(np.argsort(-row)[:5].tolist())


def test_top_p_keeps_the_smallest_head_reaching_p():
    logits = probs_to_logits([0.5, 0.3, 0.15, 0.05])
    assert set(draw(logits, 400, top_k=0, top_p=0.75, min_p=0.0).token_ids.tolist()) == {0, 1}
    assert set(draw(logits, 400, top_k=0, top_p=0.85, min_p=0.0).token_ids.tolist()) == {0, 1, 2}
    assert set(draw(logits, 400, top_k=0, top_p=0.4, min_p=0.0).token_ids.tolist()) == {0}


def test_min_p_keeps_tokens_above_a_fraction_of_the_best():
    logits = probs_to_logits([0.5, 0.3, 0.15, 0.05])
    assert set(draw(logits, 400, top_k=0, top_p=1.0, min_p=0.2).token_ids.tolist()) == {0, 1, 2}  # >= 0.1
    assert set(draw(logits, 400, top_k=0, top_p=1.0, min_p=0.5).token_ids.tolist()) == {0, 1}  # >= 0.25


def test_top_p_applies_after_top_k_on_renormalised_probabilities():
    # llama.cpp's order: after top-k=2 the head renormalises to (4/7, 3/7), so top-p 0.5 keeps the first token only;
    # without top-k, 0.4 < 0.5 and top-p keeps two.
    logits = probs_to_logits([0.4, 0.3, 0.2, 0.1])
    assert set(draw(logits, 300, top_k=2, top_p=0.5, min_p=0.0).token_ids.tolist()) == {0}
    assert set(draw(logits, 300, top_k=0, top_p=0.5, min_p=0.0).token_ids.tolist()) == {0, 1}


def test_top_p_without_top_k_on_a_large_vocabulary_measures_the_whole_row():
    # 1000 distinct, nearly flat logits: top-p 0.5 must keep about half the vocabulary, which is more than the
    # engine's first 512-token cut; the kept set is a prefix of the sorted row.
    v = 1000
    logits = -np.arange(v, dtype=np.float64) * 1e-4
    probs = np.exp(log_softmax(logits))
    expected = int(np.searchsorted(np.cumsum(probs), 0.5)) + 1
    res = draw(logits, 3000, top_k=0, top_p=0.5, min_p=0.0)
    assert res.token_ids.max() < expected
    assert res.token_ids.max() >= 0.95 * expected  # the tail of the kept set is drawn too
    # the sampling probability is renormalised over exactly that kept set
    kept_lsm = log_softmax(logits[:expected])
    np.testing.assert_allclose(res.sampling_logprobs, kept_lsm[res.token_ids], atol=1e-9)


def test_no_filters_samples_the_whole_large_vocabulary_at_the_right_rates():
    v = 600  # above the 512-token first cut: the full-row path must be taken
    logits = np.zeros(v)
    logits[:3] = math.log(100.0)  # three tokens hold 300/897 of the mass
    res = draw(logits, 4000, seed=3, temperature=1.0, **NO_FILTERS)
    head = np.isin(res.token_ids, [0, 1, 2]).mean()
    assert head == pytest.approx(300 / 897, abs=0.03)
    assert res.token_ids.max() >= 512  # tokens beyond the first cut are reachable
    np.testing.assert_allclose(res.sampling_logprobs, res.logprobs, atol=1e-6)  # no filter: the raw policy


def test_frequencies_follow_the_filtered_tempered_distribution():
    logits = np.array(probs_to_logits([0.5, 0.3, 0.15, 0.05]))
    res = draw(logits, 4000, seed=5, temperature=0.5, top_k=3, top_p=1.0, min_p=0.0)
    expected = np.exp(log_softmax(logits[:3] / 0.5))
    observed = np.bincount(res.token_ids, minlength=4) / len(res.token_ids)
    assert observed[3] == 0
    np.testing.assert_allclose(observed[:3], expected, atol=0.03)


# -- logprobs under the chain ----------------------------------------------------------------------------------


def test_sampling_logprob_is_under_the_chain_and_raw_logprob_is_the_policy():
    logits = np.array(probs_to_logits([0.4, 0.3, 0.2, 0.1]))
    for temperature in (0.5, 1.0, 2.0):
        res = draw(logits, 200, seed=2, temperature=temperature, top_k=3, top_p=1.0, min_p=0.0)
        chain = log_softmax(logits[:3] / temperature)
        raw = log_softmax(logits)
        np.testing.assert_allclose(res.sampling_logprobs, chain[res.token_ids], atol=1e-9)
        np.testing.assert_allclose(res.logprobs, raw[res.token_ids], atol=1e-6)
        assert np.all(res.sampling_logprobs <= 0)


def test_temperature_changes_sampling_logprob_not_raw_logprob():
    logits = np.array(probs_to_logits([0.4, 0.3, 0.2, 0.1]))
    hot = draw(logits, 300, seed=9, temperature=2.0, **NO_FILTERS)
    cold = draw(logits, 300, seed=9, temperature=0.5, **NO_FILTERS)
    for res, t in ((hot, 2.0), (cold, 0.5)):
        np.testing.assert_allclose(res.sampling_logprobs, log_softmax(logits / t)[res.token_ids], atol=1e-9)
        np.testing.assert_allclose(res.logprobs, log_softmax(logits)[res.token_ids], atol=1e-6)
    assert set(hot.token_ids.tolist()) == {0, 1, 2, 3}
    # the best token is more likely when cold and less when hot than under the policy (0.4)
    assert cold.sampling_logprobs[cold.token_ids == 0][0] > math.log(0.4) > hot.sampling_logprobs[hot.token_ids == 0][0]


def test_top_k_one_is_certain_and_greedy_is_argmax():
    logits = np.array([0.1, 2.0, 1.5, -1.0])
    res = draw(logits, 50, top_k=1, top_p=1.0, min_p=0.0)
    assert set(res.token_ids.tolist()) == {1}
    assert np.all(res.sampling_logprobs == 0.0)
    assert np.all(res.ranks == 1)
    greedy = draw(logits, 5, temperature=0.0, top_k=40, top_p=0.95, min_p=0.05)
    assert set(greedy.token_ids.tolist()) == {1}
    assert np.all(greedy.sampling_logprobs == 0.0)
    np.testing.assert_allclose(greedy.logprobs, log_softmax(logits)[1], atol=1e-6)


def test_same_generators_same_tokens_other_generators_other_tokens():
    rng = np.random.default_rng(4)
    logits = rng.standard_normal(100) * 0.5
    a = draw(logits, 64, seed=11, **NO_FILTERS)
    b = draw(logits, 64, seed=11, **NO_FILTERS)
    c = draw(logits, 64, seed=12, **NO_FILTERS)
    assert a.token_ids.tolist() == b.token_ids.tolist()
    np.testing.assert_array_equal(a.sampling_logprobs, b.sampling_logprobs)
    assert a.token_ids.tolist() != c.token_ids.tolist()


# -- repeat penalty -------------------------------------------------------------------------------------------


def test_repeat_penalty_divides_positive_and_multiplies_negative_logits():
    logits = np.array([2.0, 1.0, -1.0, 0.5])
    penalised = np.array([1.0, 1.0, -2.0, 0.5])  # tokens 0 and 2 were seen, penalty 2
    res = draw(logits, 300, seed=1, histories=[[0, 2]] * 300, repeat_penalty=2.0, **NO_FILTERS)
    np.testing.assert_allclose(res.sampling_logprobs, log_softmax(penalised)[res.token_ids], atol=1e-6)
    np.testing.assert_allclose(res.logprobs, log_softmax(logits)[res.token_ids], atol=1e-6)  # raw stays raw
    np.testing.assert_allclose(res.stats.top_logprobs[0], np.sort(log_softmax(logits))[::-1][:4], atol=1e-6)


def test_repeat_penalty_can_demote_the_most_probable_token():
    logits = [2.0, 1.0, -1.0, 0.5]
    res = draw(logits, 3, histories=[[0]] * 3, temperature=0.0, repeat_penalty=3.0, **NO_FILTERS)
    assert set(res.token_ids.tolist()) == {1}  # 2 / 3 < 1
    assert np.all(res.ranks == 2)  # rank is under the raw distribution, where token 1 is second


def test_repeat_penalty_below_one_boosts_and_window_is_last_n():
    logits = [2.0, 1.0, -1.0, 0.5]
    boosted = draw(logits, 3, histories=[[3]] * 3, temperature=0.0, repeat_penalty=0.2, **NO_FILTERS)
    assert set(boosted.token_ids.tolist()) == {3}  # 0.5 / 0.2 = 2.5 > 2
    # token 0 appears only before the last 2 tokens of the history: outside the window, not penalised
    outside = draw(logits, 3, histories=[[0, 1, 3]] * 3, temperature=0.0, repeat_penalty=3.0, repeat_last_n=2,
                   **NO_FILTERS)
    assert set(outside.token_ids.tolist()) == {0}


# -- ranks and forced tokens ----------------------------------------------------------------------------------


def test_rank_counts_strictly_more_probable_tokens_and_forced_tokens_get_no_sampling_logprob():
    logits = np.array([[1.0, 3.0, 3.0, 0.0, 2.0]] * 4, dtype=np.float32)
    forced = [2, 0, 3, 4]
    res = sample_step(logits, SamplingParams(**NO_FILTERS), [[]] * 4, [np.random.default_rng(i) for i in range(4)],
                      Workspace(5), forced=forced)
    assert res.token_ids.tolist() == forced
    assert res.ranks.tolist() == [1, 4, 5, 3]
    assert np.all(np.isnan(res.sampling_logprobs))
    np.testing.assert_allclose(res.logprobs, log_softmax(logits[0])[forced], atol=1e-6)
    for i, tok in enumerate(forced):
        if res.ranks[i] <= 5:
            assert res.stats.top_logprobs[i, res.ranks[i] - 1] == pytest.approx(res.logprobs[i], abs=1e-6)
