"""What the window keeps between sessions in QSettings: geometry, the panels' layout, the side panel's controls,
shading, and the model to open at start."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from PySide6.QtCore import QByteArray, QSettings, QTimer

from explorer.core.errors import ModelError
from explorer.gui.panes.panes import SORT_KEYS
from explorer.gui.widgets.style import SHADING_MODES

if TYPE_CHECKING:
    from explorer.gui.window.main_window import MainWindow


SAVE_DELAY_MS = 500  # a burst of changes (typing, a spin box held down) is saved once


class WindowSettings:
    """Saved when changed (after a short quiet time), not only on a clean quit: a crash loses no setting."""

    def __init__(self, window: "MainWindow", settings: QSettings, persist: bool):
        self._window = window
        self.settings = settings
        self._persist = persist
        self._restoring = False
        self.save_timer = QTimer(window)
        self.save_timer.setSingleShot(True)
        self.save_timer.setInterval(SAVE_DELAY_MS)
        self.save_timer.timeout.connect(self.save)

    def changed(self, *_args) -> None:
        """Something kept in the settings changed: save soon."""
        if self._persist and not self._restoring:
            self.save_timer.start()

    def watch(self) -> None:
        """Save when the controls, the view options or the panels change (after the window is built)."""
        w = self._window
        w.controls.changed.connect(self.changed)
        w.views.options.changed.connect(self.changed)
        w.views.panes.sort_changed.connect(self.changed)
        w.menu_actions["compact"].toggled.connect(self.changed)
        w.panels.changed.connect(self.changed)

    def startup_model(self) -> Optional[str]:
        """The model to open at start: the last one used if it is still there, else the default model."""
        last = self.settings.value("last_model", "")
        if isinstance(last, str) and last and Path(last).is_file():
            return last
        from explorer.core.models.discovery import default_model_path

        try:
            return str(default_model_path())
        except ModelError:
            return None

    def remember_model(self, path: str) -> None:
        self.settings.setValue("last_model", path)

    def restore(self) -> None:
        self._restoring = True
        try:
            self._restore()
        finally:
            self._restoring = False

    def _restore(self) -> None:
        s, w = self.settings, self._window
        geometry = s.value("window/geometry")
        if isinstance(geometry, QByteArray) and not geometry.isEmpty():
            w.restoreGeometry(geometry)
        w.panels.restore(s)
        try:
            state = json.loads(s.value("controls", "") or "null")
        except (TypeError, ValueError):  # a settings value another version wrote
            state = None
        if isinstance(state, dict):
            w.controls.restore_state(state)
        options = w.views.options
        shading = s.value("view/shading", "prob")
        # no reference policy is in use at start: shading by log-ratio would shade nothing and say so everywhere
        if shading in SHADING_MODES and shading != "log_ratio":
            options.set_shading(shading)
        try:
            options.set_beta(float(s.value("view/beta", options.beta)))
        except (TypeError, ValueError):  # a settings value another version wrote
            pass
        sort = s.value("view/sort", "index")
        if sort in SORT_KEYS:
            w.views.panes.set_sort(sort)
        if str(s.value("view/compact", "false")).lower() == "true":
            w.menu_actions["compact"].setChecked(True)
            w.views.set_compact(True)

    def save(self) -> None:
        self.save_timer.stop()
        s, w = self.settings, self._window
        s.setValue("window/geometry", w.saveGeometry())
        w.panels.save(s)
        s.setValue("controls", json.dumps(w.controls.state()))
        s.setValue("view/shading", w.views.options.shading)
        s.setValue("view/beta", w.views.options.beta)
        s.setValue("view/sort", w.views.panes.sort_key)
        s.setValue("view/compact", w.menu_actions["compact"].isChecked())
        s.sync()
