"""The "Reward" group of the side panel: which reward scores each finished rollout, and how advantages are scaled.

Built-in rewards come from explorer.core.rl.rewards; a user's Python file is imported only when the user picks it (a
file that cannot be used shows the error and the choice falls back to none).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from PySide6.QtCore import QSignalBlocker, Qt, Signal
from PySide6.QtWidgets import QCheckBox, QComboBox, QFileDialog, QGroupBox, QLabel, QVBoxLayout, QWidget

from explorer.core.errors import RewardError
from explorer.core.rl.rewards import RewardFn, load_reward
from explorer.gui.widgets.combo import keep_texts_whole

NONE = "none"
PICK = "__pick_file__"  # the "Python file…" entry: opens the file dialog, is never the current choice
_BUILTINS = (
    ("No reward", NONE, "Rollouts get no reward; the statistics panel still shows the diversity statistics"),
    ("Exact match", "exact", "1 when the response equals the query's reference answer (case and spacing ignored)"),
    ("Contains", "contains", "1 when the response contains the query's reference answer (case and spacing ignored)"),
    ("Regex", "regex", "1 when the query's reference, read as a regular expression, matches the response"),
    ("Length penalty", "length", "-1/100 per character of the response: shorter answers score higher"),
)
_FILE_TIP = "reward(query, response, reference) -> float from {path}"


def pick_python_file(parent: QWidget) -> Optional[str]:
    path, _ = QFileDialog.getOpenFileName(parent, "Reward function", "", "Python files (*.py);;All files (*)")
    return path or None


class RewardBox(QGroupBox):
    """Emits `changed` whenever the reward or the std option changes (the window re-applies them)."""

    changed = Signal()
    error = Signal(str, str)  # title, message

    def __init__(self, parent: Optional[QWidget] = None,
                 pick_file: Callable[[QWidget], Optional[str]] = pick_python_file):
        super().__init__("Reward", parent)
        self.file_picker = pick_file  # replaceable (tests, scripted use)
        self._fn: Optional[RewardFn] = None
        self._spec = NONE
        # the last user file loaded stays listed (and loaded) so switching back to it needs no new import
        self._file: Optional[str] = None
        self._file_fn: Optional[RewardFn] = None

        self.combo = QComboBox()
        self.combo.setToolTip("Scores each rollout once its query's rollouts have finished; advantages are "
                              "group-relative (GRPO). Pick a reward again to re-score what is shown.")
        self._fill_combo()
        keep_texts_whole(self.combo)
        # activated: every user pick, also of the current entry (a re-pick re-scores, e.g. an opened set);
        # programmatic changes go through set_spec()
        self.combo.activated.connect(self._on_activated)
        self.std_check = QCheckBox("Divide advantages by the group's std")
        self.std_check.setChecked(True)
        self.std_check.setToolTip("On (GRPO): A = (r - mean) / (std + 1e-6).  Off: A = r - mean.  "
                                  "A group whose rewards are all equal gets zeros.")
        self.std_check.toggled.connect(lambda _: self.changed.emit())
        self.hint = QLabel()
        self.hint.setWordWrap(True)
        self.hint.setStyleSheet("color: palette(mid);")
        layout = QVBoxLayout(self)
        layout.addWidget(self.combo)
        layout.addWidget(self.hint)
        layout.addWidget(self.std_check)
        self._update_hint()

    # -- public API ------------------------------------------------------------------------------------------------
    def spec(self) -> str:
        """'none', a built-in name, or the path of the loaded Python file."""
        return self._spec

    def reward_fn(self) -> Optional[RewardFn]:
        return self._fn

    def normalize_std(self) -> bool:
        return self.std_check.isChecked()

    def set_spec(self, spec: Optional[str], fn: Optional[RewardFn] = None, force: bool = False) -> bool:
        """Choose a reward: 'none', a built-in, or a .py path (imported now unless `fn` is its loaded function).
        A reward that cannot be loaded emits `error` and falls back to none; returns whether `spec` was taken.
        `changed` is emitted when the choice changed, or always with force."""
        spec = (spec or NONE).strip() or NONE
        if spec.lower() == NONE:
            self._take(NONE, None, force)
            return True
        if fn is None:
            try:
                fn = load_reward(spec)
            except RewardError as exc:
                self._take(NONE, None)
                self.error.emit("Cannot use this reward", str(exc))
                return False
        if spec.lower().endswith(".py"):
            self._take(str(Path(spec).expanduser()), fn, force)
        else:
            self._take(fn.name, fn, force)
        return True

    def pick_file(self) -> bool:
        """Ask for a Python file and load it; a cancelled dialog keeps the current choice."""
        path = self.file_picker(self)
        if not path:
            self._select(self._spec)
            return False
        return self.set_spec(path)

    def state(self) -> dict:
        return {"reward": self._spec, "normalize_std": self.normalize_std()}

    def restore_state(self, state) -> None:
        if not isinstance(state, dict):
            return
        if isinstance(state.get("normalize_std"), bool):
            self.std_check.setChecked(state["normalize_std"])
        spec = state.get("reward")
        if isinstance(spec, str) and spec != self._spec:
            # a Python file the user picked before is imported again; one that is gone shows why and gives none
            self.set_spec(spec)

    def description(self) -> str:
        """A short name for the status bar: 'length', 'my_reward.py', or '' without a reward."""
        if self._fn is None:
            return ""
        return Path(self._spec).name if self._spec == self._file else self._spec

    # -- internals -------------------------------------------------------------------------------------------------
    def _fill_combo(self) -> None:
        with QSignalBlocker(self.combo):
            self.combo.clear()
            for label, key, tip in _BUILTINS:
                self.combo.addItem(label, key)
                self.combo.setItemData(self.combo.count() - 1, tip, Qt.ItemDataRole.ToolTipRole)
            if self._file is not None:
                self.combo.addItem(Path(self._file).name, self._file)
                self.combo.setItemData(self.combo.count() - 1, _FILE_TIP.format(path=self._file),
                                       Qt.ItemDataRole.ToolTipRole)
            self.combo.addItem("Python file…", PICK)
            self.combo.setItemData(self.combo.count() - 1, "Pick a .py file that defines reward(query, response, "
                                   "reference) -> float", Qt.ItemDataRole.ToolTipRole)

    def _take(self, spec: str, fn: Optional[RewardFn], force: bool = False) -> None:
        if fn is not None and spec.lower().endswith(".py"):
            self._file, self._file_fn = spec, fn
            self._fill_combo()
        self._select(spec)
        changed = spec != self._spec or fn is not self._fn
        self._spec, self._fn = spec, fn
        self._update_hint()
        if changed or force:
            self.changed.emit()

    def _select(self, spec: str) -> None:
        index = self.combo.findData(spec)
        with QSignalBlocker(self.combo):
            self.combo.setCurrentIndex(max(index, 0))

    def _on_activated(self, index: int) -> None:
        key = self.combo.itemData(index)
        if key == PICK:
            self.pick_file()
        elif key is not None and key == self._file:
            self._take(self._file, self._file_fn, force=True)  # loaded already: no new import
        else:
            self.set_spec(key, force=True)

    def _update_hint(self) -> None:
        fn = self._fn
        if fn is None:
            text = ""
        elif fn.needs_reference:
            text = "Uses each query's reference answer (set it under the query list)."
        elif self._spec == self._file:
            text = f"reward() from {self._file}"
        else:
            text = ""
        self.hint.setText(text)
        self.hint.setToolTip(text)
        self.hint.setVisible(bool(text))
