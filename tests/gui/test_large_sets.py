"""Opening a large rollout set in the window: read on a worker thread behind a progress dialog (the event loop keeps
running), Cancel stops it and leaves what was shown; an edited set or one from another vocabulary opens with a
warning that says where."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import pytest
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QPushButton

from explorer.core.files import export
from explorer.gui.window import file_actions

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reliability"))
from synthetic import synthetic_set  # noqa: E402


@pytest.fixture
def large_set(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "large.json"
    export.save(synthetic_set(6, 8, 200), path)
    monkeypatch.setattr(file_actions, "LARGE_SET_BYTES", 1 << 20)  # this 5 MB set counts as large
    return path


def test_a_large_set_opens_on_a_worker_with_progress(qtbot, window, large_set, dialogs, monkeypatch):
    gui_turned = threading.Event()
    real_load = export.load

    def load_after_a_gui_turn(path, progress=None, cancel=None):
        # the read starts only once the GUI thread has run a timer: were it read on the GUI thread, this would wait
        # out its bound and the set would fail to open instead
        assert gui_turned.wait(30), "the event loop did not run while the set was read"
        return real_load(path, progress=progress, cancel=cancel)

    monkeypatch.setattr(export, "load", load_after_a_gui_turn)
    progressed = []
    window.files.set_loader.progressed.connect(lambda path, done, total: progressed.append(done))
    with qtbot.waitSignal(window.files.set_loader.loaded, timeout=60_000):
        assert window.files.open_rollout_set(str(large_set))
        assert window.files._progress is not None and window.files._progress.isVisible()
        QTimer.singleShot(0, gui_turned.set)
    qtbot.waitUntil(lambda: window.session is not None and window.session.source == str(large_set))
    assert progressed and progressed == sorted(progressed) and progressed[-1] == large_set.stat().st_size
    assert len(window.session.group_ids) == 6
    assert window.files._progress is None and dialogs.errors == []


def test_cancel_leaves_what_was_shown(qtbot, window, large_set, tmp_path):
    small = tmp_path / "small.json"
    export.save(synthetic_set(1, 2, 3), small)
    assert window.files.open_rollout_set(str(small))
    with qtbot.waitSignal(window.files.set_loader.cancelled, timeout=60_000):
        window.files.open_rollout_set(str(large_set))
        window.files._progress.findChild(QPushButton).click()  # Cancel, pressed while the first chunks are read
    assert window.session.source == str(small) and window.files._progress is None


def test_an_edited_text_opens_with_a_warning_naming_the_rollout(window, tmp_path, dialogs):
    path = tmp_path / "edited.json"
    d = export.to_dict(synthetic_set(1, 3, 4))
    d["groups"][0]["rollouts"][2]["text"] = "not what the tokens say"
    path.write_text(json.dumps(d))
    assert window.files.open_rollout_set(str(path))
    assert len(window.session.group_ids) == 1
    (title, message), = dialogs.errors
    assert title == "Opened with warnings" and "$.groups[0].rollouts[2].text" in message
