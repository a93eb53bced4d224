"""Exact (batch-invariant) decoding on models quantized by llama.cpp itself: a token's logprob is the same whatever k
is, whatever else shares its decode step, and whether it is sampled, branched or teacher-forced.

The models are a tiny float GGUF of width 256 (a multiple of 256: every K-quant tensor takes the real super-block
kernels) quantized with llama_model_quantize, as llama-quantize writes the files users download: Q4_K_M (Q4_K with
Q6_K output), Q4_0 (a legacy quant, with the Q6_K output llama.cpp gives it) and Q8_0 (a legacy quant through and
through). Each check compares the engine with itself on another path, bit for bit; each also runs with exact decoding
off, where the same comparison must differ somewhere on the K-quant, so the checks can fail.
"""

from __future__ import annotations

from contextlib import closing
from dataclasses import replace

import pytest
from tiny_gguf import write_quantized, write_tiny_gguf

from explorer.core.engine import llama_backend as lb
from explorer.core.engine.exactness import exact_shape
from explorer.core.engine.local import Engine
from explorer.core.types import QueryGroup, RolloutFinished, SamplingParams

QUERY = "the largest ocean"
PARAMS = SamplingParams(max_tokens=40, seed=11, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("quantized")
    src = write_tiny_gguf(d / "w256.f32.gguf", n_vocab=1024, n_embd=256, n_layer=2, n_head=4, n_ff=512, seed=1,
                          tie_embeddings=False)
    return {t: write_quantized(src, d / f"w256.{t}.gguf", t) for t in ("Q4_K_M", "Q4_0", "Q8_0")}


def rollouts(eng, queries, k, params=PARAMS):
    return {e.rollout.id: e.rollout for e in eng.generate(queries, k, params, chat=False)
            if isinstance(e, RolloutFinished)}


def facts(tokens):
    """Everything a token records that the kernels decide, as exact numbers."""
    return [(t.id, t.logprob, t.entropy, t.rank, tuple((a.id, a.logprob) for a in t.top)) for t in tokens]


def scored(eng, rollout_list):
    _, prompt = eng.format_prompt(QUERY, chat=False)
    return eng.score_token_ids(list(prompt), [list(r.token_ids) for r in rollout_list])


@pytest.mark.parametrize("quant", ["Q4_K_M", "Q4_0", "Q8_0"])
def test_a_rollout_is_the_same_whatever_k_and_whatever_shares_its_steps(models, quant):
    with closing(Engine(models[quant], n_threads=1)) as eng:
        assert eng.info.exact and eng.info.logprob_band is None
        alone = rollouts(eng, [QUERY], 1)["q0.r0"]
        beside = rollouts(eng, ["Hello world", QUERY], 8)  # the query's rollouts share every step with another's
        crowd = rollouts(eng, [QUERY], 60)  # more rows than one micro-batch holds: each step is decoded in several
        assert facts(beside["q1.r0"].tokens) == facts(alone.tokens)
        assert facts(crowd["q0.r0"].tokens) == facts(alone.tokens)
        # the last row of the crowd's last micro-batch: rollout 59 alone is rollout 0 of a run seeded 59 later
        assert facts(crowd["q0.r59"].tokens) == facts(rollouts(eng, [QUERY], 1, replace(PARAMS, seed=PARAMS.seed + 59))
                                                       ["q0.r0"].tokens)


@pytest.mark.parametrize("quant", ["Q4_K_M", "Q4_0", "Q8_0"])
def test_sampled_logprobs_are_the_teacher_forced_scores_and_so_are_branched_ones(models, quant):
    with closing(Engine(models[quant], n_threads=1)) as eng:
        by_id = rollouts(eng, [QUERY], 8)
        group = [by_id[f"q0.r{i}"] for i in range(8)]
        _, prompt = eng.format_prompt(QUERY, chat=False)
        parent = QueryGroup("q0", QUERY, False, "", tuple(prompt), rollouts=tuple(group))
        forced = group[1].tokens[5].id
        branched = []
        # straight after the run, whose cells for rollout 2 lie between its companions' (the branch reuses the
        # prompt's cells; a token in a cell freed among them would be summed in another order)
        for forced_token in (None, forced):
            branched += [e.rollout for e in eng.branch(parent, "q0.r2", 5, forced_token=forced_token, k=3,
                                                      params=replace(PARAMS, max_tokens=20))
                         if isinstance(e, RolloutFinished)]
        assert len(branched) == 6 and all(r.tokens[:5] == group[2].tokens[:5] for r in branched)
        assert sum(len(r.tokens) for r in group) > 64  # one teacher-forced pass of several micro-batches
        for r, infos in zip(group + branched, scored(eng, group + branched)):
            assert facts(infos) == facts(r.tokens)


def test_without_exact_decoding_the_k_quant_parts_and_its_band_is_measured(models):
    """The control: on these kernels the comparisons above differ once exact decoding is off."""
    with closing(Engine(models["Q4_K_M"], n_threads=1, exact=False)) as eng:
        assert eng.info.exact is False and eng.info.logprob_band > 0
        alone = rollouts(eng, [QUERY], 1)["q0.r0"]
        group = sorted(rollouts(eng, [QUERY], 8).values(), key=lambda r: r.index)
        differs = facts(group[0].tokens) != facts(alone.tokens)
        differs |= any(facts(i) != facts(r.tokens) for r, i in zip(group, scored(eng, group)))
        assert differs
        eng.set_exact(True)  # and back: the cache filled without it is not reused
        assert eng.info.exact and eng.info.logprob_band is None
        assert facts(rollouts(eng, [QUERY], 8)["q0.r0"].tokens) == facts(rollouts(eng, [QUERY], 1)["q0.r0"].tokens)


def test_one_row_decodes_match_with_several_threads_over_a_long_context(models):
    """With 2+ threads, flash attention splits a lone query row's 512+ cells across threads: exact decoding never
    lets a micro-batch hold a lone row, so a single rollout still gets the numbers of a batch."""
    long_query = " ".join(["the largest ocean"] * 200)  # 600+ tokens in the KV cache
    params = replace(PARAMS, max_tokens=8)
    with closing(Engine(models["Q8_0"], n_threads=2)) as eng:
        assert eng.exact_shape.min_rows == 2
        alone = rollouts(eng, [long_query], 1, params)["q0.r0"]
        assert facts(rollouts(eng, [long_query], 3, params)["q0.r0"].tokens) == facts(alone.tokens)


def test_the_shape_pads_rows_and_outputs_into_place():
    two, k_quant = lb.MicroBatchShape(2), lb.MicroBatchShape(8, 4)
    assert not lb.MicroBatchShape(1).pads and two.pads and k_quant.pads
    assert two.padding(1, 1) == (1, 0) and two.padding(1, 0) == (0, 1) and two.padding(7, 3) == (0, 0)
    assert k_quant.padding(1, 1) == (7, 0) and k_quant.padding(9, 0) == (0, 3) and k_quant.padding(9, 9) == (3, 0)
    for shape in (two, k_quant):
        for rows in range(1, shape.max_rows + 1):
            for outputs in range(rows + 1):
                with_logits, without = shape.padding(rows, outputs)
                assert shape.allows(outputs + with_logits) and shape.allows(rows + with_logits + without)
                assert rows + with_logits + without <= lb.N_UBATCH
    assert exact_shape(["Q4_1", "Q8_0"], 1) == lb.MicroBatchShape(1)
    assert exact_shape(["Q4_1", "Q8_0"], 4) == two == exact_shape(["F16"], 1)
    assert exact_shape(["Q4_K", "Q6_K"], 1) == k_quant == exact_shape(["Q4_0", "Q6_K"], 1)
