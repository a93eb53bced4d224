"""Plain stand-ins for the rollout panes and the scoring panel, with the same API, used only when
explorer.gui.panes / explorer.gui.scoring are not installed (so the window still opens and streams text)."""

from __future__ import annotations

from typing import Optional

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)


class FallbackPanes(QWidget):
    token_clicked = Signal(str, int)

    def __init__(self, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self._collector = None
        self._group_id: Optional[str] = None
        self._edits: dict[str, QPlainTextEdit] = {}
        self._inner = QWidget()
        self._row = QHBoxLayout(self._inner)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self._inner)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(scroll)

    def show_group(self, collector, group_id: Optional[str]) -> None:
        self._collector, self._group_id = collector, group_id
        for edit in self._edits.values():
            edit.deleteLater()
        self._edits.clear()
        self.refresh()

    def refresh(self) -> None:
        if self._collector is None or self._group_id is None:
            return
        for live in self._collector.live_rollouts(self._group_id):
            edit = self._edits.get(live.id)
            if edit is None:
                edit = self._edits[live.id] = QPlainTextEdit()
                edit.setReadOnly(True)
                edit.setMinimumWidth(180)
                self._row.addWidget(edit)
            text = "".join(live.text_parts)
            if edit.toPlainText() != text:
                edit.setPlainText(text)

    def pane_count(self) -> int:
        return len(self._edits)

    def set_shading(self, mode: str) -> None:
        pass

    def highlight_rollouts(self, ids) -> None:
        pass

    def scroll_to_token(self, rollout_id: str, position: int) -> None:
        pass

    def set_sort(self, key: str) -> None:
        pass


class FallbackScoring(QWidget):
    score_requested = Signal(str, list)

    def __init__(self, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self._group_id: Optional[str] = None
        self.edit = QPlainTextEdit()
        self.edit.setPlaceholderText("Candidate responses, one per line")
        self.edit.setMaximumHeight(80)
        self.button = QPushButton("Score")
        self.button.clicked.connect(self._request)
        self.result = QLabel("")
        layout = QVBoxLayout(self)
        layout.addWidget(self.edit)
        layout.addWidget(self.button)
        layout.addWidget(self.result)

    def _request(self) -> None:
        responses = [line for line in self.edit.toPlainText().splitlines() if line.strip()]
        if self._group_id is not None and responses:
            self.score_requested.emit(self._group_id, responses)

    def set_group(self, group_id: Optional[str], query: str) -> None:
        self._group_id = group_id
        self.result.setText("")

    def show_scores(self, group_id: str, scores) -> None:
        self.result.setText("\n".join(f"{s.response!r}: log pi = {s.logprob:.3f}" for s in scores))

    def set_busy(self, busy: bool) -> None:
        self.button.setEnabled(not busy)
