"""A sortable table of one group's rollouts, for any k: one row per distinct response, under the tree.

Columns: the response from where it leaves the group's shared prefix, shaded by token probability (as in the panes),
how many rollouts drew it and their share of the group, tokens, log pi(y|x), pi(y|x), perplexity, finish reason,
reward and advantage (shown once a row has a reward), where a branch came from (once a row is a branch); with a
reference policy also the log-ratio log pi(y|x) - log pi_ref(y|x), the mean KL per token and DPO's implicit reward
beta * log-ratio (hidden while no row shown has them). The numbers take the width they need and the response the
rest. Selecting rows emits rollouts_selected with every rollout behind them (the window shows those as panes);
set_filter() keeps only the rows of some rollouts (a box selected in the tree).
"""

from __future__ import annotations

import math
from typing import Iterable, Optional, Sequence

from PySide6.QtCore import QAbstractTableModel, QItemSelection, QItemSelectionModel, QModelIndex, QRectF, QSortFilterProxyModel, Qt, \
    Signal
from PySide6.QtGui import QFontMetricsF, QPalette
from PySide6.QtWidgets import (QAbstractItemView, QHBoxLayout, QHeaderView, QLabel, QStyle, QStyledItemDelegate,
                               QTableView, QVBoxLayout, QWidget)

from explorer.core.responses import ResponseRow, merge_responses, shared_prefix_length
from explorer.core.types import Rollout
from explorer.gui.widgets.style import shade_colour, shade_level
from explorer.core.token_text import decode_pieces
from explorer.core.numbers import (format_implicit_reward, format_kl, format_logprob, format_perplexity,
                                   format_probability)
from explorer.gui.widgets.view_options import ViewOptions

PREVIEW_TOKENS = 48  # tokens of each response drawn in the preview column
RESPONSE_MIN_WIDTH = 110  # px: below it the numbers scroll sideways rather than the response vanish
COLUMNS = ("response", "n", "tokens", "log π(y|x)", "π(y|x)", "ppl", "finish", "reward", "advantage",
           "log π/π_ref", "KL/token", "implicit R", "from")
REFERENCE_COLUMNS = ("log π/π_ref", "KL/token", "implicit R")  # shown only while a row has a reference's facts
REWARD_COLUMNS = ("reward", "advantage")  # shown only while a row has a reward (or a reward's error)
BRANCH_COLUMNS = ("from",)  # shown only while a row is a branch
# short headers, so that every number fits beside the response (the tooltips say them in full)
HEADERS = {"tokens": "tok", "log π(y|x)": "log π", "π(y|x)": "π", "reward": "R", "advantage": "A",
           "log π/π_ref": "log π\n/π_ref", "KL/token": "KL\n/tok", "implicit R": "impl.\nR"}
ELLIPSIS = "…"
SORT_ARROWS = (" ▲", " ▼")  # ascending, descending
_TIPS = {
    "response": "The response from where it leaves the prefix every response shares (…), each token shaded by its "
                "probability π(token | prefix); hover for the whole text",
    "tokens": "Tokens in the response",
    "π(y|x)": "π(y|x): the probability of the whole response",
    "ppl": "Perplexity exp(−mean token log π)",
    "reward": "The reward (mean over the row's rollouts)",
    "advantage": "The advantage (r − mean) / std over the query's i.i.d. rollouts",
    "n": "Rollouts that drew exactly this response, and their share of the group's rollouts",
    "log π(y|x)": "Sum of the token log-probabilities under the model (temperature 1)",
    "from": "A branch: the rollout it was branched from, @ the position where it parts",
    "log π/π_ref": "log pi(y|x) - log pi_ref(y|x): how much likelier the policy finds the response than the "
                   "reference policy (nats; > 0: the policy prefers it)",
    "KL/token": "KL(pi || pi_ref) at each position over the whole vocabulary, averaged over the response's tokens "
                "(nats)",
    "implicit R": "DPO's implicit reward beta * log(pi(y|x) / pi_ref(y|x)): the reward the policy would have been "
                  "trained on if DPO had made it from the reference (set beta beside the table)",
}
SORT_ROLE = Qt.ItemDataRole.UserRole + 1
PIECES_ROLE = Qt.ItemDataRole.UserRole + 2


class RolloutTableModel(QAbstractTableModel):
    """The rows (merged responses) of one group."""

    def __init__(self, options: ViewOptions, parent=None):
        super().__init__(parent)
        self._options = options  # beta of the implicit reward column
        options.changed.connect(self._on_option_changed)
        self.rows: list[ResponseRow] = []
        self.shared = 0  # tokens every row starts with: the preview starts after them
        self.shared_text = ""
        self._pieces: list[list[tuple[str, int]]] = []  # per row: (text piece, shade level) of the preview tokens
        # per row: values(row), made when first asked (a view measuring its columns asks every cell in turn)
        self._values: list[Optional[dict]] = []

    def _on_option_changed(self, name: str) -> None:
        if name != "beta":
            return
        self._values = [None] * len(self.rows)
        if self.rows:
            column = COLUMNS.index("implicit R")
            self.dataChanged.emit(self.index(0, column), self.index(len(self.rows) - 1, column))

    def has_reference(self) -> bool:
        """Whether any row carries a reference policy's facts."""
        return any(_referenced(row) is not None for row in self.rows)

    def has_rewards(self) -> bool:
        """Whether any rollout shown has a reward, an advantage or a reward's error."""
        return any(r.reward is not None or r.advantage is not None or r.reward_error is not None
                   for row in self.rows for r in row.rollouts)

    def has_branches(self) -> bool:
        return any(row.branch for row in self.rows)

    def set_rollouts(self, rollouts: Sequence[Rollout]) -> None:
        rows = merge_responses(rollouts)
        shared = shared_prefix_length(rows)
        if shared != self.shared:
            self.shared = shared
            self.shared_text = "".join(decode_pieces(rows[0].first.tokens[:shared])) if shared else ""
            self.headerDataChanged.emit(Qt.Orientation.Horizontal, 0, 0)
        pieces = [self._preview(row, shared) for row in rows]
        if [r.ids for r in rows] == [r.ids for r in self.rows]:
            # the same rows with new numbers (a run streaming): update in place, so the view keeps its selection,
            # sort and scroll position
            self.rows, self._pieces, self._values = rows, pieces, [None] * len(rows)
            if rows:
                self.dataChanged.emit(self.index(0, 0), self.index(len(rows) - 1, len(COLUMNS) - 1))
            return
        self.beginResetModel()
        self.rows, self._pieces, self._values = rows, pieces, [None] * len(rows)
        self.endResetModel()

    @staticmethod
    def _preview(row: ResponseRow, shared: int) -> list[tuple[str, int]]:
        """The row's first tokens after the shared prefix (a response that is only the prefix shows it whole)."""
        start = shared if len(row.first.tokens) > shared else 0
        tokens = row.first.tokens[start:start + PREVIEW_TOKENS]
        pieces = [(piece, shade_level("prob", t.prob, t.entropy)) for t, piece in zip(tokens, decode_pieces(tokens))]
        return ([(ELLIPSIS, None)] if start else []) + pieces

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: N802 (Qt override)
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: N802 (Qt override)
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):  # noqa: N802 (Qt override)
        if orientation == Qt.Orientation.Horizontal:
            name = COLUMNS[section]
            if role == Qt.ItemDataRole.DisplayRole:
                if name == "response" and self.shared_text.strip():
                    prefix = self.shared_text.strip()
                    prefix = prefix if len(prefix) <= 28 else ELLIPSIS + prefix[-27:]
                    return f"response after “{prefix}”"
                return HEADERS.get(name, name)
            if role == Qt.ItemDataRole.ToolTipRole:
                tip = _TIPS.get(name, name)
                if name == "response" and self.shared_text:
                    tip += f"\nEvery response starts with: {self.shared_text}"
                return tip
        return None

    def values(self, row: ResponseRow) -> dict:
        """Every column's (shown text, sort key) for a row; a missing number sorts below every present one."""
        r = row.first
        n = len(r.tokens)
        lp = r.logprob if n else None
        reward, advantage = row.mean("reward"), row.mean("advantage")
        referenced = _referenced(row)
        ratio = referenced.log_ratio if referenced is not None else None
        mean_kl = referenced.mean_kl if referenced is not None else None
        implicit = referenced.implicit_reward(self._options.beta) if referenced is not None else None
        return {
            "response": (r.text, r.text),
            "n": (f"{row.count} · {row.share:.0%}", row.count),
            "tokens": (str(n), n),
            "log π(y|x)": (format_logprob(lp), lp),
            "π(y|x)": (format_probability(lp), lp),
            "ppl": (format_perplexity(r.perplexity if n else None), r.perplexity if n else None),
            "finish": (r.finish_reason or "streaming…", r.finish_reason or ""),
            "reward": ("—" if reward is None else f"{reward:.3g}", reward),
            "advantage": ("—" if advantage is None else f"{advantage:+.3g}", advantage),
            "log π/π_ref": (format_logprob(ratio), ratio),
            "KL/token": (format_kl(mean_kl), mean_kl),
            "implicit R": (format_implicit_reward(implicit), implicit),
            "from": (row.branch or "", row.branch or ""),
        }

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        row = self.rows[index.row()]
        name = COLUMNS[index.column()]
        if role == PIECES_ROLE:
            return self._pieces[index.row()] if name == "response" else None
        if role == Qt.ItemDataRole.ToolTipRole:
            if name == "response":
                text = row.first.text
                return text if len(text) <= 600 else text[:600] + "…"
            return None
        if role in (Qt.ItemDataRole.DisplayRole, SORT_ROLE):
            values = self._values[index.row()]
            if values is None:
                values = self._values[index.row()] = self.values(row)
            shown, key = values[name]
            if role == SORT_ROLE:
                return key
            return "" if name == "response" else shown  # the delegate draws the response
        if role == Qt.ItemDataRole.TextAlignmentRole and name not in ("response", "finish", "from"):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None


def _referenced(row: ResponseRow) -> Optional[Rollout]:
    """A rollout of the row with a reference's facts (the row's rollouts drew the same tokens, so any one stands for
    them all; one finished since the reference evaluated the others may have none yet), or None."""
    return next((r for r in row.rollouts if r.log_ratio is not None), None)


class _RowFilter(QSortFilterProxyModel):
    """Sorts by each column's key (missing values last) and keeps only the rows of the filter's rollouts."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.allowed: Optional[set[str]] = None
        self.setSortRole(SORT_ROLE)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):  # noqa: N802 (Qt override)
        """The sorted column says so with an arrow in its text (the header keeps no room for a sort indicator: the
        numbers need it)."""
        text = super().headerData(section, orientation, role)
        if (role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal and text
                and section == self.sortColumn() >= 0):
            text += SORT_ARROWS[self.sortOrder() == Qt.SortOrder.DescendingOrder]
        return text

    def sort(self, column, order=Qt.SortOrder.AscendingOrder) -> None:
        before = self.sortColumn()
        super().sort(column, order)
        for section in {before, column}:
            if section >= 0:
                self.headerDataChanged.emit(Qt.Orientation.Horizontal, section, section)

    def set_allowed(self, allowed: Optional[set[str]]) -> None:
        self.beginFilterChange()
        self.allowed = allowed
        self.endFilterChange(QSortFilterProxyModel.Direction.Rows)

    def lessThan(self, left, right) -> bool:  # noqa: N802 (Qt override)
        a, b = left.data(SORT_ROLE), right.data(SORT_ROLE)
        missing_a = a is None or (isinstance(a, float) and math.isnan(a))
        missing_b = b is None or (isinstance(b, float) and math.isnan(b))
        if missing_a or missing_b:
            # always at the bottom: in a descending sort Qt swaps the arguments, so flip the answer with it
            descending = self.sortOrder() == Qt.SortOrder.DescendingOrder
            return (not missing_a and missing_b) != descending
        return a < b

    def filterAcceptsRow(self, source_row, source_parent) -> bool:  # noqa: N802 (Qt override)
        if self.allowed is None:
            return True
        row = self.sourceModel().rows[source_row]
        return any(rid in self.allowed for rid in row.ids)


class _PreviewDelegate(QStyledItemDelegate):
    """Draws a response's first tokens, each on its probability shade, like the panes."""

    def paint(self, painter, option, index) -> None:
        pieces = index.data(PIECES_ROLE)
        if pieces is None:
            super().paint(painter, option, index)
            return
        self.initStyleOption(option, index)
        style = option.widget.style() if option.widget else None
        if style is not None:
            style.drawPrimitive(QStyle.PrimitiveElement.PE_PanelItemViewItem, option, painter, option.widget)
        painter.save()
        painter.setClipRect(option.rect)
        fm = QFontMetricsF(option.font)
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        pal = option.palette
        text_colour = pal.color(QPalette.ColorRole.HighlightedText if selected else QPalette.ColorRole.Text)
        x = float(option.rect.left() + 3)
        top, height = float(option.rect.top() + 2), float(option.rect.height() - 4)
        right = float(option.rect.right() - 2)
        ellipsis_width = fm.horizontalAdvance(ELLIPSIS)
        for index, (piece, level) in enumerate(pieces):
            shown = piece.replace("\n", "\u21b5")
            width = fm.horizontalAdvance(shown)
            if not shown:
                continue
            last = index == len(pieces) - 1
            if x + width > right - (0 if last else ellipsis_width):  # elided: what does not fit ends in "…"
                painter.setPen(text_colour)
                painter.drawText(QRectF(x, top, ellipsis_width + 1, height), Qt.AlignmentFlag.AlignVCenter, ELLIPSIS)
                break
            colour = None if selected or level is None else shade_colour("prob", level, pal)
            if colour is not None:
                painter.fillRect(QRectF(x, top, width, height), colour)
            painter.setPen(text_colour)
            painter.drawText(QRectF(x, top, width + 1, height), Qt.AlignmentFlag.AlignVCenter, shown)
            x += width
        painter.restore()


class RolloutTable(QWidget):
    rollouts_selected = Signal(object)  # list of rollout ids behind the selected rows ([] when none)

    def __init__(self, options: Optional[ViewOptions] = None, parent: Optional[QWidget] = None):
        """options: the views' beta (a table on its own gets options of its own)."""
        super().__init__(parent)
        self.options = options if options is not None else ViewOptions(self)
        self.model = RolloutTableModel(self.options, self)
        self.proxy = _RowFilter(self)
        self.proxy.setSourceModel(self.model)
        self.view = QTableView()
        self.view.setModel(self.proxy)
        self.view.setSortingEnabled(True)
        self.view.sortByColumn(-1, Qt.SortOrder.AscendingOrder)  # group order until a header is clicked
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.view.setItemDelegateForColumn(0, _PreviewDelegate(self.view))
        self.view.verticalHeader().hide()
        self.view.verticalHeader().setDefaultSectionSize(int(self.fontMetrics().height() * 1.5))
        self.view.setWordWrap(False)
        header = self.view.horizontalHeader()
        # the numbers as wide as they need, the response the rest (elided): every number in sight
        for column in range(1, len(COLUMNS)):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setMinimumSectionSize(24)
        header.setStretchLastSection(False)
        header.setTextElideMode(Qt.TextElideMode.ElideNone)  # two-line headers: an elided one read "lo…ef"
        header.setSortIndicatorShown(False)  # its room in every header would push the numbers out of sight
        self.view.selectionModel().selectionChanged.connect(self._on_selection)
        self.summary = QLabel("")
        self.summary.setStyleSheet("color: palette(mid);")
        self.summary.setWordWrap(True)  # its text must not set the table's minimum width
        self.view.setMinimumWidth(RESPONSE_MIN_WIDTH)
        # the table's controls beside its summary; those for the reference columns show only with them
        self.controls = QHBoxLayout()
        self.controls.setContentsMargins(0, 0, 0, 0)
        self.controls.addWidget(self.summary, 1)
        self._reference_controls: list[QWidget] = []
        self._shown: dict[tuple, bool] = {}  # per group of optional columns: whether it shows
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addLayout(self.controls)
        layout.addWidget(self.view, 1)
        self._quiet = False
        self._update_summary()
        self._show_columns()

    def add_reference_control(self, widget: QWidget) -> None:
        """A control of the reference columns (the views' beta), beside the summary, shown only with those columns."""
        self._reference_controls.append(widget)
        self.controls.addWidget(widget)
        widget.setVisible(self.model.has_reference())

    def reference_shown(self) -> bool:
        """Whether the reference columns are shown (some row has a reference's facts)."""
        return self._shown.get(REFERENCE_COLUMNS, False)

    def _show_columns(self) -> None:
        """The optional columns show while some row has their numbers: a reference policy's, a reward's, a branch's."""
        wanted = {REFERENCE_COLUMNS: self.model.has_reference(), REWARD_COLUMNS: self.model.has_rewards(),
                  BRANCH_COLUMNS: self.model.has_branches()}
        changed = {names: shown for names, shown in wanted.items() if self._shown.get(names) != shown}
        if not changed:
            return  # hiding or showing a column re-measures every column sized to its contents: only on a change
        self._shown.update(changed)
        self.view.setUpdatesEnabled(False)  # the columns re-measure once, when drawn, not once per column
        for names, shown in changed.items():
            for name in names:
                self.view.setColumnHidden(COLUMNS.index(name), not shown)
        self.view.setUpdatesEnabled(True)
        if REFERENCE_COLUMNS in changed:
            for widget in self._reference_controls:
                widget.setVisible(changed[REFERENCE_COLUMNS])

    def visible_columns(self) -> list[str]:
        return [name for i, name in enumerate(COLUMNS) if not self.view.isColumnHidden(i)]

    # -- feeding -----------------------------------------------------------------------------------------------------
    def set_rollouts(self, rollouts: Sequence[Rollout]) -> None:
        """Show a group's rollouts (finished or streaming snapshots); the selected rollouts stay selected."""
        keep = self.selected_rollouts()
        self._quiet = True
        try:
            self.model.set_rollouts(rollouts)
            self._select_ids(keep)
        finally:
            self._quiet = False
        self._show_columns()
        if self.selected_rollouts() != keep:
            self.rollouts_selected.emit(self.selected_rollouts())
        self._update_summary()

    def set_filter(self, rollout_ids: Optional[Iterable[str]]) -> None:
        """Show only the rows of these rollouts (None shows every row)."""
        self.proxy.set_allowed(set(rollout_ids) if rollout_ids is not None else None)
        self._update_summary()

    # -- selection ---------------------------------------------------------------------------------------------------
    def selected_rows(self) -> list[ResponseRow]:
        rows = sorted({self.proxy.mapToSource(i).row() for i in self.view.selectionModel().selectedRows()})
        return [self.model.rows[r] for r in rows]

    def selected_rollouts(self) -> list[str]:
        return [rid for row in self.selected_rows() for rid in row.ids]

    def select_rollouts(self, rollout_ids: Iterable[str]) -> None:
        """Select the rows of these rollouts (emits rollouts_selected when that changes the selection)."""
        self._select_ids(list(rollout_ids))

    def _select_ids(self, ids: list[str]) -> None:
        wanted = set(ids)
        chosen = QItemSelection()
        for source_row, row in enumerate(self.model.rows):
            if wanted.intersection(row.ids):
                index = self.proxy.mapFromSource(self.model.index(source_row, 0))
                if index.isValid():
                    chosen.select(index, index)
        # one change, so one rollouts_selected, however many rows
        self.view.selectionModel().select(chosen, QItemSelectionModel.SelectionFlag.ClearAndSelect
                                          | QItemSelectionModel.SelectionFlag.Rows)

    def visible_rows(self) -> list[ResponseRow]:
        """The rows as shown: filtered and in the current sort order."""
        return [self.model.rows[self.proxy.mapToSource(self.proxy.index(i, 0)).row()]
                for i in range(self.proxy.rowCount())]

    def _on_selection(self, *_args) -> None:
        if not self._quiet:
            self.rollouts_selected.emit(self.selected_rollouts())

    def _update_summary(self) -> None:
        rows = self.model.rows
        n = sum(row.count for row in rows)
        if not rows:
            self.summary.setText("No rollouts yet: press Run. Select rows to show their rollouts as panes.")
            return
        shown = self.proxy.rowCount()
        text = f"{n} rollouts · {len(rows)} distinct responses"
        if self.proxy.allowed is not None:
            text += f" · {shown} shown: the rollouts through the box selected in the tree"
        self.summary.setText(text)
