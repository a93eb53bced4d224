"""SIGINT (Ctrl-C in the terminal) and SIGTERM (logout, shutdown, `kill`) reach the window as a Qt signal.

Python runs a signal handler only between two bytecodes of the main thread, and while Qt's event loop waits in C++
no bytecode runs: a Ctrl-C would wait for the next event (or forever), and Python's default SIGINT handler raising
KeyboardInterrupt inside a Qt callback is how the window died with a segfault. So the handlers do nothing but let
signal.set_wakeup_fd write the signal's number to a socket; a QSocketNotifier wakes the event loop on it and
`received` is emitted from there, on the GUI thread, like any other event.
"""

from __future__ import annotations

import signal
import socket
from typing import Optional

from PySide6.QtCore import QObject, QSocketNotifier, QTimer, Signal, Slot

HANDLED = (signal.SIGINT, signal.SIGTERM)


def exit_status(signum: int) -> int:
    """The shell's convention: 128 + the signal's number (130 for SIGINT, 143 for SIGTERM)."""
    return 128 + int(signum)


class SignalBridge(QObject):
    received = Signal(int)  # the signal's number

    def __init__(self, parent: Optional[QObject] = None):
        super().__init__(parent)
        self._read, self._write = socket.socketpair()
        self._read.setblocking(False)
        self._write.setblocking(False)
        self._previous_fd = signal.set_wakeup_fd(self._write.fileno(), warn_on_full_buffer=False)
        self._previous = {signum: signal.signal(signum, self._note) for signum in HANDLED}
        self._notifier = QSocketNotifier(self._read.fileno(), QSocketNotifier.Type.Read, self)
        self._notifier.activated.connect(self._wake)

    @staticmethod
    def _note(signum, frame) -> None:
        """The Python-level handler: set_wakeup_fd has already written the number; replacing the default action
        is all this is for."""

    @Slot()
    def _wake(self) -> None:
        try:
            data = self._read.recv(64)
        except BlockingIOError:
            return
        for signum in data:
            if signum in HANDLED:
                self.received.emit(signum)

    def close(self) -> None:
        """Give the signals back to what handled them before (the default: die)."""
        self._notifier.setEnabled(False)
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        signal.set_wakeup_fd(self._previous_fd)
        self._read.close()
        self._write.close()


STOP_WAIT_MS = 1500  # a run stops at its next decode step (median 0.34 s, 1.3 s worst measured); then we go anyway


class GracefulExit(QObject):
    """What SIGINT and SIGTERM do to the window: what closing it does, except that the interrupted run is kept in
    the recovery journal (the next start offers it back) and the exit status says which signal it was.

    The first signal stops the run and waits (at most STOP_WAIT_MS) for it to end, so its last tokens are in the
    journal; a second signal, or the wait running out, exits at once with what the journal holds.
    """

    def __init__(self, window, app, bridge: SignalBridge):
        super().__init__(window)
        self._window = window
        self._app = app
        self._status: Optional[int] = None
        self._bridge = bridge
        bridge.received.connect(self._on_signal)
        window.run_done.connect(self._on_run_done)

    @Slot(int)
    def _on_signal(self, signum: int) -> None:
        if self._status is not None:  # a second signal: no more waiting
            self._exit()
            return
        self._status = exit_status(signum)
        if self._window.is_running():
            self._window.stop()
            QTimer.singleShot(STOP_WAIT_MS, self._exit)
        else:
            self._exit()

    @Slot(bool, bool)
    def _on_run_done(self, cancelled: bool, failed: bool) -> None:
        if self._status is not None:
            self._exit()

    def _exit(self) -> None:
        if self._app is None:  # already on the way out; the bridge stays, so a third Ctrl-C is ignored too
            return
        app, self._app = self._app, None
        self._window.shutdown(keep_recovery=True)
        app.exit(self._status)
