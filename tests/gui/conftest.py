"""Fixtures for the window tests: a fake engine factory that remembers what it built, a fake GGUF file, settings and
recovery folders under tmp_path so no test ever touches the user's own."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from explorer.gui.window.main_window import MainWindow

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from fake_engine import FakeEngine  # noqa: E402  (tests/ is put on sys.path by tests/conftest.py)


class FakeFactory:
    """An engine factory for EngineWorker: builds FakeEngines and keeps them so tests can inspect and steer them.

    `configure(engine)` runs on each new engine before it is handed over (e.g. to set hold_at_step)."""

    def __init__(self):
        self.engines: list[FakeEngine] = []
        self.configure = None
        self.created = threading.Event()

    def __call__(self, model_path, n_gpu_layers=None, n_ctx=None, exact=True):
        engine = FakeEngine(model_path, n_gpu_layers=n_gpu_layers, n_ctx=n_ctx, exact=exact)
        if self.configure is not None:
            self.configure(engine)
        self.engines.append(engine)
        self.created.set()
        return engine

    @property
    def engine(self) -> FakeEngine:
        return self.engines[-1]


@pytest.fixture(autouse=True, scope="session")
def _garbage_on_the_gui_thread(qapp):
    """As in the app: the cyclic garbage collector runs on the GUI thread only (a window built by any test would
    do it; a test that builds only a worker must not depend on the order)."""
    from explorer.gui.window.main_window import collect_garbage_on_the_gui_thread

    collect_garbage_on_the_gui_thread()


@pytest.fixture(autouse=True)
def _qt_test_paths(qapp):
    """Belt and braces: any QStandardPaths lookup a test did not redirect lands in Qt's test folders, never in
    the user's own application data."""
    from PySide6.QtCore import QStandardPaths

    QStandardPaths.setTestModeEnabled(True)
    yield


@pytest.fixture
def fake_factory() -> FakeFactory:
    return FakeFactory()


@pytest.fixture
def fake_model(tmp_path: Path) -> Path:
    """A file the fake engine accepts as a model (it checks the GGUF magic only)."""
    path = tmp_path / "fake-model.gguf"
    path.write_bytes(b"GGUF" + bytes(60))
    return path


@pytest.fixture
def bad_model(tmp_path: Path) -> Path:
    path = tmp_path / "not-a-model.gguf"
    path.write_bytes(b"this is not a gguf file at all")
    return path


@pytest.fixture
def gui_settings(tmp_path: Path):
    from PySide6.QtCore import QSettings

    return QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)


@pytest.fixture
def main_thread_id() -> int:
    return threading.get_ident()


class Dialogs:
    """Stands in for the error dialog and the yes/no question: records them, never blocks."""

    def __init__(self, answer: bool = True):
        self.errors: list[tuple[str, str]] = []
        self.questions: list[tuple[str, str]] = []
        self.answer = answer
        self.answers: dict[str, bool] = {}  # by question title, over `answer`

    def error(self, title: str, message: str) -> None:
        self.errors.append((title, message))

    def ask(self, title: str, question: str) -> bool:
        self.questions.append((title, question))
        return self.answers.get(title, self.answer)


@pytest.fixture
def dialogs() -> Dialogs:
    return Dialogs()


@pytest.fixture
def make_window(qtbot, fake_factory, gui_settings, dialogs, tmp_path):
    windows = []

    def make(factory=fake_factory, settings=gui_settings, discover=lambda: []) -> MainWindow:
        window = MainWindow(factory, settings=settings, show_error=dialogs.error, ask=dialogs.ask,
                            recovery_dir=str(tmp_path / "recovery"), discover=discover)
        qtbot.addWidget(window)
        window.show()
        windows.append(window)
        return window

    yield make
    dialogs.answers["Discard the rollouts not exported?"] = True  # the test is over: let the windows close
    for window in windows:
        window.close()
        assert not window.runs.host.thread.isRunning()


@pytest.fixture
def window(make_window) -> MainWindow:
    return make_window()
