"""Signals to the real window process (offscreen, the tiny GGUF, a run streaming): SIGINT and SIGTERM stop the run,
keep it in the recovery journal and exit with 128 + the signal's number; SIGKILL leaves a journal that reads back
with what was flushed before the kill; the next start offers the run back. Exit times are measured in
`make bench` (bench/reliability_bench.py); here a generous bound only tells a hang from an exit."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from window_process import journal_tokens, start_streaming_window

from explorer.core.files.journal import read_journal

pytestmark = pytest.mark.slow

HANG_S = 30  # far above the 2 s an exit takes: only a hang fails this


def start_window(tmp_path: Path, tiny_gguf: Path):
    proc, journal = start_streaming_window(tmp_path, tiny_gguf)
    if journal is None:
        pytest.fail(f"no streamed tokens reached the journal: {proc.stderr.read()[-2000:]}")
    return proc, journal


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_keeps_the_run_and_exits_with_its_status(tmp_path, tiny_gguf, signum):
    proc, journal = start_window(tmp_path, tiny_gguf)
    proc.send_signal(signum)
    code = proc.wait(timeout=HANG_S)
    stderr = proc.stderr.read()
    assert code == 128 + signum, stderr
    assert "Traceback" not in stderr and "Segmentation" not in stderr
    rs = read_journal(journal)
    rollouts = [r for g in rs.groups for r in g.rollouts]
    assert len(rollouts) == 64 and all(r.tokens for r in rollouts)
    assert any(r.finish_reason == "cancelled" for r in rollouts)


def test_kill_9_leaves_a_readable_journal_with_what_was_flushed(tmp_path, tiny_gguf):
    proc, journal = start_window(tmp_path, tiny_gguf)
    before = journal_tokens(journal)
    deadline = time.monotonic() + 60
    while journal_tokens(journal) <= before and time.monotonic() < deadline:  # a later flush has landed
        time.sleep(0.05)
    proc.kill()
    killed_at = time.time()
    assert proc.wait(timeout=HANG_S) == -signal.SIGKILL
    rs = read_journal(journal)  # never truncated into something unreadable
    after = sum(len(r.tokens) for g in rs.groups for r in g.rollouts)
    assert after > before
    assert all(r.finish_reason in ("cancelled", "stop", "length") for g in rs.groups for r in g.rollouts)
    # what a kill loses is what came after the last flush: the journal was written within the autosave interval
    from explorer.gui.window.recovery import AUTOSAVE_INTERVAL_MS

    assert killed_at - journal.stat().st_mtime <= AUTOSAVE_INTERVAL_MS / 1000 + 1.0


def test_the_next_start_offers_the_interrupted_run_back(tmp_path, tiny_gguf, qtbot):
    proc, journal = start_window(tmp_path, tiny_gguf)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=HANG_S) == 130

    from PySide6.QtCore import QSettings

    from explorer.gui.window.main_window import MainWindow
    from explorer.gui.run.worker import default_engine_factory

    questions = []
    window = MainWindow(default_engine_factory, settings=QSettings(str(tmp_path / "s.ini"),
                                                                   QSettings.Format.IniFormat),
                        show_error=lambda t, m: pytest.fail(f"{t}: {m}"),
                        ask=lambda title, question: questions.append(question) or True,
                        recovery_dir=str(journal.parent), discover=None, persist=True)
    qtbot.addWidget(window)
    assert window.files.offer_recovery()
    assert len(questions) == 1 and "Show its 64 rollouts (2 queries" in questions[0]
    shown = window.session
    assert shown is not None and len(shown.group_ids) == 2
    window.close()
