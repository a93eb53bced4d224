"""The status bar: model, backend, live tokens/s, progress (tokens done of queries x k x max tokens), elapsed time."""

from __future__ import annotations

import time
from collections import deque
from typing import Optional

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QProgressBar, QStatusBar, QWidget

from explorer.core.models.discovery import format_params
from explorer.core.types import ModelInfo
from explorer.gui.widgets.elided_label import ElidedLabel

RATE_WINDOW_S = 1.5  # tokens/s is measured over the last second and a half: live, yet steady enough to read


def format_elapsed(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}:{secs:02d}"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


class RateMeter:
    """Tokens per second over a sliding window of (time, tokens done) samples."""

    def __init__(self, window_s: float = RATE_WINDOW_S):
        self.window_s = window_s
        self._samples: deque[tuple[float, int]] = deque()

    def reset(self) -> None:
        self._samples.clear()

    def add(self, tokens_done: int, now: Optional[float] = None) -> float:
        now = time.monotonic() if now is None else now
        self._samples.append((now, tokens_done))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window_s:
            self._samples.popleft()
        (t0, n0), (t1, n1) = self._samples[0], self._samples[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0


class StatusPanel:
    """Owns the widgets it puts into a QStatusBar; the window tells it what happened."""

    def __init__(self, bar: QStatusBar):
        self.bar = bar
        self.model_label = ElidedLabel("No model")
        self.backend_label = QLabel("")
        self.rate_label = QLabel("")
        # Widths that fit any value, so a longer number or a long message on the left never cuts one off.
        metrics = self.rate_label.fontMetrics()
        self.rate_label.setMinimumWidth(metrics.horizontalAdvance("99,999 tok/s"))
        self.rate_label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(220)
        self.progress.setTextVisible(True)
        self.progress.setVisible(False)
        self.elapsed_label = QLabel("")
        self.elapsed_label.setMinimumWidth(metrics.horizontalAdvance("00:00:00"))
        self.elapsed_label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        # all permanent (right-hand side): transient messages on the left never hide the model or the progress
        for w in (self.model_label, self.backend_label, self.rate_label, self.progress, self.elapsed_label):
            bar.addPermanentWidget(w)
        self.rate = RateMeter()
        self._started: Optional[float] = None

    def message(self, text: str, timeout_ms: int = 6000) -> None:
        self.bar.showMessage(text, timeout_ms)

    # -- model -----------------------------------------------------------------------------------------------------
    def set_model(self, info: Optional[ModelInfo], note: str = "", name: Optional[str] = None) -> None:
        """name: the model's name as the picker lists it (its file's own name, general.name, goes in the tooltip)."""
        if info is None:
            self.model_label.setText(note or "No model")
            self.model_label.setToolTip("")
            self.backend_label.setText("")
            return
        size = format_params(info.n_params)
        self.model_label.setText(f"{name or info.name} · {size}" + (f" · {note}" if note else ""))
        # the name may show elided; the file's own name for the model is in the tooltip
        self.model_label.setToolTip(f"{self.model_label.text()}\nthe GGUF names itself: {info.name}\n{info.path}")
        layers = f", {info.n_gpu_layers} layers on GPU" if info.n_gpu_layers else ""
        self.backend_label.setText(f"{info.backend or 'CPU'}{layers}")
        self.backend_label.setToolTip(info.system_info or "")

    def set_loading(self, path: str) -> None:
        self.model_label.setText(f"Loading {path}…")
        self.backend_label.setText("")
        self.progress.setVisible(True)
        self.progress.setRange(0, 0)  # indeterminate: llama.cpp does not report load progress here
        self.progress.setFormat("")

    def end_loading(self) -> None:
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setVisible(False)

    # -- runs ------------------------------------------------------------------------------------------------------
    def start_run(self) -> None:
        self._started = time.monotonic()
        self.rate.reset()
        self.rate.add(0, self._started)
        self.progress.setVisible(True)
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("%p%")
        self.rate_label.setText("")
        self.elapsed_label.setText(format_elapsed(0))

    def update_run(self, tokens_done: int, total: int) -> None:
        now = time.monotonic()
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(min(tokens_done, max(total, 1)))
        self.progress.setFormat(f"{tokens_done:,} / {total:,} tokens")
        rate = self.rate.add(tokens_done, now)
        self.rate_label.setText(f"{rate:,.0f} tok/s")
        if self._started is not None:
            self.elapsed_label.setText(format_elapsed(now - self._started))

    def end_run(self, tokens_done: int, total: int, cancelled: bool, failed: bool = False) -> None:
        elapsed = time.monotonic() - self._started if self._started is not None else 0.0
        self._started = None
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(min(tokens_done, max(total, 1)) if cancelled or failed else max(total, 1))
        self.progress.setFormat(f"{tokens_done:,} tokens")
        self.rate_label.setText(f"{tokens_done / elapsed:,.0f} tok/s" if elapsed > 0 else "")
        self.elapsed_label.setText(format_elapsed(elapsed))
        word = "failed" if failed else "stopped" if cancelled else "done"
        self.message(f"Run {word}: {tokens_done:,} tokens in {format_elapsed(elapsed)}")

    def show_file(self, name: str) -> None:
        self.progress.setVisible(False)
        self.rate_label.setText("")
        self.elapsed_label.setText("")
        self.message(f"Viewing {name} (read-only)", 0)

    @property
    def widgets(self) -> tuple[QWidget, ...]:
        return (self.model_label, self.backend_label, self.rate_label, self.progress, self.elapsed_label)
