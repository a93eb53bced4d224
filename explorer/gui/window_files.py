"""The main window's file side: open and export rollout sets, recent files, drag and drop, autosave and recovery,
settings, and the shutdown on close. A mixin of MainWindow (kept apart to keep each file readable)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

from PySide6.QtCore import QByteArray
from PySide6.QtWidgets import QFileDialog

from ..core import export
from ..core.collect import RunCollector
from ..core.errors import ExplorerError, ModelError
from ..core.jsonl import export_jsonl as write_jsonl
from ..core.tree import TokenTree
from ..core.types import RolloutSet
from .actions import fill_recent_menu
from .worker import keep_until_finished

MAX_RECENT = 10



class WindowFilesMixin:
    # -- open ------------------------------------------------------------------------------------------------------
    def open_path(self, path: str) -> None:
        suffix = Path(path).suffix.lower()
        if suffix == ".gguf":
            self.load_model(path)
        elif suffix == ".json":
            self.open_rollout_set(path)
        else:
            self.show_error("Cannot open this file", f"{path}: drop or open a .gguf model or a .json rollout set.")

    def open_rollout_set_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open rollout set", self._last_dir(),
                                              "Rollout sets (*.json);;All files (*)")
        if path:
            self.open_rollout_set(path)

    def open_rollout_set(self, path: str) -> bool:
        """Show a saved rollout set read-only (panes, hover, scores, tree) without loading any model."""
        try:
            rollout_set = export.load(path)
        except ExplorerError as exc:
            self.show_error("Cannot open the rollout set", str(exc))
            return False
        except Exception as exc:  # noqa: BLE001 -- a reader bug must not take the window down
            self.show_error("Cannot open the rollout set", f"{path}: {type(exc).__name__}: {exc}")
            return False
        self.show_rollout_set(rollout_set, str(path))
        self._add_recent(str(path))
        return True

    def show_rollout_set(self, rollout_set: RolloutSet, source: str) -> None:
        self._abandon_run()
        self.collector = RunCollector.from_set(rollout_set)
        self.read_only_path = source
        self.trees = {}
        self._clear_tabs()
        for group in rollout_set.groups:
            self._rebuild_tree(group)
        self._rewards_after_open()
        self._sync_tabs()
        name = Path(source).name
        self.setWindowTitle(f"{name} — Rollout Explorer")
        self.status.show_file(f"{name}, made with {rollout_set.model.name}")

    def _rebuild_tree(self, group) -> None:
        try:
            self.trees[group.id] = TokenTree.from_group(group)
        except ValueError as exc:
            print(f"rollout-explorer: token tree of {group.id}: {exc}", file=sys.stderr)

    def _abandon_run(self) -> None:
        """Stop drawing the current run (it is cancelled on the worker; its late events are dropped)."""
        self.host.stop_all()
        self._pending.clear()
        self._accepted = set()
        if self._run_id is not None:
            self._run_id = None
            self._refresh_timer.stop()
            self._autosave_timer.stop()
            self._set_running(False)

    # -- export ----------------------------------------------------------------------------------------------------
    def current_rollout_set(self) -> Optional[RolloutSet]:
        if self.collector is None or not self.collector.group_ids or self.collector.model is None:
            return None
        self.drain()
        return self.collector.rollout_set("cancelled")

    def export_dialog(self) -> None:
        if self._nothing_to_export():
            return
        path, _ = QFileDialog.getSaveFileName(self, "Export rollout set", str(Path(self._last_dir()) / "rollouts.json"),
                                              "Rollout sets (*.json)")
        if path:
            self.export_rollout_set(path)

    def export_jsonl_dialog(self) -> None:
        if self._nothing_to_export():
            return
        path, _ = QFileDialog.getSaveFileName(self, "Export JSONL", str(Path(self._last_dir()) / "rollouts.jsonl"),
                                              "JSON Lines (*.jsonl)")
        if path:
            self.export_jsonl(path)

    def _nothing_to_export(self) -> bool:
        if self.current_rollout_set() is None:
            self.show_error("Nothing to export", "Run some queries (or open a rollout set) first.")
            return True
        return False

    def export_rollout_set(self, path: str) -> bool:
        rollout_set = self.current_rollout_set()
        if rollout_set is None:
            self.show_error("Nothing to export", "Run some queries (or open a rollout set) first.")
            return False
        try:
            export.save(rollout_set, path)
        except ExplorerError as exc:
            self.show_error("Cannot export the rollout set", str(exc))
            return False
        except OSError as exc:
            self.show_error("Cannot export the rollout set", f"{path}: {exc.strerror or exc}")
            return False
        self._add_recent(str(path))
        self.recovery.clear()
        self.status.message(f"Saved {path}")
        return True

    def export_jsonl(self, path: str) -> bool:
        rollout_set = self.current_rollout_set()
        if rollout_set is None:
            self.show_error("Nothing to export", "Run some queries (or open a rollout set) first.")
            return False
        try:
            n = write_jsonl(rollout_set, path)
        except (ExplorerError, OSError) as exc:
            self.show_error("Cannot export JSONL", str(exc))
            return False
        self.status.message(f"Wrote {n} rollouts to {path}")
        return True

    # -- recent files ----------------------------------------------------------------------------------------------
    def recent_files(self) -> list[str]:
        try:
            paths = json.loads(self.settings.value("recent_files", "[]"))
        except (TypeError, ValueError):
            return []
        return [p for p in paths if isinstance(p, str)] if isinstance(paths, list) else []

    def _add_recent(self, path: str) -> None:
        path = str(Path(path).absolute())
        paths = [path] + [p for p in self.recent_files() if p != path]
        if self.persist:
            self.settings.setValue("recent_files", json.dumps(paths[:MAX_RECENT]))
            self.settings.setValue("last_dir", str(Path(path).parent))
        self.refresh_recent_menu()

    def refresh_recent_menu(self) -> None:
        fill_recent_menu(self, [p for p in self.recent_files() if Path(p).exists()])

    def _last_dir(self) -> str:
        return str(self.settings.value("last_dir", "") or "")

    # -- drag and drop ---------------------------------------------------------------------------------------------
    @staticmethod
    def _dropped_path(mime) -> Optional[str]:
        for url in mime.urls() if mime.hasUrls() else ():
            if url.isLocalFile() and Path(url.toLocalFile()).suffix.lower() in (".gguf", ".json"):
                return url.toLocalFile()
        return None

    def dragEnterEvent(self, event) -> None:  # noqa: N802 (Qt override)
        if self._dropped_path(event.mimeData()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event) -> None:  # noqa: N802 (Qt override)
        path = self._dropped_path(event.mimeData())
        if path:
            event.acceptProposedAction()
            self.open_path(path)

    # -- autosave and recovery -------------------------------------------------------------------------------------
    def autosave(self) -> None:
        self.drain()
        if not self._dirty_since_autosave and self.is_running():
            return  # nothing new since the last save
        rollout_set = self.current_rollout_set()
        if rollout_set is not None and self.read_only_path is None:
            self.recovery.save_async(rollout_set)
            self._dirty_since_autosave = False

    def offer_recovery(self) -> bool:
        """After a crash the recovery file is still there: offer to show it. True when it was opened."""
        if not self.recovery.exists():
            return False
        try:
            rollout_set = self.recovery.load()
        except ExplorerError as exc:
            self.recovery.clear()
            self.show_error("Cannot recover the last run", str(exc))
            return False
        n = sum(len(g.rollouts) for g in rollout_set.groups)
        if self.ask("Recover the last run?", f"The last session ended during a run. Show its {n} rollouts "
                    f"({len(rollout_set.groups)} queries, {rollout_set.model.name})? Export them to keep them."):
            self.show_rollout_set(rollout_set, "recovered run")
            self.read_only_path = "recovered run"
            self.recovery.clear()
            return True
        self.recovery.clear()
        return False

    # -- settings --------------------------------------------------------------------------------------------------
    def startup_model(self) -> Optional[str]:
        """The model to open at start: the last one used if it is still there, else the default model."""
        last = self.settings.value("last_model", "")
        if isinstance(last, str) and last and Path(last).is_file():
            return last
        from ..core.models import default_model_path

        try:
            return str(default_model_path())
        except ModelError:
            return None

    def restore_settings(self) -> None:
        s = self.settings
        geometry = s.value("window/geometry")
        if isinstance(geometry, QByteArray) and not geometry.isEmpty():
            self.restoreGeometry(geometry)
        self._splitters_restored = False
        for key, splitter in self._splitters():
            state = s.value(key)
            if isinstance(state, QByteArray) and not state.isEmpty():
                self._splitters_restored |= splitter.restoreState(state)
        try:
            state = json.loads(s.value("controls", "") or "null")
        except (TypeError, ValueError):
            state = None
        if isinstance(state, dict):
            self.controls.restore_state(state)
        if s.value("view/shading", "prob") == "entropy":
            self.set_shading("entropy")

    def _splitters(self):
        return (("window/main_splitter", self.main_splitter), ("window/right_splitter", self.right_splitter),
                ("window/bottom_splitter", self.bottom_splitter))

    def save_settings(self) -> None:
        s = self.settings
        s.setValue("window/geometry", self.saveGeometry())
        for key, splitter in self._splitters():
            s.setValue(key, splitter.saveState())
        s.setValue("controls", json.dumps(self.controls.state()))
        s.setValue("view/shading", self.shading())
        s.sync()

    # -- shutdown --------------------------------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Stop the run, close the engine on its thread and join it (at most 2 s); idempotent."""
        if self._closed:
            return
        self._closed = True
        self._abandon_run()  # signals still queued from the worker are ignored from here on
        self._refresh_timer.stop()
        self._autosave_timer.stop()
        if self.persist:
            self.save_settings()
        self.recovery.clear()
        if not self.host.shutdown(2000):
            print("rollout-explorer: the engine is still busy (loading a model?); exiting when it is done",
                  file=sys.stderr)
            keep_until_finished(self.host)
        self.recovery.flush()
        self.recovery.close()

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt override)
        self.shutdown()
        event.accept()
