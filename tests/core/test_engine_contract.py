"""The EngineLike contract, run against the scripted fake engine and the real engine on the tiny GGUF.

Whatever the worker and the CLI rely on is checked here once for both, so the fake cannot drift from the real thing:
the event stream's shape, one text delta per token, seeds, branching, scoring and which errors bad input raises.
"""

from __future__ import annotations

import threading
from contextlib import closing

import pytest
from fake_engine import FakeEngine

from explorer.core.session import Session
from explorer.core.engine.local import Engine
from explorer.core.engine.protocol import EngineLike
from explorer.core.errors import EngineError, ExplorerError
from explorer.core.types import RolloutFinished, RunFinished, RunStarted, SamplingParams, TokenBatch

QUERY = "Which is the largest ocean?"
LP_TOL = 2e-4


@pytest.fixture(scope="module", params=["fake", "tiny"])
def engine(request, tiny_gguf):
    if request.param == "fake":
        eng = FakeEngine("fake:contract")
    else:
        eng = Engine(tiny_gguf, n_threads=1)
    with closing(eng):
        yield eng


def _events(iterator):
    events = list(iterator)
    assert isinstance(events[0], RunStarted) and isinstance(events[-1], RunFinished)
    return events


def _group(engine, k=2, max_tokens=8, seed=31):
    collector = Session(engine.info)
    collector.extend(_events(engine.generate([QUERY], k, SamplingParams(max_tokens=max_tokens, seed=seed))))
    return collector.group("q0")


def test_both_are_engine_like(engine):
    assert isinstance(engine, EngineLike)


def test_event_stream_has_one_text_delta_per_token(engine):
    events = _events(engine.generate([QUERY, "Hello"], 3, SamplingParams(max_tokens=6, seed=2)))
    started = events[0]
    assert [h.rollout_id for h in started.rollouts] == [f"q{q}.r{i}" for q in (0, 1) for i in range(3)]
    assert [h.seed for h in started.rollouts] == [2, 3, 4] * 2
    positions: dict[str, list[int]] = {h.rollout_id: [] for h in started.rollouts}
    deltas: dict[str, list[str]] = {h.rollout_id: [] for h in started.rollouts}
    finished = {}
    for ev in events[1:-1]:
        if isinstance(ev, TokenBatch):
            for te in ev.events:
                positions[te.rollout_id].append(te.position)
                deltas[te.rollout_id].append(te.text)
        else:
            assert isinstance(ev, RolloutFinished)
            finished[ev.rollout.id] = ev.rollout
    assert finished.keys() == positions.keys()
    for rid, r in finished.items():
        # every token comes with its delta (an empty string for a token that adds no text), in order
        assert positions[rid] == list(range(len(r.tokens)))
        assert len(deltas[rid]) == len(r.tokens)
        assert r.text.startswith("".join(deltas[rid]))
    assert events[-1].cancelled is False


def test_same_seed_same_rollouts(engine):
    a = _group(engine, k=3, seed=9)
    b = _group(engine, k=3, seed=9)
    assert [r.token_ids for r in a.rollouts] == [r.token_ids for r in b.rollouts]
    assert [[t.logprob for t in r.tokens] for r in a.rollouts] == [[t.logprob for t in r.tokens] for r in b.rollouts]


def test_cancel_before_the_first_step_finishes_every_rollout_as_cancelled(engine):
    cancel = threading.Event()
    cancel.set()
    events = _events(engine.generate([QUERY], 2, SamplingParams(max_tokens=5), cancel=cancel))
    finished = [e.rollout for e in events if isinstance(e, RolloutFinished)]
    assert [r.finish_reason for r in finished] == ["cancelled", "cancelled"] and events[-1].cancelled


def test_branch_keeps_the_prefix_and_numbers_after_the_group(engine):
    group = _group(engine)
    parent = group.rollouts[1]
    events = _events(engine.branch(group, parent.id, 3, k=2, params=SamplingParams(max_tokens=4, seed=50)))
    assert events[0].is_branch and [h.rollout_id for h in events[0].rollouts] == ["q0.r2", "q0.r3"]
    for r in (e.rollout for e in events if isinstance(e, RolloutFinished)):
        assert r.parent_id == parent.id and r.branch_position == 3
        assert r.tokens[:3] == parent.tokens[:3] and len(r.tokens) == 3 + 4


def test_forced_token_gets_its_teacher_forced_logprob(engine):
    group = _group(engine)
    parent = group.rollouts[0]
    forced = parent.tokens[2].top[1].id
    events = _events(engine.branch(group, parent.id, 2, forced_token=forced, k=1,
                                   params=SamplingParams(max_tokens=3, seed=1)))
    (r,) = [e.rollout for e in events if isinstance(e, RolloutFinished)]
    assert r.tokens[2].id == forced and r.tokens[2].sampling_logprob is None
    assert r.tokens[2].logprob == pytest.approx(parent.tokens[2].top[1].logprob, abs=LP_TOL)


@pytest.mark.parametrize("rollout_id, position, forced, message", [
    ("q0.r9", 1, None, "no rollout"),
    ("q0.r0", 99, None, "outside rollout"),
    ("q0.r0", -1, None, "outside rollout"),
    ("q0.r0", 1, 10**6, "outside the vocabulary"),
])
def test_bad_branches_are_user_errors_not_engine_failures(engine, rollout_id, position, forced, message):
    group = _group(engine)
    with pytest.raises(ExplorerError, match=message) as caught:
        list(engine.branch(group, rollout_id, position, forced_token=forced))
    # EngineError means the engine itself failed; a bad request is the user's, and both engines say so alike
    assert not isinstance(caught.value, EngineError)


def test_scores_do_not_depend_on_their_batch_and_agree_with_a_forced_branch(engine):
    alone = engine.score(QUERY, ["Atlantic Ocean"])[0]
    together = engine.score(QUERY, ["Pacific", "Atlantic Ocean", ""])
    assert [s.response for s in together] == ["Pacific", "Atlantic Ocean", ""] and together[2].tokens == ()
    assert alone.tokens and [t.id for t in together[1].tokens] == [t.id for t in alone.tokens]
    assert [t.logprob for t in together[1].tokens] == pytest.approx([t.logprob for t in alone.tokens], abs=LP_TOL)
    assert all(t.sampling_logprob is None for t in alone.tokens)
    # forcing the response's first token at the start of a branch records the logprob scoring gives it
    group = _group(engine)
    events = _events(engine.branch(group, "q0.r0", 0, forced_token=alone.tokens[0].id, k=1,
                                   params=SamplingParams(max_tokens=1)))
    (r,) = [e.rollout for e in events if isinstance(e, RolloutFinished)]
    assert r.tokens[0].logprob == pytest.approx(alone.tokens[0].logprob, abs=LP_TOL)


def test_info_names_the_vocabulary_and_context(engine):
    info = engine.info
    assert info.n_vocab > 0 and info.n_ctx >= 64 and info.fingerprint
    prompt, ids = engine.format_prompt(QUERY, chat=engine.uses_chat(True))
    assert QUERY in prompt and ids and all(0 <= t < info.n_vocab for t in ids)


def test_a_value_run_continues_each_prefix_and_token_and_never_enters_the_baseline(engine):
    from explorer.core.rl.stats import in_baseline
    from explorer.core.types import ValueStart

    group = _group(engine, k=2, max_tokens=6)
    r0, r1 = group.rollouts
    taken = ValueStart(r0.id, 2, r0.tokens[2].id)  # the token r0 took: kept
    alternative = next(a for a in r0.tokens[3].top if a.id != r0.tokens[3].id)
    forced = ValueStart(r0.id, 3, alternative.id)  # one it did not: forced
    first = ValueStart(r1.id, 0, r1.tokens[0].id)
    events = _events(engine.continuations(group, [taken, forced, first], 3, SamplingParams(max_tokens=4, seed=70)))
    started = events[0]
    assert started.is_branch and [h.rollout_id for h in started.rollouts] == [f"q0.r{i}" for i in range(2, 11)]
    assert [h.value_position for h in started.rollouts] == [2] * 3 + [3] * 3 + [0] * 3
    finished = [e.rollout for e in events if isinstance(e, RolloutFinished)]
    assert sorted(r.id for r in finished) == sorted(h.rollout_id for h in started.rollouts)
    by_id = {r.id: r for r in finished}
    for start, ids in ((taken, range(2, 5)), (forced, range(5, 8)), (first, range(8, 11))):
        parent = next(r for r in group.rollouts if r.id == start.rollout_id)
        for i in ids:
            r = by_id[f"q0.r{i}"]
            assert r.token_ids[:start.position] == parent.token_ids[:start.position]
            assert r.token_ids[start.position] == start.token_id and r.value_position == start.position
            assert r.parent_id == parent.id and not in_baseline(r)
            assert r.seed == 70 + i
    forced_token = by_id["q0.r5"].tokens[3]
    assert forced_token.sampling_logprob is None
    assert forced_token.logprob == pytest.approx(alternative.logprob, abs=LP_TOL)
    # the continuations of one start differ (their own seeds) and the session takes them as value rollouts
    session = Session(engine.info)
    session.add_group(group)
    session.extend(events)
    estimates = session.value_estimates("q0")
    assert [(e.prefix_token_ids, e.token_id, len(e.rollout_ids)) for e in estimates] == [
        (r0.token_ids[:2], taken.token_id, 3), (r0.token_ids[:3], forced.token_id, 3), ((), first.token_id, 3)]


@pytest.mark.parametrize("start, message", [
    (("q0.r9", 1, 0), "no rollout"),
    (("q0.r0", 99, 0), "outside rollout"),
    (("q0.r0", 1, 10**6), "outside the vocabulary"),
])
def test_bad_value_starts_are_user_errors(engine, start, message):
    from explorer.core.types import ValueStart

    group = _group(engine)
    with pytest.raises(ExplorerError, match=message) as caught:
        list(engine.continuations(group, [ValueStart(*start)], 2))
    assert not isinstance(caught.value, EngineError)
    with pytest.raises(ExplorerError, match="nothing to estimate"):
        list(engine.continuations(group, [], 2))


def test_a_stopped_value_run_keeps_its_continuations_as_cancelled(engine):
    from explorer.core.types import ValueStart

    group = _group(engine)
    cancel = threading.Event()
    cancel.set()
    events = _events(engine.continuations(group, [ValueStart("q0.r0", 1, group.rollouts[0].tokens[1].id)], 2,
                                          SamplingParams(max_tokens=4), cancel=cancel))
    finished = [e.rollout for e in events if isinstance(e, RolloutFinished)]
    assert [r.finish_reason for r in finished] == ["cancelled", "cancelled"] and events[-1].cancelled
    assert all(r.value_position == 1 for r in finished)
