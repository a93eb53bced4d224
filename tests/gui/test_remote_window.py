"""The window against a policy on a server: "Connect to a server..." in the model picker, the probe's facts shown,
a run streamed into the panes, the URL remembered without credentials; a server that cannot be reached is a dialog
and the window stays usable. The server is a real HTTP server on 127.0.0.1 speaking vLLM's routes (tests/servers.py);
the engine factory is the real one."""

from __future__ import annotations

import socket

import pytest

from explorer.gui.window.main_window import SERVER_URL_KEY, MainWindow
from explorer.gui.run.worker import default_engine_factory
from gui_kit import pane_texts, run_to_end
from servers import ScriptedVllm, stream_abc


@pytest.fixture
def server():
    srv = ScriptedVllm(stream_abc)
    yield srv
    srv.stop()


@pytest.fixture
def connect_window(qtbot, gui_settings, dialogs, tmp_path):
    windows = []

    def make(answer: str) -> MainWindow:
        asked = []

        def ask_text(title, label, text):
            asked.append(text)
            return answer

        window = MainWindow(default_engine_factory, settings=gui_settings, show_error=dialogs.error, ask=dialogs.ask,
                            recovery_dir=str(tmp_path / "recovery"), discover=lambda: [], ask_text=ask_text)
        window.asked = asked
        qtbot.addWidget(window)
        window.show()
        windows.append(window)
        return window

    yield make
    for window in windows:
        window.close()


def test_connect_to_a_server_runs_into_the_panes(qtbot, server, connect_window, gui_settings, tmp_path):
    url = server.url.replace("http://", "http://user:secret@") + "#tiny"
    window = connect_window(url)
    with qtbot.waitSignal(window.model_ready, timeout=10000) as loaded:
        window.controls.server_action.trigger()
    info = loaded.args[0]
    assert info.server_kind == "vllm" and info.path == server.url  # shown and kept without the credentials
    server_fact = window.controls.facts["server"]
    assert server_fact.text().splitlines() == ["vllm 0.0-scripted", "logprobs raw", "entropy unknown (top N)"]
    assert "token ids yes; prompt logprobs yes" in server_fact.toolTip()
    host = server.url.split("://", 1)[1]  # 127.0.0.1:PORT, not the "127.0.0" a file-name stem makes of it
    assert window.controls.model_combo.currentText() == host
    assert window.status.model_label.text().startswith(host)
    assert gui_settings.value(SERVER_URL_KEY) == server.url + "#tiny"
    gui_settings.sync()
    assert "secret" not in (tmp_path / "settings.ini").read_text()
    cancelled, failed = run_to_end(qtbot, window, k=5, max_tokens=3, queries=["q"])
    assert (cancelled, failed) == (False, False)
    assert pane_texts(window) == ["abc"] * 5
    assert server.count == 5  # one request per rollout


def test_the_last_server_is_offered_again(qtbot, server, connect_window, gui_settings):
    gui_settings.setValue(SERVER_URL_KEY, server.url)
    window = connect_window(server.url)
    with qtbot.waitSignal(window.model_ready, timeout=10000):
        window.connect_server()
    assert window.asked == [server.url]


def test_an_unreachable_server_is_a_dialog_and_the_window_lives(qtbot, connect_window, dialogs):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    window = connect_window(f"http://127.0.0.1:{port}")
    with qtbot.waitSignal(window.model_load_failed, timeout=20000):
        window.controls.server_action.trigger()
    assert dialogs.errors and "cannot reach the server" in dialogs.errors[-1][1]
    assert window.model_info is None and window.runs.host.is_alive()


def test_cancelling_the_url_dialog_does_nothing(qtbot, connect_window):
    window = connect_window("")
    window.controls.server_action.trigger()
    assert window.model_info is None and not window.model_loading
