"""Reading a large rollout set off the GUI thread, with progress and a way to cancel.

export.load streams the file and calls back with the bytes read; here that runs on a plain thread and the results
come back as Qt signals (queued to the GUI thread). Only one read at a time: a new start() cancels the one going.
"""

from __future__ import annotations

import threading
from typing import Optional

from PySide6.QtCore import QObject, Signal

from explorer.core.files import export
from explorer.core.errors import ExplorerError, LoadCancelled

LARGE_SET_BYTES = 16 << 20  # below this a set reads in well under a second: no thread, no progress dialog


class SetLoader(QObject):
    progressed = Signal(str, int, int)  # path, bytes read, file size
    loaded = Signal(str, object)  # path, RolloutSet
    failed = Signal(str, str, object)  # path, one-line message, the exception when it is a bug (None: bad input)
    cancelled = Signal(str)  # path

    def __init__(self, parent: Optional[QObject] = None):
        super().__init__(parent)
        self._cancel: Optional[threading.Event] = None
        self._thread: Optional[threading.Thread] = None

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, path: str) -> None:
        self.cancel()
        cancel = self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(path, cancel), name="set-loader", daemon=True)
        self._thread.start()

    def cancel(self) -> None:
        if self._cancel is not None:
            self._cancel.set()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Join the reading thread (shutdown, tests); True when none is left running."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.busy

    def _read(self, path: str, cancel: threading.Event) -> None:
        try:
            rollout_set = export.load(path, progress=lambda done, total: self.progressed.emit(path, done, total),
                                      cancel=cancel)
        except LoadCancelled:
            self.cancelled.emit(path)
        except ExplorerError as exc:
            self.failed.emit(path, str(exc), None)
        except Exception as exc:  # noqa: BLE001 -- a reader bug must reach the window (and its log), not kill it
            self.failed.emit(path, f"{path}: {type(exc).__name__}: {exc}", exc)
        else:
            if not cancel.is_set():
                self.loaded.emit(path, rollout_set)
