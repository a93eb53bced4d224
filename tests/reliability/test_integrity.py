"""What a set read from a file may hide: texts that do not say what their tokens say, token ids another model's
vocabulary does not have. Real runs (tiny GGUF: byte tokens, split characters, stop strings, cancelled rollouts)
are never flagged; edited ones are, with their JSON path."""

from __future__ import annotations

from dataclasses import replace

import pytest

from explorer.core.files import export
from explorer.core.files import integrity
from explorer.core.engine.local import Engine
from explorer.core.types import Query, SamplingParams, TokenBatch


def generated(tiny_gguf, **params):
    from explorer.core.session import Session

    engine = Engine(tiny_gguf)
    try:
        sampling = SamplingParams(**params)
        collector = Session(engine.info, sampling)
        for event in engine.generate([Query("the ocean"), Query("ü海 é")], 8, sampling):
            collector.add(event)
        return collector.rollout_set()
    finally:
        engine.close()


@pytest.mark.parametrize("params", [
    dict(max_tokens=24, temperature=1.5, top_k=0, top_p=1.0, min_p=0.0),  # byte tokens: split UTF-8 characters
    dict(max_tokens=24, stop=("e", "a")),
    dict(max_tokens=24, temperature=0.0),
], ids=["wild", "stop-strings", "greedy"])
def test_real_runs_are_never_flagged(tiny_gguf, params):
    rs = generated(tiny_gguf, **params)
    assert integrity.text_problems(rs) == []
    assert integrity.vocab_report(rs, rs.model.n_vocab) is None


def test_a_cancelled_run_is_not_flagged(tiny_gguf):
    import threading

    from explorer.core.session import Session

    engine = Engine(tiny_gguf)
    cancel = threading.Event()
    sampling = SamplingParams(max_tokens=200, temperature=1.5, top_k=0, top_p=1.0, min_p=0.0)
    collector = Session(engine.info, sampling)
    try:
        for event in engine.generate([Query("the ocean")], 8, sampling, cancel=cancel):
            collector.add(event)
            if isinstance(event, TokenBatch) and event.events[0].position == 5:
                cancel.set()
    finally:
        engine.close()
    rs = collector.rollout_set("cancelled")
    assert any(r.finish_reason == "cancelled" for r in rs.groups[0].rollouts)
    assert integrity.text_problems(rs) == []


def test_an_edited_text_is_flagged_with_its_path(tiny_gguf):
    rs = generated(tiny_gguf, max_tokens=12)
    group = rs.groups[1]
    edited = replace(group.rollouts[3], text=group.rollouts[3].text + " and more")
    rs = replace(rs, groups=(rs.groups[0], replace(group, rollouts=group.rollouts[:3] + (edited,)
                                                   + group.rollouts[4:])))
    problems = integrity.text_problems(rs)
    assert len(problems) == 1
    assert problems[0].startswith(f"at $.groups[1].rollouts[3].text (rollout {edited.id}): the text does not "
                                  "match its tokens' bytes")


def test_a_text_shorter_than_its_tokens_is_flagged(tiny_gguf):
    rs = generated(tiny_gguf, max_tokens=12, temperature=0.0)
    r = next(r for r in rs.groups[0].rollouts if len(r.text) > 3 and r.finish_reason == "length")
    assert integrity.text_problem(replace(r, text=r.text[:-2])) is not None
    assert integrity.text_problem(replace(r, text="")) is not None
    # a stop string may cut a text short: the same text is fine as stop_string
    assert integrity.text_problem(replace(r, text=r.text[:-2], finish_reason="stop_string")) is None


def test_token_ids_outside_another_models_vocabulary(tiny_gguf, tmp_path):
    rs = generated(tiny_gguf, max_tokens=6)
    path = tmp_path / "set.json"
    export.save(rs, path)
    loaded = export.load(path)
    n_vocab = rs.model.n_vocab
    assert integrity.vocab_report(loaded, n_vocab) is None
    smaller = max(t.id for g in loaded.groups for r in g.rollouts for t in r.tokens)  # ids >= this are outside
    report = integrity.vocab_report(loaded, smaller)
    assert report is not None and report.n_outside >= 1 and report.largest >= smaller
    assert report.first_at.startswith("$.groups[")
    message = report.message(smaller)
    assert f"outside the loaded model's vocabulary (0..{smaller - 1}" in message and "another model" in message
