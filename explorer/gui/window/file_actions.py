"""The window's files: open and export rollout sets, recent files, dropped files, autosave and crash recovery."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from PySide6.QtCore import QObject, QTimer
from PySide6.QtWidgets import QFileDialog, QMenu, QProgressDialog

from explorer.core.files import export
from explorer.core.files import integrity
from explorer.core.errors import ExplorerError
from explorer.core.files.jsonl import export_jsonl as write_jsonl
from explorer.core.types import RolloutSet
from explorer.gui.window.recovery import AUTOSAVE_INTERVAL_MS, RecoveryStore
from explorer.gui.window.set_loader import LARGE_SET_BYTES, SetLoader

if TYPE_CHECKING:
    from explorer.gui.window.main_window import MainWindow

MAX_RECENT = 10
MAX_WARNINGS = 5  # lines of an opened set's warnings shown; the rest are counted
RECOVERED = "recovered run"  # the source of a set shown from the recovery file


def dropped_path(mime) -> Optional[str]:
    """The first .gguf or .json file among dropped URLs."""
    for url in mime.urls() if mime.hasUrls() else ():
        if url.isLocalFile() and Path(url.toLocalFile()).suffix.lower() in (".gguf", ".json"):
            return url.toLocalFile()
    return None


class FileActions(QObject):
    def __init__(self, window: "MainWindow", recovery_dir: Optional[str], persist: bool):
        super().__init__(window)
        self._window = window
        self._persist = persist
        self.recovery = RecoveryStore(recovery_dir, enabled=persist)
        self.recent_menu = QMenu("Open &recent", window)  # the File menu shows it
        self._dirty_since_autosave = False
        self.autosave_timer = QTimer(self)
        self.autosave_timer.setInterval(AUTOSAVE_INTERVAL_MS)
        self.autosave_timer.timeout.connect(self.autosave)
        self.set_loader = SetLoader(self)
        self.set_loader.progressed.connect(self._on_read_progress)
        self.set_loader.loaded.connect(self._on_read)
        self.set_loader.failed.connect(self._on_read_failed)
        self.set_loader.cancelled.connect(self._on_read_cancelled)
        self._progress: Optional[QProgressDialog] = None

    @property
    def _settings(self):
        return self._window.settings

    def mark_dirty(self) -> None:
        """The session changed since the last autosave."""
        self._dirty_since_autosave = True

    # -- open ------------------------------------------------------------------------------------------------------
    def open_path(self, path: str) -> None:
        suffix = Path(path).suffix.lower()
        if suffix == ".gguf":
            self._window.load_model(path)
        elif suffix == ".json":
            self.open_rollout_set(path)
        else:
            self._window.show_error("Cannot open this file",
                                    f"{path}: drop or open a .gguf model or a .json rollout set.")

    def open_rollout_set_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self._window, "Open rollout set", self._last_dir(),
                                              "Rollout sets (*.json);;All files (*)")
        if path:
            self.open_rollout_set(path)

    def open_rollout_set(self, path: str) -> bool:
        """Show a saved rollout set read-only (panes, hover, scores, tree) without loading any model.

        A large one (over LARGE_SET_BYTES) is read on a worker thread behind a progress dialog whose Cancel stops
        it; the window stays responsive, and this returns True once the read has started."""
        if not self._window.may_discard("Open another rollout set"):
            return False
        try:
            large = os.stat(path).st_size > LARGE_SET_BYTES
        except OSError:
            large = False  # export.load words the error
        if large:
            self._read_in_background(path)
            return True
        try:
            rollout_set = export.load(path)
        except ExplorerError as exc:
            self._window.show_error("Cannot open the rollout set", str(exc))
            return False
        except Exception as exc:  # noqa: BLE001 -- a reader bug must not take the window down; its trace is logged
            self._window.report_bug("Cannot open the rollout set", f"{path}: {type(exc).__name__}: {exc}", exc)
            return False
        self._opened(str(path), rollout_set)
        return True

    def _read_in_background(self, path: str) -> None:
        dialog = QProgressDialog(f"Reading {Path(path).name}…", "Cancel", 0, 1000, self._window)
        dialog.setWindowTitle("Opening a rollout set")
        dialog.setMinimumDuration(0)
        dialog.setAutoClose(False)
        dialog.setAutoReset(False)
        dialog.canceled.connect(self.set_loader.cancel)
        self._progress = dialog
        self.set_loader.start(path)
        dialog.show()

    def _on_read_progress(self, path: str, done: int, total: int) -> None:
        if self._progress is not None and total > 0:
            self._progress.setValue(int(1000 * done / total))

    def _end_read(self) -> None:
        if self._progress is not None:
            self._progress.close()
            self._progress = None

    def _on_read(self, path: str, rollout_set) -> None:
        self._end_read()
        self._opened(path, rollout_set)

    def _on_read_failed(self, path: str, message: str, bug) -> None:
        self._end_read()
        if bug is None:
            self._window.show_error("Cannot open the rollout set", message)
        else:
            self._window.report_bug("Cannot open the rollout set", message, bug)

    def _on_read_cancelled(self, path: str) -> None:
        self._end_read()
        self._window.status.message(f"Stopped reading {path}")

    def _opened(self, path: str, rollout_set) -> None:
        self._window.show_rollout_set(rollout_set, path)
        self.add_recent(path)
        warnings = integrity.text_problems(rollout_set)
        info = self._window.model_info
        report = integrity.vocab_report(rollout_set, info.n_vocab) if info is not None and info.n_vocab else None
        if report is not None:
            warnings.insert(0, report.message(info.n_vocab))
        if warnings:
            more = f"\n… and {len(warnings) - MAX_WARNINGS} more" if len(warnings) > MAX_WARNINGS else ""
            self._window.show_error("Opened with warnings", "\n".join(warnings[:MAX_WARNINGS]) + more)

    # -- export ----------------------------------------------------------------------------------------------------
    def current_rollout_set(self) -> Optional[RolloutSet]:
        session = self._window.session
        if session is None or not session.group_ids or session.model is None:
            return None
        self._window.drain()
        return session.rollout_set("cancelled")

    def export_dialog(self) -> None:
        if self._nothing_to_export():
            return
        path, _ = QFileDialog.getSaveFileName(self._window, "Export rollout set",
                                              str(Path(self._last_dir()) / "rollouts.json"), "Rollout sets (*.json)")
        if path:
            self.export_rollout_set(path)

    def export_jsonl_dialog(self) -> None:
        if self._nothing_to_export():
            return
        path, _ = QFileDialog.getSaveFileName(self._window, "Export JSONL",
                                              str(Path(self._last_dir()) / "rollouts.jsonl"), "JSON Lines (*.jsonl)")
        if path:
            self.export_jsonl(path)

    def _nothing_to_export(self) -> bool:
        if self.current_rollout_set() is None:
            self._window.show_error("Nothing to export", "Run some queries (or open a rollout set) first.")
            return True
        return False

    def export_rollout_set(self, path: str) -> bool:
        rollout_set = self.current_rollout_set()
        if rollout_set is None:
            self._window.show_error("Nothing to export", "Run some queries (or open a rollout set) first.")
            return False
        try:
            export.save(rollout_set, path)
        except ExplorerError as exc:
            self._window.show_error("Cannot export the rollout set", str(exc))
            return False
        except OSError as exc:
            self._window.show_error("Cannot export the rollout set", f"{path}: {exc.strerror or exc}")
            return False
        self.add_recent(str(path))
        self.recovery.clear()
        self._window.session.mark_exported()
        self._window.status.message(f"Saved {path}")
        return True

    def export_jsonl(self, path: str) -> bool:
        rollout_set = self.current_rollout_set()
        if rollout_set is None:
            self._window.show_error("Nothing to export", "Run some queries (or open a rollout set) first.")
            return False
        try:
            n = write_jsonl(rollout_set, path)
        except (ExplorerError, OSError) as exc:
            self._window.show_error("Cannot export JSONL", str(exc))
            return False
        self._window.session.mark_exported()
        self._window.status.message(f"Wrote {n} rollouts to {path}")
        return True

    # -- recent files ----------------------------------------------------------------------------------------------
    def recent_files(self) -> list[str]:
        try:
            paths = json.loads(self._settings.value("recent_files", "[]"))
        except (TypeError, ValueError):  # a settings value another version wrote
            return []
        return [p for p in paths if isinstance(p, str)] if isinstance(paths, list) else []

    def add_recent(self, path: str) -> None:
        path = str(Path(path).absolute())
        paths = [path] + [p for p in self.recent_files() if p != path]
        if self._persist:
            self._settings.setValue("recent_files", json.dumps(paths[:MAX_RECENT]))
            self._settings.setValue("last_dir", str(Path(path).parent))
        self.refresh_recent_menu()

    def refresh_recent_menu(self) -> None:
        menu = self.recent_menu
        menu.clear()
        paths = [p for p in self.recent_files() if Path(p).exists()]
        for path in paths:
            action = menu.addAction(Path(path).name)
            action.setToolTip(path)
            action.setStatusTip(path)
            action.triggered.connect(lambda _=False, p=path: self.open_path(p))
        menu.setEnabled(bool(paths))

    def _last_dir(self) -> str:
        return str(self._settings.value("last_dir", "") or "")

    # -- autosave and recovery -------------------------------------------------------------------------------------
    def autosave(self) -> None:
        """While a run streams: append what was fed since the last tick (cheap, whatever the set's size); the first
        tick of a new Session writes its checkpoint instead (a generate's Session is shown once its run streams).
        Otherwise: a checkpoint of the set when it changed (a run's end, rewards), rewriting it once."""
        self._window.drain()
        session = self._window.session
        if session is None or session.model is None or session.source is not None:
            return  # nothing made here to keep (an opened set is its own file)
        if self._window.is_running() and self.recovery.owner is session:
            self.recovery.append_async()
            return
        if self.recovery.owner is not session or self._dirty_since_autosave:
            self.recovery.save_async(self.current_rollout_set(), owner=session)
            self._dirty_since_autosave = False

    def offer_recovery(self) -> bool:
        """After a crash the recovery file is still there: offer to show it. True when it was opened."""
        if not self.recovery.exists():
            return False
        try:
            rollout_set = self.recovery.load()
        except ExplorerError as exc:
            self.recovery.clear()
            self._window.show_error("Cannot recover the last run", str(exc))
            return False
        n = sum(len(g.rollouts) for g in rollout_set.groups)
        if self._window.ask("Recover the last run?", f"The last session ended during a run. Show its {n} rollouts "
                            f"({len(rollout_set.groups)} queries, {rollout_set.model.name})? Export them to keep "
                            "them."):
            self._window.show_rollout_set(rollout_set, RECOVERED)
            self.recovery.clear()
            return True
        self.recovery.clear()
        return False
