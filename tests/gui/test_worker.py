"""EngineWorker / EngineHost: the engine lives and runs on the worker thread only; events come batched and tagged."""

from __future__ import annotations

import threading

import pytest

from explorer.core.session import Session
from explorer.core.errors import EngineError
from explorer.core.types import RunFinished, RunStarted, SamplingParams, TokenBatch
from explorer.gui.run.worker import EngineHost


class Recorder:
    """Collects every worker signal in arrival order (on the GUI thread)."""

    def __init__(self, host: EngineHost):
        self.log: list[tuple] = []
        w = host  # re-emitted on the GUI thread
        w.model_loaded.connect(lambda info: self.log.append(("loaded", info)))
        w.model_failed.connect(lambda failure: self.log.append(("model_failed", str(failure))))
        w.events.connect(lambda rid, evs: self.log.append(("events", rid, evs)))
        w.scores_ready.connect(lambda rid, gid, scores: self.log.append(("scores", rid, gid, scores)))
        w.failed.connect(lambda rid, failure: self.log.append(("failed", rid, str(failure))))
        w.finished.connect(lambda rid: self.log.append(("finished", rid)))

    def events(self, run_id: int) -> list:
        return [ev for entry in self.log if entry[0] == "events" and entry[1] == run_id for ev in entry[2]]

    def of(self, kind: str) -> list[tuple]:
        return [entry for entry in self.log if entry[0] == kind]


@pytest.fixture
def host(qtbot, fake_factory):
    h = EngineHost(fake_factory)
    yield h
    assert h.shutdown(2000)


def load(qtbot, host, path):
    with qtbot.waitSignal(host.model_loaded, timeout=5000) as blocker:
        host.load_model(str(path))
    return blocker.args[0]


def test_generate_streams_batched_events_on_the_worker_thread(qtbot, host, fake_factory, fake_model, main_thread_id):
    rec = Recorder(host)
    receivers = []
    host.events.connect(lambda *_: receivers.append(threading.get_ident()))
    info = load(qtbot, host, fake_model)
    assert info.path == str(fake_model)
    params = SamplingParams(max_tokens=20, seed=3)
    with qtbot.waitSignal(host.finished, timeout=5000):
        run_id = host.generate(["Which is the largest ocean?", "Can you give me some python code?"], 4, params)
    events = rec.events(run_id)
    assert isinstance(events[0], RunStarted) and isinstance(events[-1], RunFinished)
    # the worker batches: far fewer signals than decode steps
    n_steps = sum(isinstance(ev, TokenBatch) for ev in events)
    assert len(rec.of("events")) < n_steps
    collector = Session(info).extend(events)
    assert len(collector.group_ids) == 2
    for gid in collector.group_ids:
        rollouts = collector.group(gid).rollouts
        assert len(rollouts) == 4 and all(r.finish_reason in ("stop", "length") and r.tokens for r in rollouts)
    # every call into the engine happened on the worker thread
    engine = fake_factory.engine
    assert engine.calls and main_thread_id not in engine.threads()
    assert rec.log[-1] == ("finished", run_id)
    # what the GUI connects to the host runs on the GUI thread, even a plain lambda
    assert receivers and set(receivers) == {main_thread_id}


def test_stop_mid_run_keeps_tokens_and_marks_cancelled(qtbot, host, fake_factory, fake_model):
    rec = Recorder(host)
    fake_factory.configure = lambda e: setattr(e, "hold_at_step", 3)
    info = load(qtbot, host, fake_model)
    run_id = host.generate(["Which is the largest ocean?"], 3, SamplingParams(max_tokens=50))
    qtbot.waitUntil(fake_factory.engine.held.is_set, timeout=5000)
    with qtbot.waitSignal(host.finished, timeout=5000):
        host.stop(run_id)
    collector = Session(info).extend(rec.events(run_id))
    assert collector.cancelled
    rollouts = collector.group("q0").rollouts
    assert [len(r.tokens) for r in rollouts] == [3, 3, 3]
    assert all(r.finish_reason == "cancelled" for r in rollouts)


def test_run_while_running_cancels_the_old_run_first(qtbot, host, fake_factory, fake_model):
    rec = Recorder(host)
    fake_factory.configure = lambda e: setattr(e, "hold_at_step", 2)
    info = load(qtbot, host, fake_model)
    first = host.generate(["a"], 2, SamplingParams(max_tokens=30))
    qtbot.waitUntil(fake_factory.engine.held.is_set, timeout=5000)
    fake_factory.engine.hold_at_step = None
    with qtbot.waitSignals([host.finished, host.finished], timeout=5000):
        second = host.generate(["b"], 2, SamplingParams(max_tokens=5))
    assert [entry[1] for entry in rec.of("finished")] == [first, second]
    assert Session(info).extend(rec.events(first)).cancelled
    done = Session(info).extend(rec.events(second))
    assert not done.cancelled and done.group("q0").query == "b"


def test_bad_model_reports_the_reason(qtbot, host, bad_model):
    with qtbot.waitSignal(host.model_failed, timeout=5000) as blocker:
        host.load_model(str(bad_model))
    failure = blocker.args[0]
    assert "not a GGUF" in str(failure) and str(bad_model) in str(failure) and failure.user_error


def test_generate_without_model_fails_cleanly(qtbot, host):
    rec = Recorder(host)
    with qtbot.waitSignal(host.finished, timeout=5000):
        run_id = host.generate(["q"], 1, SamplingParams())
    assert rec.of("failed") == [("failed", run_id, "No model is loaded: pick a model first.")]


@pytest.mark.parametrize("error, expected", [
    (EngineError("llama_decode returned -1"), "llama_decode returned -1"),
    (RuntimeError("boom"), "Engine error: RuntimeError: boom"),
])
def test_failure_mid_run_keeps_earlier_tokens(qtbot, host, fake_factory, fake_model, error, expected):
    rec = Recorder(host)
    info = load(qtbot, host, fake_model)
    fake_factory.engine.fail_at_step = 4
    fake_factory.engine.fail_with = error
    with qtbot.waitSignal(host.finished, timeout=5000):
        run_id = host.generate(["q"], 2, SamplingParams(max_tokens=30))
    assert rec.of("failed") == [("failed", run_id, expected)]
    collector = Session(info).extend(rec.events(run_id))
    assert [len(r.tokens) for r in collector.group("q0").rollouts] == [4, 4]


def test_score_answers_with_scores(qtbot, host, fake_model):
    load(qtbot, host, fake_model)
    with qtbot.waitSignal(host.scores_ready, timeout=5000) as blocker:
        host.score("q0", "Which is the largest ocean?", [" Atlantic Ocean", " Pacific Ocean"])
    _, group_id, scores = blocker.args
    assert group_id == "q0" and [s.response for s in scores] == [" Atlantic Ocean", " Pacific Ocean"]
    assert all(s.logprob < 0 and len(s.tokens) == 2 for s in scores)


def test_shutdown_closes_the_engine_on_its_thread(qtbot, fake_factory, fake_model, main_thread_id):
    host = EngineHost(fake_factory)
    load(qtbot, host, fake_model)
    fake_factory.engine.hold_at_step = 1
    host.generate(["q"], 2, SamplingParams(max_tokens=30))
    qtbot.waitUntil(fake_factory.engine.held.is_set, timeout=5000)
    assert host.shutdown(2000)
    assert not host.thread.isRunning()
    engine = fake_factory.engine
    assert engine.closed
    assert "close" in [name for name, _ in engine.calls] and main_thread_id not in engine.threads()
