"""The query set editor: add, remove, reorder, edit; load and save query lists in the CLI's --queries formats
(explorer.core.files.queries)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Iterable, Optional

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction, QGuiApplication, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QStyledItemDelegate,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from explorer.core.files.queries import QueryFileError, read_query_file, write_query_file
from explorer.core.types import Query

_ANSWER_ROLE = Qt.ItemDataRole.UserRole + 1
_ROW_ROLE = Qt.ItemDataRole.UserRole + 2  # the Query as loaded: a dataset row's conversation and columns ride along


def _edited(loaded: Optional[Query], text: str, reference: Optional[str]) -> Query:
    """The query an item holds now: its loaded row with the text and reference answer as edited (an edited text
    becomes the conversation's last user message)."""
    if loaded is None:
        return Query(text, reference)
    messages = loaded.messages
    if messages and text != loaded.text:
        last = max(i for i, (role, _) in enumerate(messages) if role == "user")
        messages = messages[:last] + (("user", text),) + messages[last + 1:]
    return replace(loaded, text=text, reference_answer=reference, messages=messages)


def query_lines(text: str) -> list[str]:
    """The non-blank lines of a text, each stripped: one query each."""
    return [line.strip() for line in text.splitlines() if line.strip()]


class _ReferenceDelegate(QStyledItemDelegate):
    """Shows a query's reference after it ("query  ⇒ reference"); editing still edits the query text only."""

    def initStyleOption(self, option, index) -> None:  # noqa: N802 (Qt override)
        super().initStyleOption(option, index)
        reference = index.data(_ANSWER_ROLE)
        if reference:
            option.text = f"{option.text}  ⇒ {reference}"


class QueryListEditor(QWidget):
    """A reorderable, editable list of queries with a small tool row. Emits `changed` after any edit."""

    changed = Signal()
    reference_answer_changed = Signal(str, object)  # query text, its reference answer (None: none), as the user edits it
    error = Signal(str, str)  # title, message: the window shows it

    def __init__(self, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.list = QListWidget()
        self.list.setDragDropMode(QAbstractItemView.DragDropMode.InternalMove)
        self.list.setDefaultDropAction(Qt.DropAction.MoveAction)
        self.list.setEditTriggers(QAbstractItemView.EditTrigger.DoubleClicked
                                  | QAbstractItemView.EditTrigger.EditKeyPressed)
        self.list.setWordWrap(True)
        self.list.setAlternatingRowColors(True)
        self.list.setItemDelegate(_ReferenceDelegate(self.list))
        self.list.setToolTip("Double-click (or F2) to edit a query; drag to reorder.")
        self.list.model().rowsMoved.connect(lambda *_: self.changed.emit())
        self.list.itemChanged.connect(lambda *_: self.changed.emit())
        self.list.itemChanged.connect(self._offer_split)
        # Ctrl+V on the list (not while editing a query): one query per line of the clipboard
        self.paste_action = QAction("Paste queries, one per line", self.list)
        self.paste_action.setShortcut(QKeySequence(QKeySequence.StandardKey.Paste))
        self.paste_action.setShortcutContext(Qt.ShortcutContext.WidgetShortcut)
        self.paste_action.triggered.connect(lambda: self.paste_lines(QGuiApplication.clipboard().text()))
        self.list.addAction(self.paste_action)
        self.list.setContextMenuPolicy(Qt.ContextMenuPolicy.ActionsContextMenu)

        # a query edited (or pasted) into several lines: offered as one query per line, kept as one if the user says so
        self.split_offer = QFrame()
        self.split_offer.setFrameShape(QFrame.Shape.StyledPanel)
        offer = QHBoxLayout(self.split_offer)
        offer.setContentsMargins(4, 2, 4, 2)
        self.split_label = QLabel()
        self.split_label.setWordWrap(True)
        self.split_button = QPushButton("Split")
        self.split_button.setToolTip("Make each line of this query a query of its own")
        self.keep_button = QPushButton("Keep as one")
        self.split_button.clicked.connect(self.split_offered)
        self.keep_button.clicked.connect(lambda: self._set_split_item(None))
        offer.addWidget(self.split_label, 1)
        offer.addWidget(self.split_button)
        offer.addWidget(self.keep_button)
        self._split_item: Optional[QListWidgetItem] = None

        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(2)
        self.buttons = {}
        for name, text, tip, slot in (
            ("add", "+", "Add a query", self.add_new),
            ("remove", "−", "Remove the selected query", self.remove_selected),
            ("up", "↑", "Move up", lambda: self.move_selected(-1)),
            ("down", "↓", "Move down", lambda: self.move_selected(1)),
            ("load", "Load…", "Load a query list or a dataset (text: one per line; JSON: strings or rows; JSONL; Parquet)",
             self.load_dialog),
            ("save", "Save…", "Save the query list", self.save_dialog),
        ):
            button = QToolButton()
            button.setText(text)
            button.setToolTip(tip)
            button.clicked.connect(slot)
            row.addWidget(button)
            self.buttons[name] = button
        row.addStretch(1)

        # The selected query's reference answer: what the exact / contains / regex rewards compare against.
        self.answer_edit = QLineEdit()
        self.answer_edit.setPlaceholderText("Reference answer (optional, for rewards)")
        self.answer_edit.setToolTip("The selected query's expected answer: the exact, contains and regex rewards "
                                       "compare each rollout with it (regex: it is the pattern)")
        self.answer_edit.setClearButtonEnabled(True)
        self.answer_edit.textEdited.connect(self._answer_edited)
        self.list.currentItemChanged.connect(lambda item, _prev: self._show_answer(item))

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.list, 1)
        layout.addWidget(self.split_offer)
        reference_row = QHBoxLayout()
        reference_row.setContentsMargins(0, 0, 0, 0)
        label = QLabel("Reference")
        label.setBuddy(self.answer_edit)
        label.setToolTip(self.answer_edit.toolTip())
        reference_row.addWidget(label)
        reference_row.addWidget(self.answer_edit, 1)
        layout.addLayout(reference_row)
        layout.addLayout(row)
        self._show_answer(None)
        self._set_split_item(None)

    # -- data ------------------------------------------------------------------------------------------------------
    def queries(self) -> list[Query]:
        out = []
        for i in range(self.list.count()):
            item = self.list.item(i)
            text = item.text().strip()
            if text:
                out.append(_edited(item.data(_ROW_ROLE), text, item.data(_ANSWER_ROLE)))
        return out

    def set_queries(self, queries: Iterable[Query | str]) -> None:
        self._set_split_item(None)
        self.list.blockSignals(True)
        self.list.clear()
        for q in queries:
            self._append(q if isinstance(q, Query) else Query(str(q)))
        self.list.blockSignals(False)
        if self.list.count():
            self.list.setCurrentRow(0)  # the reference field shows the first query's reference
        self._show_answer(self.list.currentItem())
        self.changed.emit()

    def _append(self, query: Query) -> QListWidgetItem:
        item = self._item(query)
        self.list.addItem(item)
        return item

    def _item(self, query: Query) -> QListWidgetItem:
        item = QListWidgetItem(query.text)
        item.setFlags(item.flags() | Qt.ItemFlag.ItemIsEditable)
        if query.messages or query.columns:
            item.setData(_ROW_ROLE, query)
        self._set_answer(item, query.reference_answer)
        return item

    @staticmethod
    def _set_answer(item: QListWidgetItem, reference: Optional[str]) -> None:
        item.setData(_ANSWER_ROLE, reference)
        item.setToolTip(f"reference: {reference}" if reference is not None else "")

    def set_reference_answer(self, row: int, reference: Optional[str]) -> None:
        """Set (None or '': clear) the reference answer of the query at `row`."""
        item = self.list.item(row)
        if item is None:
            raise IndexError(f"no query at row {row}")
        self._set_answer(item, reference or None)
        if item is self.list.currentItem():
            self._show_answer(item)
        self.changed.emit()

    def _show_answer(self, item: Optional[QListWidgetItem]) -> None:
        self.answer_edit.setEnabled(item is not None)
        self.answer_edit.setPlaceholderText("Reference answer (optional, for rewards)" if item is not None
                                               else "Select a query to give it a reference answer")
        reference = item.data(_ANSWER_ROLE) if item is not None else None
        if self.answer_edit.text() != (reference or ""):
            self.answer_edit.setText(reference or "")

    def _answer_edited(self, text: str) -> None:
        item = self.list.currentItem()
        if item is not None:
            reference = text if text.strip() else None
            self._set_answer(item, reference)
            self.changed.emit()
            self.reference_answer_changed.emit(item.text().strip(), reference)

    # -- actions ---------------------------------------------------------------------------------------------------
    def add_new(self) -> None:
        item = self._append(Query("New query"))
        self.list.setCurrentItem(item)
        self.list.editItem(item)
        self.changed.emit()

    def remove_selected(self) -> None:
        row = self.list.currentRow()
        if row >= 0:
            if self.list.item(row) is self._split_item:
                self._set_split_item(None)
            self.list.takeItem(row)
            self.changed.emit()

    def paste_lines(self, text: str) -> int:
        """Each non-blank line of `text` a new query, after the selected one (at the end when none is); the first of
        them is selected. Returns how many were added."""
        lines = query_lines(text)
        row = self.list.currentRow() + 1 if self.list.currentRow() >= 0 else self.list.count()
        self.list.blockSignals(True)
        for offset, line in enumerate(lines):
            self.list.insertItem(row + offset, self._item(Query(line)))
        self.list.blockSignals(False)
        if lines:
            self.list.setCurrentRow(row)
            self.changed.emit()
        return len(lines)

    def _offer_split(self, item: QListWidgetItem) -> None:
        if len(query_lines(item.text())) > 1:
            self._set_split_item(item)
        elif item is self._split_item:
            self._set_split_item(None)

    def _set_split_item(self, item: Optional[QListWidgetItem]) -> None:
        self._split_item = item
        if item is not None:
            n = len(query_lines(item.text()))
            self.split_label.setText(f"This query has {n} lines.")
            self.split_button.setText(f"Split into {n} queries")
        self.split_offer.setVisible(item is not None)

    def split_offered(self) -> None:
        """The query offered for splitting becomes one query per line (its reference answer stays with the first)."""
        item = self._split_item
        self._set_split_item(None)
        row = self.list.row(item) if item is not None else -1
        if row < 0:
            return
        first, *rest = query_lines(item.text())
        self.list.blockSignals(True)
        item.setText(first)
        for offset, line in enumerate(rest, start=1):
            self.list.insertItem(row + offset, self._item(Query(line)))
        self.list.blockSignals(False)
        self.list.setCurrentRow(row)
        self.changed.emit()

    def move_selected(self, delta: int) -> None:
        row = self.list.currentRow()
        target = row + delta
        if row < 0 or not 0 <= target < self.list.count():
            return
        item = self.list.takeItem(row)
        self.list.insertItem(target, item)
        self.list.setCurrentRow(target)
        self.changed.emit()

    def load_file(self, path: str | Path) -> bool:
        try:
            self.set_queries(read_query_file(path))
        except QueryFileError as exc:
            self.error.emit("Cannot load the query list", str(exc))
            return False
        return True

    def save_file(self, path: str | Path) -> bool:
        try:
            write_query_file(path, self.queries())
        except QueryFileError as exc:
            self.error.emit("Cannot save the query list", str(exc))
            return False
        return True

    def load_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load queries", "", "Query lists and datasets (*.txt *.json *.jsonl *.parquet);;All files (*)")
        if path:
            self.load_file(path)

    def save_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save queries", "queries.txt",
                                              "Text, one per line (*.txt);;JSON (*.json)")
        if path:
            self.save_file(path)
