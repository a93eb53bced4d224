"""Drop-downs whose texts are never cut: the list opens as wide as its longest entry, whatever the box's width."""

from __future__ import annotations

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QComboBox, QStyle, QStyleOptionComboBox

POPUP_MARGIN = 28  # px beside the longest entry: the list's frame, its scroll bar and some air


def text_room(combo: QComboBox) -> int:
    """How wide the closed box's text may be, in pixels."""
    option = QStyleOptionComboBox()
    combo.initStyleOption(option)
    return combo.style().subControlRect(QStyle.ComplexControl.CC_ComboBox, option,
                                        QStyle.SubControl.SC_ComboBoxEditField, combo).width()


def fits(combo: QComboBox, text: str) -> bool:
    return combo.fontMetrics().horizontalAdvance(text) <= text_room(combo)


class _PopupWidth(QObject):
    def __init__(self, combo: QComboBox):
        super().__init__(combo)
        self._combo = combo
        model = combo.model()
        for signal in (model.rowsInserted, model.rowsRemoved, model.modelReset, model.dataChanged):
            signal.connect(self.update)
        combo.currentIndexChanged.connect(self.update)
        self.update()

    def update(self, *_args) -> None:
        combo = self._combo
        metrics = combo.view().fontMetrics()
        widest = max((metrics.horizontalAdvance(combo.itemText(i)) for i in range(combo.count())), default=0)
        combo.view().setMinimumWidth(widest + POPUP_MARGIN)


def keep_texts_whole(combo: QComboBox) -> QComboBox:
    """The list opens wide enough for every entry, whatever the box's width."""
    _PopupWidth(combo)
    return combo
