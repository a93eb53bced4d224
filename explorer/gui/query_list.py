"""The query set editor: add, remove, reorder, edit; load and save query lists in the CLI's --queries formats
(explorer.core.queries)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QHBoxLayout,
    QListWidget,
    QListWidgetItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ..core.queries import QueryFileError, read_query_file, write_query_file
from ..core.types import Query

_REFERENCE_ROLE = Qt.ItemDataRole.UserRole + 1


class QueryListEditor(QWidget):
    """A reorderable, editable list of queries with a small tool row. Emits `changed` after any edit."""

    changed = Signal()
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
        self.list.setToolTip("Double-click (or F2) to edit a query; drag to reorder.")
        self.list.model().rowsMoved.connect(lambda *_: self.changed.emit())
        self.list.itemChanged.connect(lambda *_: self.changed.emit())

        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(2)
        self.buttons = {}
        for name, text, tip, slot in (
            ("add", "+", "Add a query", self.add_new),
            ("remove", "−", "Remove the selected query", self.remove_selected),
            ("up", "↑", "Move up", lambda: self.move_selected(-1)),
            ("down", "↓", "Move down", lambda: self.move_selected(1)),
            ("load", "Load…", "Load a query list (text: one per line; JSON: strings or {query, reference})",
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

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.list, 1)
        layout.addLayout(row)

    # -- data ------------------------------------------------------------------------------------------------------
    def queries(self) -> list[Query]:
        out = []
        for i in range(self.list.count()):
            item = self.list.item(i)
            text = item.text().strip()
            if text:
                out.append(Query(text, item.data(_REFERENCE_ROLE)))
        return out

    def set_queries(self, queries: Iterable[Query | str]) -> None:
        self.list.blockSignals(True)
        self.list.clear()
        for q in queries:
            self._append(q if isinstance(q, Query) else Query(str(q)))
        self.list.blockSignals(False)
        self.changed.emit()

    def _append(self, query: Query) -> QListWidgetItem:
        item = QListWidgetItem(query.text)
        item.setFlags(item.flags() | Qt.ItemFlag.ItemIsEditable)
        item.setData(_REFERENCE_ROLE, query.reference)
        if query.reference is not None:
            item.setToolTip(f"reference: {query.reference}")
        self.list.addItem(item)
        return item

    # -- actions ---------------------------------------------------------------------------------------------------
    def add_new(self) -> None:
        item = self._append(Query("New query"))
        self.list.setCurrentItem(item)
        self.list.editItem(item)
        self.changed.emit()

    def remove_selected(self) -> None:
        row = self.list.currentRow()
        if row >= 0:
            self.list.takeItem(row)
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
        path, _ = QFileDialog.getOpenFileName(self, "Load queries", "", "Query lists (*.txt *.json);;All files (*)")
        if path:
            self.load_file(path)

    def save_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save queries", "queries.txt",
                                              "Text, one per line (*.txt);;JSON (*.json)")
        if path:
            self.save_file(path)
