"""A dataset run on the scripted engine: groups written as they finish, Stop keeps them, a resumed run samples only
what is missing and ends with the set an uninterrupted run makes."""

from __future__ import annotations

import json
import threading

import pytest
from fake_engine import FakeEngine

from explorer.core.dataset.run import DatasetRun, ResumeError, calls, prompts_per_call
from explorer.core.dataset.writer import partial_path, read_groups
from explorer.core.errors import EngineError
from explorer.core.files import export
from explorer.core.rl.rewards import load_reward
from explorer.core.types import Query, SamplingParams

PARAMS = SamplingParams(max_tokens=6, seed=3)
K = 4


def _queries(n):
    return [Query(f"Which ocean {i}?", "Pacific", (("row", i),)) for i in range(n)]


def _run(path, queries, engine=None, **kwargs):
    run = DatasetRun(engine or FakeEngine("fake:m"), queries, K, PARAMS, str(path), reward=load_reward("contains"),
                     **kwargs)
    return run, run.run(kwargs.pop("cancel", None) if "cancel" in kwargs else None)


def _content(path):
    return [(g.id, g.query, [r.token_ids for r in g.rollouts], [r.reward for r in g.rollouts], g.stats, g.columns)
            for g in export.load(path).groups]


def test_every_group_is_written_rewarded_and_summarized(tmp_path):
    out = tmp_path / "set.json"
    run, result = _run(out, _queries(150))
    assert (result.done, result.resumed, result.cut, result.cancelled) == (150, 0, 0, False)
    rs = export.load(out)
    assert [g.id for g in rs.groups] == [f"q{i}" for i in range(150)]
    assert all(len(g.rollouts) == K and dict(g.stats)["correct_at"] == 1.0 for g in rs.groups)
    assert rs.groups[7].columns == (("row", 7),) and rs.groups[7].reference_answer == "Pacific"
    assert [s.group_id for s in run.summaries] == [g.id for g in rs.groups]
    assert run.summaries[3].rewards == tuple(r.reward for r in rs.groups[3].rollouts)
    assert rs.timings.tokens_per_s > 0 and result.tokens == sum(len(r.tokens) for g in rs.groups for r in g.rollouts)
    assert not partial_path(str(out)).exists()
    # the engine got the prompts a batch at a time
    assert prompts_per_call(K) == 4 and [len(c) for c in calls(_queries(10), K)] == [4, 4, 2]
    assert prompts_per_call(64) == 1


def test_groups_reach_the_disk_as_they_finish(tmp_path):
    out = tmp_path / "set.json"
    engine = FakeEngine("fake:m")
    seen = []

    def on_group(group, summary):
        lines = partial_path(str(out)).read_text().splitlines()
        seen.append((group.id, len(lines) - 1))  # the header line, then one line per group so far

    _run(out, _queries(70), engine, on_group=on_group)
    assert seen == [(f"q{i}", i + 1) for i in range(70)]


def test_stop_keeps_the_finished_groups_and_a_resume_completes_the_set(tmp_path):
    whole = tmp_path / "whole.json"
    _run(whole, _queries(100))

    out = tmp_path / "stopped.json"
    engine = FakeEngine("fake:m")
    cancel = threading.Event()
    steps = []

    def step_hook(step):  # Stop three decode steps into the engine's 17th call (64 groups made)
        steps.append(step)
        if step == 3 and steps.count(0) == 17:
            cancel.set()

    engine.step_hook = step_hook
    run = DatasetRun(engine, _queries(100), K, PARAMS, str(out), reward=load_reward("contains"))
    result = run.run(cancel)
    assert result.cancelled and (result.done, result.cut) == (64, 4)
    stopped = export.load(out)
    assert len(stopped.groups) == 68
    cut = stopped.groups[64:]
    assert all(r.finish_reason == "cancelled" and len(r.tokens) == 3 for g in cut for r in g.rollouts)
    assert all(r.finish_reason != "cancelled" for g in stopped.groups[:64] for r in g.rollouts)

    resumed_run = DatasetRun(FakeEngine("fake:m"), _queries(100), K, PARAMS, str(out),
                             reward=load_reward("contains"), resume=str(out))
    again = resumed_run.run()
    assert (again.resumed, again.done) == (64, 36)
    content = sorted(_content(out))
    assert content == sorted(_content(whole))  # the same groups, rollouts, rewards and statistics
    assert len(resumed_run.summaries) == 100


def test_a_crash_leaves_a_partial_file_that_resumes(tmp_path):
    out = tmp_path / "set.json"
    engine = FakeEngine("fake:m")
    engine.fail_at_step = None
    boom = []

    def on_group(group, summary):
        if group.id == "q5":
            boom.append(1)
            raise RuntimeError("the process dies here")

    with pytest.raises(RuntimeError):
        _run(out, _queries(10), engine, on_group=on_group)
    partial = partial_path(str(out))
    assert partial.exists() and not out.exists()
    # a crash can cut the last line short: it is left out
    with open(partial, "a") as f:
        f.write('{"id": "q9", "query"')
    ids = [g.id for g in read_groups(str(partial))]
    assert ids == ["q0", "q1", "q2", "q3", "q4", "q5"]  # q5 was written before its summary failed

    _run(out, _queries(10), resume=str(partial))
    assert [g.id for g in export.load(out).groups][:6] == ids and len(export.load(out).groups) == 10
    assert not partial.exists() and not (tmp_path / "set.json.partial.resumed").exists()


def test_a_failing_engine_still_writes_what_finished(tmp_path):
    out = tmp_path / "set.json"
    engine = FakeEngine("fake:m")
    calls_seen = []
    engine.step_hook = lambda step: calls_seen.append(step)
    original = engine.generate

    def generate(queries, *args, **kwargs):
        if queries[0].group_id != "q0":
            engine.fail_at_step = 2
        return original(queries, *args, **kwargs)

    engine.generate = generate
    run = DatasetRun(engine, _queries(80), K, PARAMS, str(out))
    with pytest.raises(EngineError):
        run.run()
    assert len(export.load(out).groups) == 4  # the first call's groups; the failing call's none
    nothing = tmp_path / "nothing.json"
    engine.fail_at_step = 0
    engine.generate = original
    with pytest.raises(EngineError):
        DatasetRun(engine, _queries(3), K, PARAMS, str(nothing)).run()
    assert not nothing.exists() and not partial_path(str(nothing)).exists()


@pytest.mark.parametrize("change, needle", [
    (dict(queries=[Query("Another question?")] + _queries(20)[1:]), "its group q0 asks 'Which ocean 0\\?'"),
    (dict(queries=_queries(3)), "its group q3 is not a prompt of this dataset"),
    (dict(params=SamplingParams(max_tokens=6, seed=4)), "sampled with other settings: seed 3 \\(this run: 4\\)"),
    (dict(k=2), "has 4 rollouts; this run asks -k 2"),
    (dict(engine=FakeEngine("fake:other")), "made with another model"),
])
def test_a_set_that_does_not_match_is_refused_and_left_alone(tmp_path, change, needle):
    first = tmp_path / "first.json"
    _run(first, _queries(20))
    before = first.read_bytes()
    out = tmp_path / "out.json"
    with pytest.raises(ResumeError, match=needle):
        DatasetRun(change.get("engine") or FakeEngine("fake:m"), change.get("queries", _queries(20)),
                   change.get("k", K), change.get("params", PARAMS), str(out), resume=str(first)).run()
    assert first.read_bytes() == before and not out.exists() and not partial_path(str(out)).exists()


def test_stdout_gets_the_set(tmp_path, capsys):
    run = DatasetRun(FakeEngine("fake:m"), _queries(3), K, PARAMS, "-")
    run.run()
    data = json.loads(capsys.readouterr().out)
    assert [g["id"] for g in data["groups"]] == ["q0", "q1", "q2"] and data["timings"]["tokens_per_s"] > 0
