"""The recovery journal: what a run streamed comes back from it after the process dies at any byte, never an
unreadable file; a journal's cost per flush is what was appended, not the size of the set."""

from __future__ import annotations

import threading

import pytest

from explorer.core.files import export
from explorer.core.engine.local import Engine
from explorer.core.errors import RolloutFileError
from explorer.core.files.journal import JournalWriter, read_journal
from explorer.core.types import (
    Query, QueryGroup, RolloutFinished, RolloutSet, RunStarted, SamplingParams, TokenBatch,
)


def run_events(tiny_gguf, k=4, max_tokens=30, cancel_at=None):
    engine = Engine(tiny_gguf)
    cancel = threading.Event()
    try:
        events = []
        for event in engine.generate([Query("the ocean"), Query("ü海")], k, SamplingParams(max_tokens=max_tokens,
                                                                                           temperature=1.5),
                                     cancel=cancel):
            events.append(event)
            if cancel_at is not None and isinstance(event, TokenBatch) and event.events[0].position == cancel_at:
                cancel.set()
        return engine.info, events
    finally:
        engine.close()


def empty_set(info):
    return export.loads(export.dumps(export.RolloutSet(model=info, sampling=SamplingParams(), groups=())))


def test_a_whole_run_reads_back_as_the_rollouts_it_finished(tiny_gguf, tmp_path):
    info, events = run_events(tiny_gguf)
    writer = JournalWriter(tmp_path / "run.journal")
    writer.begin(empty_set(info))
    for start in range(0, len(events), 7):  # flushed in several appends, as the autosave timer does
        writer.append(events[start:start + 7])
    writer.close()
    finished = {e.rollout.id: e.rollout for e in events if isinstance(e, RolloutFinished)}
    rs = read_journal(tmp_path / "run.journal")
    assert {r.id: r for g in rs.groups for r in g.rollouts} == finished
    assert [g.query for g in rs.groups] == ["the ocean", "ü海"]


def test_a_crash_at_any_byte_loses_only_the_line_it_cut(tiny_gguf, tmp_path):
    info, events = run_events(tiny_gguf, k=3, max_tokens=12)
    path = tmp_path / "run.journal"
    writer = JournalWriter(path)
    writer.begin(empty_set(info))
    header_end = path.stat().st_size
    writer.append(events)
    writer.close()
    data = path.read_bytes()
    cut_path = tmp_path / "cut.journal"
    previous = -1
    for cut in [*range(header_end, len(data), max(1, (len(data) - header_end) // 150)), len(data)]:
        cut_path.write_bytes(data[:cut])
        rs = read_journal(cut_path)
        tokens = sum(len(r.tokens) for g in rs.groups for r in g.rollouts)
        assert tokens >= previous  # more of the file never means fewer tokens back
        previous = tokens
        assert all(r.finish_reason in ("cancelled", "stop", "length") for g in rs.groups for r in g.rollouts)


def test_streaming_rollouts_come_back_cancelled_with_their_tokens(tiny_gguf, tmp_path):
    info, events = run_events(tiny_gguf, k=4, max_tokens=200, cancel_at=None)
    streaming = [e for e in events if not isinstance(e, RolloutFinished)][:12]  # start and a few token batches
    path = tmp_path / "run.journal"
    writer = JournalWriter(path)
    writer.begin(empty_set(info))
    writer.append(streaming)
    writer.close()
    rs = read_journal(path)
    n_batches = sum(isinstance(e, TokenBatch) for e in streaming)
    for g in rs.groups:
        for r in g.rollouts:
            assert r.finish_reason == "cancelled" and len(r.tokens) == n_batches


def test_a_damaged_journal_is_refused_with_one_line(tiny_gguf, tmp_path):
    info, events = run_events(tiny_gguf, k=2, max_tokens=5)
    path = tmp_path / "run.journal"
    writer = JournalWriter(path)
    writer.begin(empty_set(info))
    writer.append(events)
    writer.close()
    lines = path.read_bytes().split(b"\n")
    bad = tmp_path / "bad.journal"
    bad.write_bytes(b"\n".join(lines[:3] + [b'{"tokens": [["q0.r0", 0, {"id": -4}, "x"]]}'] + lines[3:]))
    with pytest.raises(RolloutFileError, match=r"schema violation at line 4\.tokens\[0\]"):
        read_journal(bad)
    (tmp_path / "other.journal").write_text('{"format": "something"}\n{}\n')
    with pytest.raises(RolloutFileError, match="not a run journal"):
        read_journal(tmp_path / "other.journal")


def test_a_branch_streaming_when_the_journal_ends_keeps_its_own_sampling(tiny_gguf, tmp_path):
    info, events = run_events(tiny_gguf, k=2, max_tokens=6)
    done = [e.rollout for e in events if isinstance(e, RolloutFinished)]
    base = empty_set(info)
    engine = Engine(tiny_gguf)
    try:
        started = next(e for e in events if isinstance(e, RunStarted))
        header = started.groups[0]
        group = QueryGroup(header.id, header.query, header.chat, header.prompt, header.prompt_token_ids,
                           rollouts=tuple(r for r in done if r.id.startswith(header.id + ".")))
        own = SamplingParams(max_tokens=50, temperature=0.3, seed=99)
        branch = list(engine.branch(group, group.rollouts[0].id, 2, k=2, params=own))
    finally:
        engine.close()
    path = tmp_path / "run.journal"
    writer = JournalWriter(path)
    writer.begin(RolloutSet(model=base.model, sampling=base.sampling, groups=(group,)))
    writer.append([e for e in branch if not isinstance(e, RolloutFinished)][:4])  # cut mid-branch
    writer.close()
    recovered = read_journal(path).groups[0].rollouts
    streaming = [r for r in recovered if r.parent_id is not None]
    assert len(streaming) == 2 and all(r.sampling == own and r.finish_reason == "cancelled" for r in streaming)
    assert recovered[0] == group.rollouts[0]


def test_a_checkpoint_taken_mid_run_then_the_rest_of_the_run(tiny_gguf, tmp_path):
    """The window checkpoints a generate's Session at its first autosave tick, while rollouts stream: those are
    written as cancelled, then their later tokens (and their ends) come as events and must join them."""
    from explorer.core.session import Session

    info, events = run_events(tiny_gguf, k=3, max_tokens=20)
    cut = next(i for i, e in enumerate(events) if isinstance(e, TokenBatch) and e.events[0].position == 5)
    session = Session(info, SamplingParams(max_tokens=20, temperature=1.5))
    session.feed(0, events[:cut])
    path = tmp_path / "run.journal"
    writer = JournalWriter(path)
    writer.begin(session.rollout_set("cancelled"))
    writer.append(events[cut:])
    writer.close()
    session.feed(0, events[cut:])
    assert [g.rollouts for g in read_journal(path).groups] == [g.rollouts for g in session.rollout_set().groups]
