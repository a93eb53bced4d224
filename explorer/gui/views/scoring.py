"""Scoring panel: type candidate responses for the selected query and see how likely the model finds each one."""

from __future__ import annotations

import math
from typing import Optional, Sequence

from PySide6.QtCore import QEvent, QObject, Qt, Signal
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from explorer.core.types import Score
from explorer.gui.widgets.style import muted_text
from explorer.gui.widgets.view_options import ViewOptions
from explorer.core.token_text import decode_pieces, fit_pieces
from explorer.core.numbers import format_kl, format_logprob, format_percent, format_perplexity, format_probability
from explorer.gui.widgets.tokens import TokenTextView

OCEAN_QUERY = "Which is the largest ocean?"
OCEAN_CANDIDATES = "Atlantic Ocean\nPacific Ocean"
COLUMNS = ("Response", "log π(y|x)", "π(y|x)", "share", "perplexity", "tokens", "log π/π_ref", "KL/token")
REFERENCE_COLUMNS = ("log π/π_ref", "KL/token")  # shown only while a score has a reference policy's facts
# short headers, so that the response keeps the width (the tooltips say them in full)
HEADERS = {"log π(y|x)": "log π", "π(y|x)": "π", "perplexity": "ppl", "tokens": "tok", "KL/token": "KL/tok"}
RESPONSE_MIN_WIDTH = 160  # px: the response column never gets less (the panel is at least this much wider)
_TIPS = (
    "The response as the model tokenised it, each token shaded as in the panes; hover a token for its "
    "probability and the alternatives",
    "Sum of the tokens' raw log-probabilities: log pi(response | query)",
    "pi(response | query), the probability of the whole response",
    "pi(y|x) normalised over the candidates shown: how the model splits its belief among them",
    "exp(-mean token logprob): 1 means every token was certain",
    "Number of response tokens",
    "log pi(y|x) - log pi_ref(y|x): how much likelier the policy finds the response than the reference policy",
    "KL(pi || pi_ref) at each position over the whole vocabulary, averaged over the response's tokens (nats)",
)


def candidate_lines(text: str) -> list[str]:
    """One candidate per non-blank line, surrounding whitespace removed."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def shares(scores: Sequence[Score]) -> list[float]:
    """pi(y|x) of each candidate normalised over the candidates (a softmax of the log-probabilities)."""
    if not scores:
        return []
    logprobs = [s.logprob if s.tokens else -math.inf for s in scores]
    top = max(logprobs)
    if top == -math.inf:
        return [0.0] * len(scores)
    weights = [math.exp(lp - top) for lp in logprobs]
    total = math.fsum(weights)
    return [w / total for w in weights]


class _SubmitFilter(QObject):
    """Ctrl+Enter in the candidates box scores them (claimed before any window shortcut on the same key)."""

    def __init__(self, submit, parent=None):
        super().__init__(parent)
        self._submit = submit

    def eventFilter(self, obj, event):  # noqa: N802 (Qt override)
        if event.type() in (QEvent.Type.ShortcutOverride, QEvent.Type.KeyPress):
            key_event: QKeyEvent = event
            if (key_event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter)
                    and key_event.modifiers() & Qt.KeyboardModifier.ControlModifier):
                event.accept()
                if event.type() == QEvent.Type.KeyPress:
                    self._submit()
                return True
        return False


class ScoringPanel(QWidget):
    """Candidates box + Score button + results table (log pi, pi, share, perplexity, per-token shading)."""

    score_requested = Signal(str, list)  # group id, candidate responses

    def __init__(self, options: Optional[ViewOptions] = None, parent: Optional[QWidget] = None):
        """options: the views' shading (a panel on its own gets options of its own)."""
        super().__init__(parent)
        self.options = options if options is not None else ViewOptions(self)
        self._group_id: Optional[str] = None
        self._query = ""
        self._drafts: dict[str, str] = {}  # typed per query: switching groups, or a run starting, loses nothing
        self._busy = False

        self.query_label = QLabel()
        self.query_label.setWordWrap(True)
        self.query_label.setTextFormat(Qt.TextFormat.RichText)
        self.candidates = QPlainTextEdit()
        self.candidates.setPlaceholderText("Candidate responses, one per line")
        self.candidates.setTabChangesFocus(True)
        self.candidates.setMaximumHeight(self.fontMetrics().lineSpacing() * 5 + 12)
        # a short panel (a tab under the tree) keeps two lines of candidates and the table's first row
        self.candidates.setMinimumHeight(self.fontMetrics().lineSpacing() * 2 + 12)
        self._filter = _SubmitFilter(self.request_score, self)
        self.candidates.installEventFilter(self._filter)
        self.score_button = QPushButton("Score")
        self.score_button.setToolTip("Score every line under the model: log pi(response | query) (Ctrl+Enter)")
        self.score_button.clicked.connect(self.request_score)
        self.busy_bar = QProgressBar()
        self.busy_bar.setRange(0, 0)  # indeterminate: scoring is one forward pass per candidate
        self.busy_bar.setTextVisible(False)
        self.busy_bar.setMaximumHeight(8)
        self.busy_bar.hide()
        self.message = QLabel()
        self.message.setWordWrap(True)
        # how far these scores may be from the logprobs recorded while sampling, when decoding is not exact
        self.exactness = QLabel()
        self.exactness.setWordWrap(True)
        self.exactness.hide()

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setMinimumHeight(self.fontMetrics().lineSpacing() * 3)
        self.table.setHorizontalHeaderLabels([HEADERS.get(name, name) for name in COLUMNS])
        for col, tip in enumerate(_TIPS):
            self.table.horizontalHeaderItem(col).setToolTip(tip)
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.table.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Fixed)  # the rest of the width (_fit_columns)
        header.setStretchLastSection(False)
        for col in range(1, len(COLUMNS)):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        header.sectionResized.connect(lambda col, _old, _new: col and self._fit_columns())
        self.table.installEventFilter(self)

        buttons = QVBoxLayout()
        buttons.addWidget(self.score_button)
        buttons.addWidget(self.busy_bar)
        buttons.addStretch(1)
        entry = QHBoxLayout()
        entry.addWidget(self.candidates, 1)
        entry.addLayout(buttons)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.query_label)
        layout.addLayout(entry)
        layout.addWidget(self.message)
        layout.addWidget(self.exactness)
        layout.addWidget(self.table, 1)
        self.set_group(None, "")

    # -- public API -------------------------------------------------------------------------------------------------
    @property
    def group_id(self) -> Optional[str]:
        return self._group_id

    @property
    def query(self) -> str:
        return self._query

    def set_group(self, group_id: Optional[str], query: str, scores: Sequence[Score] = ()) -> None:
        """Show this group's query and its scores (the session keeps them; the panel only shows them)."""
        if self._group_id is not None:
            self._drafts[self._query] = self.candidates.toPlainText()
        self._group_id, self._query = group_id, query
        muted = muted_text(self.palette()).name()
        if group_id is None:
            self.query_label.setText(f'<span style="color:{muted}">Select a query to score responses for it.</span>')
            self.candidates.setPlainText("")
        else:
            escaped = query.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            self.query_label.setText(f'<span style="color:{muted}">Score responses to</span> <b>{escaped}</b>')
            draft = self._drafts.get(query)
            if draft is None:
                draft = OCEAN_CANDIDATES if query.strip().lower() == OCEAN_QUERY.lower() else ""
            self.candidates.setPlainText(draft)
        self._set_message("")
        self._update_enabled()
        self._show_table(scores if group_id is not None else ())

    def show_scores(self, scores: Sequence[Score]) -> None:
        """New scores of the group shown."""
        self._set_message("")
        self._show_table(scores)

    def set_exactness(self, note: Optional[str]) -> None:
        """None when scores equal the logprobs sampling records (exact decoding); else what the model's band is."""
        muted = muted_text(self.palette()).name()
        self.exactness.setText(f'<span style="color:{muted}">{note[:1].upper() + note[1:]}. Exact logprobs (side '
                               "panel, Model) makes them equal.</span>" if note else "")
        self.exactness.setVisible(bool(note))

    def set_busy(self, busy: bool) -> None:
        self._busy = busy
        self.busy_bar.setVisible(busy)
        self._update_enabled()

    def request_score(self) -> None:
        if self._group_id is None or self._busy:
            return
        lines = candidate_lines(self.candidates.toPlainText())
        if not lines:
            self._set_message("Type at least one candidate response, one per line.")
            return
        self._set_message("")
        self.score_requested.emit(self._group_id, lines)

    # -- internals --------------------------------------------------------------------------------------------------
    def _set_message(self, text: str) -> None:
        self.message.setText(text)
        self.message.setVisible(bool(text))

    def _update_enabled(self) -> None:
        self.score_button.setEnabled(self._group_id is not None and not self._busy)
        self.score_button.setText("Scoring…" if self._busy else "Score")

    def _show_table(self, scores: Sequence[Score]) -> None:
        self.table.setRowCount(0)
        self.table.setRowCount(len(scores))
        share = shares(scores)
        best = max(range(len(scores)), key=lambda i: share[i]) if scores and max(share) > 0 else -1
        line = self.fontMetrics().lineSpacing()
        for row, score in enumerate(scores):
            view = TokenTextView(None, self.options)
            view.setFrameShape(QFrame.Shape.NoFrame)
            view.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
            view.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
            view.set_tokens(score.tokens, fit_pieces(decode_pieces(score.tokens), score.response))
            if not score.tokens:
                view.setPlainText(score.response)
            self.table.setCellWidget(row, 0, view)
            n_lines = min(4, score.response.count("\n") + 1 + len(score.response) // 60)
            self.table.setRowHeight(row, line * n_lines + 12)
            n = len(score.tokens)
            values = (format_logprob(score.logprob) if n else "—",
                      format_probability(score.logprob) if n else "—",
                      format_percent(share[row]),
                      format_perplexity(score.perplexity),
                      str(n),
                      format_logprob(score.log_ratio),
                      format_kl(score.mean_kl))
            for col, value in enumerate(values, start=1):
                item = QTableWidgetItem(value)
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if row == best:
                    font = item.font()
                    font.setBold(True)
                    item.setFont(font)
                self.table.setItem(row, col, item)
        referenced = any(score.log_ratio is not None for score in scores)
        for name in REFERENCE_COLUMNS:
            self.table.setColumnHidden(COLUMNS.index(name), not referenced)
        self.table.horizontalScrollBar().setValue(0)  # a new cell widget may have scrolled the table to show itself
        self._fit_columns()

    def _fit_columns(self) -> None:
        """The numbers take what they need and the response the rest, never less than RESPONSE_MIN_WIDTH: a panel too
        narrow for both scrolls sideways (the response first) rather than squeeze the response to a few letters."""
        header = self.table.horizontalHeader()
        numbers = sum(header.sectionSize(col) for col in range(1, len(COLUMNS)) if not self.table.isColumnHidden(col))
        width = max(RESPONSE_MIN_WIDTH, self.table.viewport().width() - numbers)
        if header.sectionSize(0) != width:
            header.resizeSection(0, width)

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 (Qt override)
        if obj is self.table and event.type() == QEvent.Type.Resize:
            self._fit_columns()
        return False
