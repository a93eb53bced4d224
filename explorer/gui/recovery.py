"""The crash-recovery file: the rollout set of a run in progress, saved every few seconds, removed on a clean end.

Writing happens on one background thread (serialising a large set takes long enough to stall the event loop); the
snapshot handed to it is an immutable RolloutSet, so the GUI can keep feeding its collector meanwhile. Saves and
removals go through the same single-thread queue, so a removal is never overtaken by an older save.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Optional

from PySide6.QtCore import QStandardPaths

from ..core import export
from ..core.types import RolloutSet

RECOVERY_NAME = "recovery.rollout-set.json"
AUTOSAVE_INTERVAL_MS = 4000


def default_recovery_dir() -> Path:
    return Path(QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation))


class RecoveryStore:
    def __init__(self, directory: Optional[str | os.PathLike[str]] = None, enabled: bool = True):
        """enabled=False (scripted runs) reads, writes and removes nothing, so a scripted run can never replace or
        remove the recovery file an interactive session left behind."""
        self.enabled = enabled
        self.directory = Path(directory) if directory is not None else default_recovery_dir()
        self.path = self.directory / RECOVERY_NAME
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="autosave")
        self._last: Optional[Future] = None
        self._closed = False
        self.last_error: Optional[str] = None

    def exists(self) -> bool:
        return self.enabled and self.path.is_file()

    def save_async(self, rollout_set: RolloutSet) -> Optional[Future]:
        if self._closed or not self.enabled:  # closed: late signals after the window closed write nothing
            return None
        self._last = self._pool.submit(self._save, rollout_set)
        return self._last

    def _save(self, rollout_set: RolloutSet) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            export.save(rollout_set, self.path)
            self.last_error = None
        except Exception as exc:  # noqa: BLE001 -- autosave is best effort; the run itself must go on
            self.last_error = f"{type(exc).__name__}: {exc}"
            print(f"rollout-explorer: autosave to {self.path} failed: {self.last_error}", file=sys.stderr)

    def clear(self) -> Optional[Future]:
        if self._closed or not self.enabled:
            return None
        self._last = self._pool.submit(self._remove)
        return self._last

    def _remove(self) -> None:
        try:
            self.path.unlink(missing_ok=True)
        except OSError as exc:
            print(f"rollout-explorer: cannot remove {self.path}: {exc}", file=sys.stderr)

    def load(self) -> RolloutSet:
        return export.load(self.path)

    def flush(self, timeout: Optional[float] = 5.0) -> None:
        """Wait for queued saves and removals (the queue runs in order, so waiting on the last one is enough)."""
        if self._last is not None:
            self._last.result(timeout)

    def close(self) -> None:
        self._closed = True
        self._pool.shutdown(wait=True)
