"""The engine on the tiny real GGUF: event protocol, determinism, honest logprobs, stops, UTF-8, context limits,
cancellation, branching and scoring.

The tiny model's weights are random, so nothing here expects particular text: every check compares the engine with
itself under another path (teacher forcing, a second run) or with llama-cpp-python's own evaluation of the model.
"""

from __future__ import annotations

import math
import threading
from contextlib import closing

import llama_cpp
import numpy as np
import pytest
from tiny_gguf import BOS_ID, EOS_ID, FIRST_BYTE_ID, IM_END_ID, IM_START_ID, UNK_ID, corrupt_variants

from explorer.core.session import Session
from explorer.core.engine.local import Engine
from explorer.core.errors import ContextOverflowError, ExplorerError, ModelError
from explorer.core.types import (QueryGroup, Rollout, RolloutFinished, RunFinished, RunStarted, SamplingParams,
                                 TokenBatch)

SILENT_IDS = {UNK_ID, BOS_ID, EOS_ID, IM_START_ID, IM_END_ID}  # their pieces never enter a rollout's text
LP_TOL = 2e-4  # two decodes of the same tokens in different batches agree to ~1e-5 in float32 on this model
QUERIES = ["Which is the largest ocean?", "Hello world"]


@pytest.fixture(scope="module")
def engine(tiny_gguf):
    with closing(Engine(tiny_gguf, n_threads=1)) as eng:
        yield eng


@pytest.fixture(scope="module")
def small_engine(tiny_gguf):
    """A fixed 64-token context: raw prompts only (the chat template alone is longer)."""
    with closing(Engine(tiny_gguf, n_ctx=64, n_threads=1)) as eng:
        yield eng


@pytest.fixture(scope="module")
def reference(tiny_gguf):
    """llama-cpp-python's own evaluation of the model: the next-token log-softmax after a list of ids."""
    llm = llama_cpp.Llama(model_path=str(tiny_gguf), n_ctx=512, n_threads=1, n_threads_batch=1,
                          logits_all=True, verbose=False)

    def next_logprobs(ids) -> np.ndarray:
        llm.reset()
        llm.eval(list(ids))
        row = np.array(llm.scores[len(ids) - 1], dtype=np.float64)
        row -= row.max()
        return row - math.log(np.exp(row).sum())

    yield next_logprobs
    llm.close()


def run(eng, queries, k, cancel=None, chat=True, **params):
    """All events of one generate() call, checked against the protocol; returns (events, rollouts by id)."""
    events = list(eng.generate(queries, k, SamplingParams(**params), cancel=cancel, chat=chat))
    return events, check_protocol(events)


def check_protocol(events) -> dict[str, Rollout]:
    assert isinstance(events[0], RunStarted) and isinstance(events[-1], RunFinished)
    assert not any(isinstance(e, (RunStarted, RunFinished)) for e in events[1:-1])
    headers = {h.rollout_id: h for h in events[0].rollouts}
    streamed = {rid: list(h.prefix) for rid, h in headers.items()}
    deltas = {rid: [h.prefix_text] for rid, h in headers.items()}
    finished: dict[str, Rollout] = {}
    for ev in events[1:-1]:
        if isinstance(ev, TokenBatch):
            assert ev.events
            for te in ev.events:
                assert te.rollout_id not in finished and te.position == len(streamed[te.rollout_id])
                streamed[te.rollout_id].append(te.token)
                deltas[te.rollout_id].append(te.text)
        else:
            assert isinstance(ev, RolloutFinished) and ev.rollout.id not in finished
            finished[ev.rollout.id] = ev.rollout
    assert finished.keys() == headers.keys()  # every rollout that started was finished exactly once
    for rid, r in finished.items():
        assert list(r.tokens) == streamed[rid]  # the final rollout is what was streamed, nothing lost
        assert (r.index, r.seed, r.parent_id) == (headers[rid].index, headers[rid].seed, headers[rid].parent_id)
        if r.finish_reason != "stop_string":
            # the rollout's text is its bytes decoded in one go; the streamed pieces are that text, except for a
            # character cut off by the end, which only the final text shows (as U+FFFD)
            text_bytes = b"".join(t.bytes for t in r.tokens if t.id not in SILENT_IDS)
            assert r.text == text_bytes.decode("utf-8", "replace")
            streamed_text = "".join(deltas[rid])
            assert r.text[len(streamed_text):] in ("", "\ufffd") and r.text.startswith(streamed_text)
    return finished


def token_lists(rollouts, ids):
    return [list(rollouts[i].token_ids) for i in ids]


# -- facts and protocol ---------------------------------------------------------------------------------------


def test_model_facts(engine, tiny_gguf):
    info = engine.info
    assert (info.n_vocab, info.architecture, info.chat_template, info.n_layers) == (300, "llama", True, 2)
    assert info.n_ctx >= 256 and info.n_ctx_train == 1024 and info.file_size == tiny_gguf.stat().st_size
    prompt, ids = engine.format_prompt("Hello", chat=True, system="Be brief.")
    assert prompt.startswith("<|im_start|>system\nBe brief.<|im_end|>") and prompt.endswith("assistant\n")
    raw_prompt, raw_ids = engine.format_prompt("Hello", chat=False)
    assert raw_prompt == "Hello" and raw_ids[0] == 1 and len(raw_ids) < len(ids)  # BOS, no template


def test_groups_rollout_ids_seeds_and_streaming(engine):
    events, rollouts = run(engine, QUERIES, 3, max_tokens=6, seed=40)
    started = events[0]
    assert [g.id for g in started.groups] == ["q0", "q1"] and started.groups[1].query == "Hello world"
    assert [h.rollout_id for h in started.rollouts] == ["q0.r0", "q0.r1", "q0.r2", "q1.r0", "q1.r1", "q1.r2"]
    assert [h.seed for h in started.rollouts] == [40, 41, 42] * 2 and not started.is_branch
    assert started.total_tokens == 2 * 3 * 6
    assert all(r.finish_reason == "length" and len(r.tokens) == 6 for r in rollouts.values())
    batches = [e for e in events if isinstance(e, TokenBatch)]
    assert len(batches) == 6 and all(len(b.events) == 6 for b in batches)  # one decode step advances all six
    assert events[-1].cancelled is False and events[-1].timings.tokens_per_s > 0


# -- determinism and diversity --------------------------------------------------------------------------------


def test_same_seed_same_rollouts_exactly(engine, tiny_gguf):
    _, a = run(engine, QUERIES, 3, max_tokens=10, seed=7)
    _, b = run(engine, QUERIES, 3, max_tokens=10, seed=7)  # the prompt KV cache is reused this time
    with closing(Engine(tiny_gguf, n_threads=1)) as fresh:
        _, c = run(fresh, QUERIES, 3, max_tokens=10, seed=7)
    for other in (b, c):
        assert other.keys() == a.keys()
        for rid, r in a.items():
            assert other[rid].token_ids == r.token_ids and other[rid].text == r.text
            assert [t.logprob for t in other[rid].tokens] == [t.logprob for t in r.tokens]
            assert [t.sampling_logprob for t in other[rid].tokens] == [t.sampling_logprob for t in r.tokens]


def test_rollouts_of_a_run_differ_and_another_seed_differs(engine):
    _, a = run(engine, QUERIES[:1], 4, max_tokens=10, seed=7)
    ids = ["q0.r0", "q0.r1", "q0.r2", "q0.r3"]
    assert len({tuple(t) for t in token_lists(a, ids)}) == 4
    _, b = run(engine, QUERIES[:1], 4, max_tokens=10, seed=1007)
    assert all(x != y for x, y in zip(token_lists(a, ids), token_lists(b, ids)))
    # rollout i uses seed + i: index 1 at seed 7 is index 0 at seed 8
    _, c = run(engine, QUERIES[:1], 1, max_tokens=10, seed=8)
    assert c["q0.r0"].token_ids == a["q0.r1"].token_ids


def test_temperature_zero_is_greedy_on_the_teacher_forced_distribution(engine, reference):
    _, rollouts = run(engine, QUERIES[:1], 3, max_tokens=6, temperature=0.0)
    lists = token_lists(rollouts, ["q0.r0", "q0.r1", "q0.r2"])
    assert lists[0] == lists[1] == lists[2]
    prompt = list(engine.format_prompt(QUERIES[0])[1])
    for t, tok in enumerate(rollouts["q0.r0"].tokens):
        ref = reference(prompt + lists[0][:t])
        assert ref[tok.id] == pytest.approx(ref.max(), abs=LP_TOL)
        assert tok.rank == 1 and tok.sampling_logprob == 0.0


# -- honest logprobs ------------------------------------------------------------------------------------------


def test_sampled_logprobs_equal_teacher_forced_scores(engine):
    events, rollouts = run(engine, QUERIES, 3, max_tokens=8, seed=3)
    for group in events[0].groups:
        ids = [f"{group.id}.r{i}" for i in range(3)]
        scored = engine.score_token_ids(list(group.prompt_token_ids), token_lists(rollouts, ids))
        for rid, infos in zip(ids, scored):
            for sampled, forced in zip(rollouts[rid].tokens, infos):
                assert forced.id == sampled.id and forced.sampling_logprob is None
                assert forced.logprob == pytest.approx(sampled.logprob, abs=LP_TOL)
                assert forced.entropy == pytest.approx(sampled.entropy, abs=LP_TOL)
                assert [a.id for a in forced.top][:1] == [a.id for a in sampled.top][:1]


def test_top_n_is_sorted_and_truly_the_top(engine, reference):
    top_n = 7
    events, rollouts = run(engine, QUERIES[:1], 2, max_tokens=5, seed=11, top_n=top_n)
    prompt = list(events[0].groups[0].prompt_token_ids)
    for r in rollouts.values():
        for t, tok in enumerate(r.tokens):
            ref = reference(prompt + list(r.token_ids[:t]))
            best = np.sort(ref)[::-1]
            lps = [a.logprob for a in tok.top]
            assert len(tok.top) == top_n and lps == sorted(lps, reverse=True)
            np.testing.assert_allclose(lps, best[:top_n], atol=LP_TOL)  # the N best values ...
            np.testing.assert_allclose([ref[a.id] for a in tok.top], lps, atol=LP_TOL)  # ... under these ids
            assert tok.logprob == pytest.approx(ref[tok.id], abs=LP_TOL)
            assert 1 + np.count_nonzero(ref > tok.logprob + LP_TOL) <= tok.rank
            assert tok.rank <= 1 + np.count_nonzero(ref > tok.logprob - LP_TOL)
            if tok.rank <= top_n:
                assert tok.top[tok.rank - 1].logprob == pytest.approx(tok.logprob, abs=1e-9)
            else:
                assert tok.id not in {a.id for a in tok.top} and tok.logprob <= lps[-1]
            assert tok.entropy == pytest.approx(-(np.exp(ref) * ref).sum(), abs=LP_TOL)
            assert 0.0 <= tok.entropy <= math.log(300) + 1e-9
            # at temperature 1 the filters only remove mass: the chain gives the token at least its raw probability
            assert tok.logprob - 1e-9 <= tok.sampling_logprob <= 0.0


def test_top_k_one_samples_with_certainty(engine):
    _, rollouts = run(engine, QUERIES[:1], 2, max_tokens=4, top_k=1)
    for tok in rollouts["q0.r0"].tokens + rollouts["q0.r1"].tokens:
        assert tok.sampling_logprob == 0.0 and tok.rank == 1 and tok.id == tok.top[0].id


# -- finishing ------------------------------------------------------------------------------------------------


def _deltas(events, rollout_id):
    return [te.text for e in events if isinstance(e, TokenBatch) for te in e.events if te.rollout_id == rollout_id]


def test_stop_strings_within_and_across_tokens(engine):
    params = dict(max_tokens=24, seed=21, top_k=0, top_p=1.0, min_p=0.0)
    events, plain = run(engine, QUERIES[:1], 1, **params)
    deltas, full = _deltas(events, "q0.r0"), plain["q0.r0"].text
    starts = np.cumsum([0] + [len(d) for d in deltas])
    usable = [i for i, d in enumerate(deltas) if d and "\ufffd" not in d]
    def across(i):  # the last character of token i and the first of token i + 1
        return deltas[i][-1] + deltas[i + 1][0]

    span = next(i for i in usable if i + 1 in usable and full.find(across(i)) == starts[i + 1] - 1)
    whole = next(i for i in usable if full.find(deltas[i]) == starts[i])  # one token's whole text
    for stop, cut, n_tokens in ((across(span), starts[span + 1] - 1, span + 2),
                                (deltas[whole], starts[whole], whole + 1)):
        _, stopped = run(engine, QUERIES[:1], 1, stop=("\x00never\x00", stop), **params)
        r = stopped["q0.r0"]
        assert r.finish_reason == "stop_string" and r.text == full[:cut] and stop not in r.text
        assert r.token_ids == plain["q0.r0"].token_ids[:n_tokens]


def test_end_of_generation_finishes_with_stop_and_adds_no_text(engine):
    _, rollouts = run(engine, QUERIES[:1], 48, max_tokens=32, seed=5, top_k=0, top_p=1.0, min_p=0.0)
    stopped = [r for r in rollouts.values() if r.finish_reason == "stop"]
    assert stopped, "no rollout sampled an end-of-generation token (about 1 in 150 draws on this model)"
    for r in rollouts.values():
        ends = [t for t in r.tokens if engine.model.is_eog(t.id)]
        if r.finish_reason == "stop":
            assert ends == [r.tokens[-1]] and len(r.tokens) <= 32
        else:
            assert r.finish_reason == "length" and not ends and len(r.tokens) == 32


# -- UTF-8 ----------------------------------------------------------------------------------------------------


def test_scoring_a_character_split_over_byte_tokens(engine):
    (score,) = engine.score("Hello", ["日本🌍"])
    assert len(score.tokens) >= 10  # nothing but byte tokens: 3 + 3 + 4 bytes, plus the leading space piece
    assert all(FIRST_BYTE_ID <= t.id < FIRST_BYTE_ID + 256 for t in score.tokens[1:])
    assert all(t.token == "\ufffd" for t in score.tokens[1:])  # each byte alone is not a character
    assert b"".join(t.bytes for t in score.tokens).decode("utf-8").strip() == "日本🌍"


def test_branch_text_joins_a_character_completed_by_the_forced_token(engine):
    _, prompt_ids = engine.format_prompt("Hello")
    (score,) = engine.score("Hello", ["日本"])
    parent = Rollout(id="q0.r0", index=0, seed=0, text="日本", tokens=score.tokens, finish_reason="length")
    group = QueryGroup("q0", "Hello", True, "", prompt_ids, rollouts=(parent,))
    last = len(score.tokens) - 1  # keep all but the last byte of 本, then force that byte
    events = list(engine.branch(group, "q0.r0", last, forced_token=score.tokens[-1].id, k=1,
                                params=SamplingParams(max_tokens=3, seed=2)))
    (header,) = events[0].rollouts
    assert header.prefix_text.strip() == "日本" and header.prefix[-1].token == "\ufffd"
    r = check_protocol(events)["q0.r1"]
    assert r.text.startswith(header.prefix_text)


# -- context limits -------------------------------------------------------------------------------------------


def test_prompt_longer_than_the_context_fails_before_decoding(small_engine):
    gen = small_engine.generate(["the ocean " * 40], 2, SamplingParams(max_tokens=4), chat=False)
    with pytest.raises(ContextOverflowError) as info:
        next(gen)  # not even RunStarted: nothing was decoded
    message = str(info.value)
    assert "\n" not in message and "64" in message and "tokens long" in message
    with pytest.raises(ContextOverflowError, match=r"max tokens \(60\).*lower max tokens"):
        next(small_engine.generate(["Hello world"], 1, SamplingParams(max_tokens=60), chat=False))
    _, ok = run(small_engine, ["Hello world"], 1, chat=False, max_tokens=4)  # still usable afterwards
    assert len(ok["q0.r0"].tokens) == 4


def test_rollouts_beyond_a_fixed_context_run_in_waves(small_engine, engine):
    n_prompt = len(small_engine.format_prompt("Hello world", chat=False)[1])
    k, max_tokens = 12, 10
    assert n_prompt + k * max_tokens > 64  # cannot all share one 64-token context
    events, rollouts = run(small_engine, ["Hello world", "the ocean"], k, chat=False, max_tokens=max_tokens, seed=9)
    assert len(rollouts) == 2 * k and all(len(r.tokens) == max_tokens for r in rollouts.values())
    assert max(len(e.events) for e in events if isinstance(e, TokenBatch)) <= (64 - n_prompt) // max_tokens
    # the split does not change what is sampled: the same rollouts as one big batch in a large context
    _, together = run(engine, ["Hello world", "the ocean"], k, chat=False, max_tokens=max_tokens, seed=9)
    for rid, r in rollouts.items():
        assert r.token_ids == together[rid].token_ids
        np.testing.assert_allclose([t.logprob for t in r.tokens], [t.logprob for t in together[rid].tokens],
                                   atol=LP_TOL)


def test_more_rollouts_than_parallel_sequences(engine):
    events, rollouts = run(engine, ["Hello"], 260, chat=False, max_tokens=2)
    assert len(rollouts) == 260 and {r.index for r in rollouts.values()} == set(range(260))
    assert max(len(e.events) for e in events if isinstance(e, TokenBatch)) <= 256


# -- cancellation ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("use_small", [False, True], ids=["one-wave", "waves"])
def test_cancel_after_the_first_step_keeps_tokens(engine, small_engine, use_small):
    eng = small_engine if use_small else engine
    cancel = threading.Event()
    events = []
    for ev in eng.generate(["Hello world"], 8, SamplingParams(max_tokens=10), cancel=cancel, chat=False):
        events.append(ev)
        if isinstance(ev, TokenBatch):
            cancel.set()
    rollouts = check_protocol(events)
    batches = [e for e in events if isinstance(e, TokenBatch)]
    assert len(batches) == 1 and events[-1].cancelled is True
    assert len(rollouts) == 8 and all(r.finish_reason == "cancelled" for r in rollouts.values())
    with_tokens = [r for r in rollouts.values() if r.tokens]
    assert len(with_tokens) == len(batches[0].events) and all(len(r.tokens) == 1 for r in with_tokens)
    assert (len(with_tokens) < 8) == use_small  # later waves never started


def test_cancel_before_the_start(engine):
    cancel = threading.Event()
    cancel.set()
    events, rollouts = run(engine, QUERIES, 2, cancel=cancel, max_tokens=5)
    assert events[-1].cancelled and not any(isinstance(e, TokenBatch) for e in events)
    assert all(r.finish_reason == "cancelled" and not r.tokens for r in rollouts.values())


# -- branching ------------------------------------------------------------------------------------------------


def _group(engine, k=2, max_tokens=8):
    collector = Session(engine.info)
    collector.extend(engine.generate(QUERIES[:1], k, SamplingParams(max_tokens=max_tokens, seed=31)))
    return collector, collector.group("q0")


def test_branch_with_a_forced_token(engine):
    collector, group = _group(engine)
    parent = group.rollouts[1]
    position = 3
    forced = next(a.id for a in parent.tokens[position].top if a.id != parent.tokens[position].id)
    params = SamplingParams(max_tokens=5, seed=100)
    events = list(engine.branch(group, parent.id, position, forced_token=forced, k=3, params=params))
    started = events[0]
    assert started.is_branch and [g.id for g in started.groups] == ["q0"]
    assert [h.rollout_id for h in started.rollouts] == ["q0.r2", "q0.r3", "q0.r4"]
    assert [h.seed for h in started.rollouts] == [102, 103, 104]
    rollouts = check_protocol(events)
    prefix_ids = list(group.prompt_token_ids) + list(parent.token_ids[:position])
    (teacher,) = engine.score_token_ids(prefix_ids, [[forced]])
    for r in rollouts.values():
        assert r.parent_id == parent.id and r.branch_position == position and r.finish_reason == "length"
        assert r.tokens[:position] == parent.tokens[:position]
        assert r.tokens[position].id == forced and r.tokens[position].sampling_logprob is None
        assert r.tokens[position].logprob == pytest.approx(teacher[0].logprob, abs=1e-9)
        assert len(r.tokens) == position + 1 + params.max_tokens
        # what the branch sampled after the reused prefix is honest too
        (scored,) = engine.score_token_ids(list(group.prompt_token_ids), [list(r.token_ids)])
        np.testing.assert_allclose([t.logprob for t in scored], [t.logprob for t in r.tokens], atol=LP_TOL)
    assert len({r.token_ids for r in rollouts.values()}) == 3
    # indices keep counting after a second branch joins the same group
    collector.extend(events)
    again = list(engine.branch(collector.group("q0"), "q0.r0", 0, k=1, params=params))
    assert [h.rollout_id for h in again[0].rollouts] == ["q0.r5"] and again[0].rollouts[0].prefix == ()


def test_branch_without_forcing_continues_the_parent_prefix(engine):
    _, group = _group(engine)
    parent = group.rollouts[0]
    for position in (0, 4, len(parent.tokens)):
        rollouts = check_protocol(list(engine.branch(group, parent.id, position, k=2,
                                                     params=SamplingParams(max_tokens=3, seed=5))))
        for r in rollouts.values():
            assert r.tokens[:position] == parent.tokens[:position] and len(r.tokens) == position + 3
    # a regenerate after branching (other KV contents) still gives the original rollouts
    _, again = _group(engine)
    assert [r.token_ids for r in again.rollouts] == [r.token_ids for r in group.rollouts]


def test_branch_forcing_end_of_generation_finishes_at_once(engine):
    _, group = _group(engine)
    events = list(engine.branch(group, "q0.r0", 2, forced_token=IM_END_ID, k=2))
    for r in check_protocol(events).values():
        assert r.finish_reason == "stop" and [t.id for t in r.tokens[2:]] == [IM_END_ID]


def test_a_value_run_shares_its_prefixes_and_samples_honestly(engine):
    """The value run's prefixes are prefilled as a prefix tree (the prompt and each state once): what it samples
    after them is what teacher forcing gives, so the shared cells hold the right tokens."""
    from explorer.core.types import ValueStart

    _, group = _group(engine)
    r0, r1 = group.rollouts
    alternatives = [a.id for a in r0.tokens[3].top if a.id != r0.tokens[3].id][:2]
    starts = [ValueStart(r0.id, 3, r0.tokens[3].id)] + [ValueStart(r0.id, 3, a) for a in alternatives] + [
        ValueStart(r1.id, 1, r1.tokens[1].id), ValueStart(r0.id, 0, IM_END_ID)]
    events = list(engine.continuations(group, starts, 2, SamplingParams(max_tokens=5, seed=40)))
    rollouts = check_protocol(events)
    assert len(rollouts) == 10
    for r in rollouts.values():
        parent = r0 if r.parent_id == r0.id else r1
        assert r.tokens[:r.value_position] == parent.tokens[:r.value_position]
        if r.token_ids[r.value_position] == IM_END_ID:  # a forced end of generation ends it there
            assert r.finish_reason == "stop" and len(r.tokens) == r.value_position + 1
            continue
        (scored,) = engine.score_token_ids(list(group.prompt_token_ids), [list(r.token_ids)])
        np.testing.assert_allclose([t.logprob for t in scored], [t.logprob for t in r.tokens], atol=LP_TOL)
    # a forced token's facts come from the parent's own top-N at that position: the teacher-forced ones
    forced = next(r for r in rollouts.values() if r.token_ids[3:4] == (alternatives[0],) and r.parent_id == r0.id)
    (teacher,) = engine.score_token_ids(list(group.prompt_token_ids) + list(r0.token_ids[:3]), [[alternatives[0]]])
    assert forced.tokens[3].logprob == pytest.approx(teacher[0].logprob, abs=LP_TOL)
    assert forced.tokens[3].rank == teacher[0].rank


def test_branch_rejects_bad_positions_and_tokens(engine):
    _, group = _group(engine)
    with pytest.raises(ExplorerError, match="outside rollout"):
        list(engine.branch(group, "q0.r0", 99))
    with pytest.raises(ExplorerError, match="outside the vocabulary"):
        list(engine.branch(group, "q0.r0", 1, forced_token=300))
    with pytest.raises(ExplorerError, match="no rollout"):
        list(engine.branch(group, "q0.r9", 1))
    # a group read from a file made with another model: ids beyond this vocabulary get a message, not llama.cpp's log
    foreign = QueryGroup("q0", group.query, True, group.prompt, group.prompt_token_ids + (70_000,), group.rollouts)
    with pytest.raises(ExplorerError, match="70000, outside this model's vocabulary"):
        list(engine.branch(foreign, "q0.r0", 1))


def test_score_token_ids_rejects_empty_or_foreign_prefixes(engine):
    with pytest.raises(ExplorerError, match="no tokens"):
        engine.score_token_ids([], [[FIRST_BYTE_ID]])
    with pytest.raises(ExplorerError, match="-1, outside"):
        engine.score_token_ids([BOS_ID, -1], [[FIRST_BYTE_ID]])
    with pytest.raises(ExplorerError, match="300, outside"):
        engine.score_token_ids([BOS_ID], [[FIRST_BYTE_ID, 300]])


# -- scoring --------------------------------------------------------------------------------------------------


def test_score_breakdown_and_empty_response(engine):
    scores = engine.score(QUERIES[0], ["Atlantic Ocean", "Pacific Ocean", ""])
    assert [s.response for s in scores] == ["Atlantic Ocean", "Pacific Ocean", ""]
    for s in scores[:2]:
        assert len(s.tokens) == 2  # the vocabulary has both words as pieces
        assert math.isfinite(s.logprob) and s.logprob == pytest.approx(sum(t.logprob for t in s.tokens))
        assert s.perplexity == pytest.approx(math.exp(-s.logprob / len(s.tokens)))
        assert all(t.sampling_logprob is None and 1 <= t.rank <= 300 for t in s.tokens)
    assert scores[0].tokens[1].id == scores[1].tokens[1].id  # " Ocean", in two different contexts
    assert scores[2].tokens == () and scores[2].logprob == 0.0 and scores[2].perplexity is None


def test_scores_of_every_next_token_form_a_distribution(engine):
    # 300 one-token responses: more than the parallel sequences of one pass, and together the whole vocabulary
    prompt = list(engine.format_prompt("Hello")[1])
    scored = engine.score_token_ids(prompt, [[t] for t in range(300)])
    lps = np.array([infos[0].logprob for infos in scored])
    assert np.log(np.exp(lps).sum()) == pytest.approx(0.0, abs=1e-5)
    assert [infos[0].rank for infos in scored] == list(1 + (lps[None, :] > lps[:, None] + 1e-9).sum(axis=1))


def test_long_texts_cross_decode_batch_boundaries(engine):
    # 620 tokens: the response and, in the second call, the prompt are decoded in several llama_decode batches
    prompt = list(engine.format_prompt("Hello")[1])
    ids = [int(t) for t in np.random.default_rng(0).integers(FIRST_BYTE_ID, 300, 620)]
    (whole,) = engine.score_token_ids(prompt, [ids])
    (tail,) = engine.score_token_ids(prompt + ids[:560], [ids[560:]])
    np.testing.assert_allclose([t.logprob for t in tail], [t.logprob for t in whole[560:]], atol=LP_TOL)


# -- bad files ------------------------------------------------------------------------------------------------


def test_corrupt_or_foreign_files_raise_model_error(tmp_path, tiny_gguf):
    variants = corrupt_variants(tmp_path / "bad", tiny_gguf)
    (tmp_path / "notes.gguf").write_text("not a model at all\n")
    variants["text"] = tmp_path / "notes.gguf"
    variants["missing"] = tmp_path / "missing.gguf"
    for label, path in variants.items():
        with pytest.raises(ModelError) as info:
            Engine(path)
        assert path.name in str(info.value) and "\n" not in str(info.value), label
