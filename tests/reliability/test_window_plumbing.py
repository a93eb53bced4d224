"""The window's pieces for signals and large files, in process: a signal reaches the GUI thread as a Qt signal
while the event loop waits; a set reads on a worker thread with progress, and a cancel stops it."""

from __future__ import annotations

import os
import signal
import threading

import pytest
from synthetic import synthetic_set

from explorer.core.files import export
from explorer.gui.window.set_loader import SetLoader
from explorer.gui.window.signals import SignalBridge, exit_status


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_arrives_on_the_gui_thread_while_the_loop_waits(qtbot, signum):
    before = signal.getsignal(signum)
    bridge = SignalBridge()
    try:
        seen_on = []
        bridge.received.connect(lambda s: seen_on.append(threading.current_thread()))
        with qtbot.waitSignal(bridge.received, timeout=5000) as blocker:
            os.kill(os.getpid(), signum)  # the handler only wakes the loop: no KeyboardInterrupt, no default death
        assert blocker.args == [signum] and seen_on == [threading.main_thread()]
    finally:
        bridge.close()
    assert signal.getsignal(signum) is before  # given back
    assert exit_status(signum) == 128 + signum


def test_a_set_reads_on_a_worker_with_progress(qtbot, tmp_path):
    path = tmp_path / "large.json"
    original = synthetic_set(3, 8, 200)
    export.save(original, path)
    loader = SetLoader()
    progress = []
    loader.progressed.connect(lambda p, done, total: progress.append((done, total)))
    with qtbot.waitSignal(loader.loaded, timeout=60_000) as blocker:
        loader.start(str(path))
    assert blocker.args == [str(path), original]
    size = path.stat().st_size
    assert progress and progress[-1] == (size, size)
    assert loader.wait(5)


def test_cancel_stops_a_read(qtbot, tmp_path):
    path = tmp_path / "large.json"
    export.save(synthetic_set(6, 8, 200), path)
    loader = SetLoader()
    loader.progressed.connect(lambda *_: loader.cancel())  # cancelled after its first chunk
    loaded = []
    loader.loaded.connect(lambda *args: loaded.append(args))
    with qtbot.waitSignal(loader.cancelled, timeout=60_000):
        loader.start(str(path))
    assert loader.wait(5) and loaded == []


def test_a_bad_file_fails_with_its_one_line(qtbot, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"format": 3}')
    loader = SetLoader()
    with qtbot.waitSignal(loader.failed, timeout=10_000) as blocker:
        loader.start(str(path))
    assert blocker.args[0] == str(path) and "format" in blocker.args[1] and blocker.args[2] is None
