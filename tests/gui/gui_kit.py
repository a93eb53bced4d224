"""Helpers for the window tests: load a model, run to the end, read what the panes show."""

from __future__ import annotations

from explorer.gui.window.main_window import MainWindow


def show(qtbot, widget, width: int, height: int):
    """Add a widget to qtbot, size it, show it and wait until it is on screen."""
    qtbot.addWidget(widget)
    widget.resize(width, height)
    widget.show()
    qtbot.waitExposed(widget)
    return widget


def load(qtbot, window: MainWindow, path) -> None:
    with qtbot.waitSignal(window.model_ready, timeout=5000):
        window.load_model(str(path))


def run_to_end(qtbot, window: MainWindow, k: int = 3, max_tokens: int = 12, queries=None):
    """Run (loading nothing: the model must be loaded); the run_done arguments (cancelled, failed)."""
    if queries is not None:
        window.controls.set_queries(queries)
    window.controls.k_spin.setValue(k)
    window.controls.max_tokens.setValue(max_tokens)
    with qtbot.waitSignal(window.run_done, timeout=10000) as blocker:
        assert window.run() is not None
    return blocker.args


def pane_texts(window: MainWindow) -> list[str]:
    return [pane.text() for pane in window.views.panes.panes()]


def laid_out(views):
    """A ViewsPanel's parts in one widget (the window puts them in dock panels), for tests of the views alone."""
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QSplitter

    splitter = QSplitter(Qt.Orientation.Vertical)
    for part in views.parts().values():
        splitter.addWidget(part)
    splitter.addWidget(views.group_tabs)
    views.frame = splitter  # qtbot keeps only a weak reference: the views keep their frame alive
    return splitter
