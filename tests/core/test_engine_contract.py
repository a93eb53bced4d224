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
