"""The window's files: open and export rollout sets, recent files, dropped files, autosave and crash recovery."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional, Protocol

from PySide6.QtCore import QObject, QSettings, QTimer
from PySide6.QtWidgets import QFileDialog, QMenu, QProgressDialog, QWidget

from explorer.core.files import export
from explorer.core.files import integrity
from explorer.core.errors import ExplorerError
from explorer.core.files.jsonl import export_jsonl as write_jsonl
from explorer.core.session import Session
from explorer.core.types import ModelInfo, RolloutSet
from explorer.gui.window.recovery import AUTOSAVE_INTERVAL_MS, RecoveryStore
from explorer.gui.window.set_loader import LARGE_SET_BYTES, SetLoader

MAX_RECENT = 10
MAX_WARNINGS = 5  # lines of an opened set's warnings shown; the rest are counted
RECOVERED = "recovered run"  # the source of a set shown from the recovery file


def dropped_path(mime) -> Optional[str]:
    """The first .gguf or .json file among dropped URLs."""
    for url in mime.urls() if mime.hasUrls() else ():
        if url.isLocalFile() and Path(url.toLocalFile()).suffix.lower() in (".gguf", ".json"):
            return url.toLocalFile()
    return None


class FileHost(Protocol):
    """All the files ask of the window: the session shown (fed up to now), showing a set or a model, and the user."""

    def fed_session(self) -> Optional[Session]:
        """The session shown, with every event received so far fed to it (None: nothing is shown)."""

    def is_running(self) -> bool: ...

    def loaded_model(self) -> Optional[ModelInfo]: ...

    def show_rollout_set(self, rollout_set: RolloutSet, source: str, in_a_file: bool = True) -> None: ...

    def load_model(self, path: str) -> None: ...

    def may_discard(self, action: str) -> bool:
        """Whether the session shown may be replaced (asks when it holds rollouts no file holds)."""

    def show_error(self, title: str, message: str) -> None: ...

    def report_bug(self, title: str, message: str, exc: BaseException) -> None: ...

    def ask(self, title: str, question: str) -> bool: ...

    def message(self, text: str) -> None:
        """A line in the status bar."""

    def model_name(self, model: ModelInfo) -> str:
        """The one name the window gives a model."""


class FileActions(QObject):
    """Owns the recent files, the set loader and the recovery journal with its autosave timer. The window tells it
    when a run starts and ends (run_started, run_ended) and when it closes (shut, close); what the session holds it
    learns from the session's version, not from the window."""

    def __init__(self, host: FileHost, settings: QSettings, parent: QWidget, recovery_dir: Optional[str],
                 persist: bool):
        super().__init__(parent)
        self._host = host
        self._dialog_parent = parent
        self._settings = settings
        self._persist = persist
        self.recovery = RecoveryStore(recovery_dir, enabled=persist)
        self.recent_menu = QMenu("Open &recent", parent)  # the File menu shows it
        self._saved_version: Optional[int] = None  # the session's version the last checkpoint holds
        self._autosave_timer = QTimer(self)
        self._autosave_timer.setInterval(AUTOSAVE_INTERVAL_MS)
        self._autosave_timer.timeout.connect(self.autosave)
        self.set_loader = SetLoader(self)
        self.set_loader.progressed.connect(self._on_read_progress)
        self.set_loader.loaded.connect(self._on_read)
        self.set_loader.failed.connect(self._on_read_failed)
        self.set_loader.cancelled.connect(self._on_read_cancelled)
        self._progress: Optional[QProgressDialog] = None

    # -- open ------------------------------------------------------------------------------------------------------
    def open_path(self, path: str) -> None:
        suffix = Path(path).suffix.lower()
        if suffix == ".gguf":
            self._host.load_model(path)
        elif suffix == ".json":
            self.open_rollout_set(path)
        else:
            self._host.show_error("Cannot open this file",
                                    f"{path}: drop or open a .gguf model or a .json rollout set.")

    def open_rollout_set_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self._dialog_parent, "Open rollout set", self._last_dir(),
                                              "Rollout sets (*.json);;All files (*)")
        if path:
            self.open_rollout_set(path)

    def open_rollout_set(self, path: str) -> bool:
        """Show a saved rollout set read-only (panes, hover, scores, tree) without loading any model.

        A large one (over LARGE_SET_BYTES) is read on a worker thread behind a progress dialog whose Cancel stops
        it; the window stays responsive, and this returns True once the read has started."""
        if not self._host.may_discard("Open another rollout set"):
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
            self._host.show_error("Cannot open the rollout set", str(exc))
            return False
        except Exception as exc:  # noqa: BLE001 -- a reader bug must not take the window down; its trace is logged
            self._host.report_bug("Cannot open the rollout set", f"{path}: {type(exc).__name__}: {exc}", exc)
            return False
        self._opened(str(path), rollout_set)
        return True

    def _read_in_background(self, path: str) -> None:
        dialog = QProgressDialog(f"Reading {Path(path).name}…", "Cancel", 0, 1000, self._dialog_parent)
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
            self._host.show_error("Cannot open the rollout set", message)
        else:
            self._host.report_bug("Cannot open the rollout set", message, bug)

    def _on_read_cancelled(self, path: str) -> None:
        self._end_read()
        self._host.message(f"Stopped reading {path}")

    def _opened(self, path: str, rollout_set) -> None:
        self._autosave_timer.stop()  # a run streaming was abandoned for the set: nothing more of it comes
        self._host.show_rollout_set(rollout_set, path)
        self.add_recent(path)
        warnings = integrity.text_problems(rollout_set)
        info = self._host.loaded_model()
        report = integrity.vocab_report(rollout_set, info.n_vocab) if info is not None and info.n_vocab else None
        if report is not None:
            warnings.insert(0, report.message(info.n_vocab))
        if warnings:
            more = f"\n… and {len(warnings) - MAX_WARNINGS} more" if len(warnings) > MAX_WARNINGS else ""
            self._host.show_error("Opened with warnings", "\n".join(warnings[:MAX_WARNINGS]) + more)

    # -- export ----------------------------------------------------------------------------------------------------
    def current_rollout_set(self) -> Optional[RolloutSet]:
        session = self._host.fed_session()
        if session is None or not session.group_ids or session.model is None:
            return None
        return session.rollout_set("cancelled")

    def export_dialog(self) -> None:
        if self._nothing_to_export():
            return
        path, _ = QFileDialog.getSaveFileName(self._dialog_parent, "Export rollout set",
                                              str(Path(self._last_dir()) / "rollouts.json"), "Rollout sets (*.json)")
        if path:
            self.export_rollout_set(path)

    def export_jsonl_dialog(self) -> None:
        if self._nothing_to_export():
            return
        path, _ = QFileDialog.getSaveFileName(self._dialog_parent, "Export JSONL",
                                              str(Path(self._last_dir()) / "rollouts.jsonl"), "JSON Lines (*.jsonl)")
        if path:
            self.export_jsonl(path)

    def _nothing_to_export(self) -> bool:
        if self.current_rollout_set() is None:
            self._host.show_error("Nothing to export", "Run some queries (or open a rollout set) first.")
            return True
        return False

    def export_rollout_set(self, path: str) -> bool:
        rollout_set = self.current_rollout_set()
        if rollout_set is None:
            self._host.show_error("Nothing to export", "Run some queries (or open a rollout set) first.")
            return False
        try:
            export.save(rollout_set, path)
        except ExplorerError as exc:
            self._host.show_error("Cannot export the rollout set", str(exc))
            return False
        except OSError as exc:
            self._host.show_error("Cannot export the rollout set", f"{path}: {exc.strerror or exc}")
            return False
        self.add_recent(str(path))
        self.recovery.clear()
        self._host.fed_session().mark_exported()
        self._host.message(f"Saved {path}")
        return True

    def export_jsonl(self, path: str) -> bool:
        rollout_set = self.current_rollout_set()
        if rollout_set is None:
            self._host.show_error("Nothing to export", "Run some queries (or open a rollout set) first.")
            return False
        try:
            n = write_jsonl(rollout_set, path)
        except (ExplorerError, OSError) as exc:
            self._host.show_error("Cannot export JSONL", str(exc))
            return False
        self._host.fed_session().mark_exported()
        self._host.message(f"Wrote {n} rollouts to {path}")
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
    def record(self, events) -> None:
        """Events just fed to the session shown: the journal appends them on the next tick."""
        self.recovery.record(events)

    def run_started(self) -> None:
        self._autosave_timer.start()

    def run_refused(self) -> None:
        """The run asked for was refused at its start: the session shown, and its journal, are as they were."""
        self._autosave_timer.stop()

    def run_ended(self, interrupted: bool) -> None:
        """The run shown has ended and been drawn. A stopped or failed run is kept in the journal until the user
        exports it or closes; a clean end removes the journal -- unless the session shows a recovered run, whose
        rollouts the journal is then the only copy of."""
        self._autosave_timer.stop()
        session = self._host.fed_session()
        if session is not None and session.group_ids and (interrupted or session.source == RECOVERED):
            self.autosave()
        else:
            self.recovery.clear()

    def autosave(self) -> None:
        """While a run streams: append what was fed since the last tick (cheap, whatever the set's size); the first
        tick of a new Session writes its checkpoint instead (a generate's Session is shown once its run streams).
        Otherwise: a checkpoint of the set when the session changed since the last one (a run's end, rewards)."""
        session = self._host.fed_session()
        if session is None or session.model is None or not session.has_unexported():
            return  # nothing here that a file does not hold already (an opened set is its own file)
        if self._host.is_running() and self.recovery.owner is session:
            self.recovery.append_async()
            return
        if self.recovery.owner is not session or session.version != self._saved_version:
            self._saved_version = session.version
            self.recovery.save_async(session.rollout_set("cancelled"), owner=session)

    def offer_recovery(self) -> bool:
        """After a crash the recovery file is still there: offer to show it. True when it was opened. The journal
        stays until the recovered rollouts are exported or the user, asked on quitting, lets them go."""
        if not self.recovery.exists():
            return False
        try:
            rollout_set = self.recovery.load()
        except ExplorerError as exc:
            self.recovery.clear()
            self._host.show_error("Cannot recover the last run", str(exc))
            return False
        n = sum(len(g.rollouts) for g in rollout_set.groups)
        name = self._host.model_name(rollout_set.model)
        if self._host.ask("Recover the last run?", f"The last session ended during a run. Show its {n} rollouts "
                          f"({len(rollout_set.groups)} queries, {name})? Export them to keep them."):
            self._host.show_rollout_set(rollout_set, RECOVERED, in_a_file=False)
            return True
        self.recovery.clear()
        return False

    def shut(self, keep_recovery: bool) -> None:
        """The window closes (the session fed up to now): no more reads or autosaves; the journal keeps what streamed
        (keep_recovery: a signal, the next start offers it back) or is removed."""
        self.set_loader.cancel()
        self._autosave_timer.stop()
        if keep_recovery:
            self.recovery.append_async()
        else:
            self.recovery.clear()

    def close(self) -> None:
        """After shut(): wait for the journal's last writes."""
        self.recovery.flush()
        self.recovery.close()
