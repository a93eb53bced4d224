"""The engine on the real default model (SmolLM2-135M-Instruct): chat template, scoring, honest logprobs, UTF-8.

Nothing here expects particular words from the model; the checks compare the engine's numbers with each other.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from explorer.core.engine.local import Engine
from explorer.core.types import QueryGroup, Rollout, RolloutFinished, RunStarted, SamplingParams, TokenBatch

pytestmark = pytest.mark.model

OCEAN = "Which is the largest ocean?"
LP_TOL = 2e-3  # float32 logits of a real model decoded in different batch shapes


@pytest.fixture(scope="module")
def engine(default_model_path):
    eng = Engine(default_model_path, n_threads=1)
    yield eng
    eng.close()


def generate(eng, queries, k, **params):
    events = list(eng.generate(queries, k, SamplingParams(**params)))
    return events, {e.rollout.id: e.rollout for e in events if isinstance(e, RolloutFinished)}


def test_facts_and_chat_template(engine):
    info = engine.info
    assert info.architecture == "llama" and info.chat_template and info.n_vocab == engine.model.n_vocab > 1000
    prompt, ids = engine.format_prompt(OCEAN, system="Answer briefly.")
    assert f"user\n{OCEAN}<|im_end|>" in prompt and "Answer briefly." in prompt
    assert prompt.rstrip().endswith("assistant")
    im_start = engine.model.tokenize("<|im_start|>", add_special=False, parse_special=True)
    assert len(im_start) == 1 and ids.count(im_start[0]) == 3  # system, user, assistant turns: special tokens
    raw_prompt, raw_ids = engine.format_prompt(OCEAN, chat=False)
    assert raw_prompt == OCEAN and len(raw_ids) < len(ids)


def test_score_atlantic_and_pacific(engine):
    scores = engine.score(OCEAN, ["Atlantic Ocean", "Pacific Ocean", ""])
    for s in scores[:2]:
        assert s.tokens and math.isfinite(s.logprob) and s.logprob < 0
        assert b"".join(t.bytes for t in s.tokens).decode() == s.response
        assert s.logprob == pytest.approx(math.fsum(t.logprob for t in s.tokens))
        assert s.mean_logprob == pytest.approx(s.logprob / len(s.tokens))
        assert s.perplexity == pytest.approx(math.exp(-s.mean_logprob))
        for t in s.tokens:
            lps = [a.logprob for a in t.top]
            assert len(t.top) == 5 and lps == sorted(lps, reverse=True) and t.logprob <= lps[0] + 1e-9
            assert t.rank >= 1 and (t.rank == 1) == (t.id == t.top[0].id)
            assert 0.0 <= t.entropy <= math.log(engine.info.n_vocab)
    assert scores[2].tokens == () and scores[2].perplexity is None


def test_sampled_logprobs_equal_scores_with_two_queries(engine):
    events, rollouts = generate(engine, [OCEAN, "Can you give me some python code?"], 3, max_tokens=10, seed=4)
    assert len(rollouts) == 6
    for group in events[0].groups:
        ids = [f"{group.id}.r{i}" for i in range(3)]
        assert len({rollouts[i].token_ids for i in ids}) > 1  # rollouts of one run differ
        scored = engine.score_token_ids(list(group.prompt_token_ids), [list(rollouts[i].token_ids) for i in ids])
        for rid, infos in zip(ids, scored):
            sampled = rollouts[rid].tokens
            np.testing.assert_allclose([t.logprob for t in infos], [t.logprob for t in sampled], atol=LP_TOL)
            assert [t.rank for t in infos] == [t.rank for t in sampled]
            for t in sampled:
                assert t.logprob - 1e-9 <= t.sampling_logprob <= 0.0  # default chain at temperature 1
    _, again = generate(engine, [OCEAN, "Can you give me some python code?"], 3, max_tokens=10, seed=4)
    assert {rid: r.token_ids for rid, r in again.items()} == {rid: r.token_ids for rid, r in rollouts.items()}
    assert all([t.logprob for t in again[rid].tokens] == [t.logprob for t in r.tokens] for rid, r in rollouts.items())


def test_greedy_rollouts_are_identical_and_end_on_the_end_of_turn_token(engine):
    events, rollouts = generate(engine, ["What is 2+2? Answer with a number."], 2, max_tokens=48, temperature=0.0)
    first, second = rollouts["q0.r0"], rollouts["q0.r1"]
    assert first.token_ids == second.token_ids and all(t.rank == 1 for t in first.tokens)
    assert first.finish_reason == "stop", "a short factual answer should end within 48 tokens"
    assert engine.model.is_eog(first.tokens[-1].id) and "<|im_end|>" not in first.text
    streamed = "".join(te.text for e in events if isinstance(e, TokenBatch) for te in e.events
                       if te.rollout_id == "q0.r0")
    assert streamed == first.text


def test_utf8_split_across_tokens_in_scores_and_branches(engine):
    text = "🌍 日本"
    (score,) = engine.score(OCEAN, [text])
    assert any("\ufffd" in t.token for t in score.tokens)  # some token holds only part of a character
    assert b"".join(t.bytes for t in score.tokens).decode("utf-8") == text
    # a branch whose kept prefix is that response: the prefix text shows whole characters
    _, prompt_ids = engine.format_prompt(OCEAN)
    parent = Rollout("q0.r0", 0, 0, text, score.tokens, "length")
    group = QueryGroup("q0", OCEAN, True, "", prompt_ids, rollouts=(parent,))
    events = list(engine.branch(group, "q0.r0", len(score.tokens), k=1, params=SamplingParams(max_tokens=2)))
    assert isinstance(events[0], RunStarted) and events[0].rollouts[0].prefix_text == text
    (done,) = [e.rollout for e in events if isinstance(e, RolloutFinished)]
    assert done.text.startswith(text) and done.tokens[: len(score.tokens)] == score.tokens


# One decode of 64+ tokens used to run other CPU kernels than a decode step of a few rollouts, and their rounding of
# 8-bit activations moved teacher-forced logprobs up to ~0.4 nats from the sampled ones. Every decode now stays below
# 64 tokens per micro-batch, so the two paths agree to float32 rounding of identical arithmetic: bit for bit here.
SAME_KERNELS_TOL = 1e-5


def test_long_rollouts_scored_in_one_pass_equal_what_sampling_recorded(engine):
    _, rollouts = generate(engine, ["Tell me a long story about the sea."], 3, max_tokens=90, seed=5)
    group = [rollouts[f"q0.r{i}"] for i in range(3)]
    prompt = list(engine.format_prompt("Tell me a long story about the sea.")[1])
    assert sum(len(r.tokens) for r in group) > 64 and max(len(r.tokens) for r in group) > 64
    scored = engine.score_token_ids(prompt, [list(r.token_ids) for r in group])  # one pass, 64+ tokens per decode
    for r, infos in zip(group, scored):
        np.testing.assert_allclose([t.logprob for t in infos], [t.logprob for t in r.tokens], rtol=0,
                                   atol=SAME_KERNELS_TOL)


def test_more_than_64_rollouts_per_step_equal_their_teacher_forced_scores(engine):
    events, rollouts = generate(engine, [OCEAN], 70, max_tokens=5, seed=11)  # every step decodes 70 tokens
    prompt = list(events[0].groups[0].prompt_token_ids)
    group = [rollouts[f"q0.r{i}"] for i in range(70)]
    scored = engine.score_token_ids(prompt, [list(r.token_ids) for r in group])
    for r, infos in zip(group, scored):
        np.testing.assert_allclose([t.logprob for t in infos], [t.logprob for t in r.tokens], rtol=0,
                                   atol=SAME_KERNELS_TOL)
    # and one rollout scored on its own agrees with the 70 decoded together
    (alone,) = engine.score_token_ids(prompt, [list(group[37].token_ids)])
    assert [t.logprob for t in alone] == pytest.approx([t.logprob for t in group[37].tokens], abs=SAME_KERNELS_TOL)
