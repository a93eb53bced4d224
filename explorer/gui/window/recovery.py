"""The crash-recovery journal of a run in progress (core/files/journal.py), kept while a run streams and removed on a
clean end.

A run's start writes a checkpoint (the set as it was); while it streams, the events the window fed its Session are
appended and pushed to the disk every AUTOSAVE_INTERVAL_MS, so a crash or a kill -9 loses at most that much of the
run, and the file is never a half-written set: a checkpoint is written beside it and renamed over it, an append
adds whole lines. Writing happens on one background thread; checkpoints, appends and removals share its queue, so
they land in the order they were asked for.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Optional

from PySide6.QtCore import QStandardPaths

from explorer.core.files.journal import JournalWriter, read_journal
from explorer.core.types import Event, RolloutSet

RECOVERY_NAME = "recovery.journal"
AUTOSAVE_INTERVAL_MS = 1000  # while a run streams: what a crash can lose


def default_recovery_dir() -> Path:
    return Path(QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation))


class RecoveryStore:
    def __init__(self, directory: Optional[str | os.PathLike[str]] = None, enabled: bool = True):
        """enabled=False (scripted runs) reads, writes and removes nothing, so a scripted run can never replace or
        remove the recovery file an interactive session left behind."""
        self.enabled = enabled
        self.directory = Path(directory) if directory is not None else default_recovery_dir()
        self.path = self.directory / RECOVERY_NAME
        self._writer = JournalWriter(self.path)  # used on the pool's thread only
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="autosave")
        self._last: Optional[Future] = None
        self._events: list[Event] = []  # fed to the session since the last append (GUI thread)
        self.owner: object = None  # what the journal's checkpoint is a snapshot of (None: no journal begun)
        self._closed = False
        self.last_error: Optional[str] = None

    def exists(self) -> bool:
        return self.enabled and self.path.is_file()

    def _submit(self, fn, *args) -> Optional[Future]:
        if self._closed or not self.enabled:  # closed: late signals after the window closed write nothing
            return None
        self._last = self._pool.submit(self._guarded, fn, *args)
        return self._last

    def _guarded(self, fn, *args) -> None:
        try:
            fn(*args)
            self.last_error = None
        except Exception as exc:  # noqa: BLE001 -- autosave is best effort; the run itself must go on
            self.last_error = f"{type(exc).__name__}: {exc}"
            print(f"rollout-explorer: autosave to {self.path} failed: {self.last_error}", file=sys.stderr)

    def save_async(self, rollout_set: RolloutSet, owner: object = None) -> Optional[Future]:
        """A checkpoint: the journal starts over from this set (a run's first tick, or a finished set that
        changed). owner is what the set is a snapshot of (the window's Session): events are appended for it."""
        self._events = []
        self.owner = owner
        return self._submit(self._begin, rollout_set)

    def _begin(self, rollout_set: RolloutSet) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._writer.begin(rollout_set)

    def record(self, events: Iterable[Event]) -> None:
        """Events just fed to the session: appended at the next append_async()."""
        if self.enabled and not self._closed:
            self._events.extend(events)

    def append_async(self) -> Optional[Future]:
        """Push the recorded events to the journal (the autosave timer's tick while a run streams)."""
        if not self._events:
            return None
        events, self._events = self._events, []
        return self._submit(self._append, events)

    def _append(self, events: list) -> None:
        if self._writer.started:  # no checkpoint yet (autosave off, or it failed): nothing to append to
            self._writer.append(events)

    def clear(self) -> Optional[Future]:
        self._events = []
        self.owner = None
        return self._submit(self._writer.remove)

    def load(self) -> RolloutSet:
        return read_journal(self.path)

    def flush(self, timeout: Optional[float] = 5.0) -> None:
        """Wait for queued writes and removals (the queue runs in order, so waiting on the last one is enough)."""
        if self._last is not None:
            self._last.result(timeout)

    def close(self) -> None:
        self._closed = True
        self._pool.shutdown(wait=True)
        self._writer.close()
