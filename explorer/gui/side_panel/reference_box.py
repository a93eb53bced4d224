"""The "Reference policy" group of the side panel: which pi_ref the rollouts are compared with, and its state.

The choice is only a request: the worker builds the reference beside the loaded policy (for "exact" it writes the
float copy first, once) and evaluates the rollouts under it. What is in use is what the worker last said
(show_in_use); until the user presses Use, what the form shows is only a draft.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from PySide6.QtCore import QSignalBlocker, Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from explorer.core.errors import ExplorerError
from explorer.core.reference.policy import ReferenceSpec
from explorer.core.rl.stats import DEFAULT_TIS_CAP
from explorer.core.types import ReferenceInfo
from explorer.gui.widgets.combo import keep_texts_whole

NONE = "none"
# (label, kind, what the value field holds, a default value, tooltip)
KINDS = (
    ("No reference", NONE, "", "", "Show the policy alone"),
    ("Exact float copy", "exact", "GGUF to copy (empty: the loaded model; a server's: its GGUF here)", "",
     "A float32 copy of the loaded quantized GGUF (or of the GGUF named), written once to the app's data folder: "
     "what you see is what quantization does to the policy. With a policy on a server, name a local GGUF of the "
     "served weights"),
    ("Another GGUF", "model", "path of a .gguf file", "",
     "Another GGUF with the same vocabulary: a base vs an instruct model, another quantization of the same model. "
     "With a policy on a server: a local GGUF of the served weights (the KL over the vocabulary is then "
     "unavailable)"),
    ("Another system prompt", "system", "the reference's system prompt", "",
     "The same model conditioned on another system prompt (chat template on)"),
    ("Another temperature", "temperature", "temperature, e.g. 0.7", "0.7",
     "The same model at another temperature: the sampler is itself a transformation of the policy, "
     "softmax(logits / T)"),
    ("Under top-p", "top_p", "top-p, e.g. 0.9", "0.9",
     "The nucleus of the policy renormalised: tokens outside it have pi_ref = 0, so their KL is infinite"),
)


def pick_gguf_file(parent: QWidget) -> Optional[str]:
    path, _ = QFileDialog.getOpenFileName(parent, "Reference model", "", "GGUF models (*.gguf);;All files (*)")
    return path or None


def spec_text(kind: str, value: str) -> Optional[str]:
    """The ReferenceSpec text of a choice (None: no reference); raises ExplorerError when the value is not usable."""
    value = value.strip()
    if kind == NONE:
        return None
    if kind == "exact":
        text = "exact" if not value else f"exact:{Path(value).expanduser()}"
    elif kind == "model":
        if not value:
            raise ExplorerError("Give the path of the reference GGUF (or pick it with …).")
        text = str(Path(value).expanduser())
    else:
        if not value:
            raise ExplorerError(f"Give the reference's {dict((k, h) for _l, k, h, _d, _t in KINDS)[kind]}.")
        text = f"{kind}:{value}"
    ReferenceSpec.parse(text)  # a clear message for a bad number, here and before any model work
    return text


class ReferenceBox(QGroupBox):
    """Emits `chosen(spec text or None)` when the user presses Use; show_in_use / show_failed / show_progress tell
    it what the worker did."""

    chosen = Signal(object)
    error = Signal(str, str)  # title, message
    changed = Signal()  # the draft changed (the window saves its settings then)
    tis_cap_changed = Signal(float)  # C of the truncated importance weights in the mismatch statistics

    def __init__(self, parent: Optional[QWidget] = None,
                 pick_file: Callable[[QWidget], Optional[str]] = pick_gguf_file):
        super().__init__("Reference policy", parent)
        self.file_picker = pick_file
        # each kind keeps its own draft value: a temperature typed is not offered as a GGUF path
        self._drafts: dict[str, str] = {kind: default for _l, kind, _h, default, _t in KINDS}
        self.combo = QComboBox()
        # short labels that fit the side panel (each entry's tooltip says more); the combo never widens the panel
        self.combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.combo.setMinimumContentsLength(10)
        keep_texts_whole(self.combo)
        for label, kind, _hint, _default, tip in KINDS:
            self.combo.addItem(label, kind)
            self.combo.setItemData(self.combo.count() - 1, tip, Qt.ItemDataRole.ToolTipRole)
        self.combo.setToolTip("pi_ref, evaluated by teacher forcing on the rollouts' own tokens: per token log-ratio "
                              "log pi - log pi_ref and the exact KL(pi || pi_ref) over the whole vocabulary")
        self.combo.currentIndexChanged.connect(self._on_kind)
        self.value_edit = QLineEdit()
        self.value_edit.textChanged.connect(self._on_text)
        self.value_edit.returnPressed.connect(self.use)
        self.browse_button = QToolButton()
        self.browse_button.setText("…")
        self.browse_button.setToolTip("Pick the reference GGUF")
        self.browse_button.clicked.connect(self.pick_file)
        self.use_button = QPushButton("Use")
        self.use_button.setToolTip("Compare the rollouts shown, and those to come, with this reference")
        self.use_button.clicked.connect(self.use)
        self.cap_spin = QDoubleSpinBox()
        self.cap_spin.setRange(1.0, 1000.0)
        self.cap_spin.setDecimals(2)
        self.cap_spin.setSingleStep(0.5)
        self.cap_spin.setValue(DEFAULT_TIS_CAP)
        self.cap_spin.setToolTip("C of the truncated importance weights min(π_ref / π, C) in the mismatch "
                                 "statistics (TRL's vllm_importance_sampling_cap; 2 was its default)")
        self.cap_spin.valueChanged.connect(self.tis_cap_changed)
        self.cap_spin.valueChanged.connect(self.changed)
        self.state_label = QLabel()
        self.state_label.setWordWrap(True)
        self.state_label.setStyleSheet("color: palette(mid);")
        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        self.progress.setVisible(False)
        value_row = QHBoxLayout()
        value_row.addWidget(self.value_edit, 1)
        value_row.addWidget(self.browse_button)
        use_row = QHBoxLayout()
        use_row.addWidget(self.combo, 1)
        use_row.addWidget(self.use_button)
        layout = QVBoxLayout(self)
        cap_row = QHBoxLayout()
        cap_label = QLabel("Importance weight cap C")
        cap_label.setToolTip(self.cap_spin.toolTip())
        cap_row.addWidget(cap_label, 1)
        cap_row.addWidget(self.cap_spin)
        layout.addLayout(use_row)
        layout.addLayout(value_row)
        layout.addLayout(cap_row)
        layout.addWidget(self.progress)
        layout.addWidget(self.state_label)
        self._on_kind()
        self.show_in_use(None)

    # -- the draft -------------------------------------------------------------------------------------------------
    def kind(self) -> str:
        return self.combo.currentData()

    def set_choice(self, kind: str, value: Optional[str] = None) -> None:
        """Show this kind with this value (None: the kind's own draft, or its default)."""
        index = self.combo.findData(kind)
        if index < 0:
            raise ValueError(f"unknown reference kind {kind!r}")
        self.combo.setCurrentIndex(index)
        if value is not None:
            self.value_edit.setText(value)

    def tis_cap(self) -> float:
        return self.cap_spin.value()

    def set_spec(self, text: Optional[str]) -> None:
        """Show a ReferenceSpec text (the CLI's --reference) as the draft."""
        if not text:
            self.set_choice(NONE)
            return
        spec = ReferenceSpec.parse(text)
        self.set_choice(spec.kind, spec.value)

    def spec(self) -> Optional[str]:
        """The draft as ReferenceSpec text; raises ExplorerError when it is not usable."""
        return spec_text(self.kind(), self.value_edit.text())

    def use(self) -> bool:
        try:
            text = self.spec()
        except ExplorerError as exc:
            self.error.emit("Cannot use this reference", str(exc))
            return False
        if text is not None:
            self.state_label.setText("Preparing the reference…")
        self.chosen.emit(text)
        return True

    def pick_file(self) -> None:
        path = self.file_picker(self)
        if path:
            self.set_choice(self.kind() if self.kind() in ("model", "exact") else "model", path)

    def _on_text(self, text: str) -> None:
        self._drafts[self.kind()] = text
        self.changed.emit()

    def _on_kind(self, _index: int = 0) -> None:
        kind = self.kind()
        _label, _kind, hint, _default, _tip = KINDS[self.combo.currentIndex()]
        with QSignalBlocker(self.value_edit):
            self.value_edit.setText(self._drafts[kind])  # this kind's own draft, never the last kind's
        self.value_edit.setPlaceholderText(hint)
        self.value_edit.setVisible(kind != NONE)
        self.browse_button.setVisible(kind in ("model", "exact"))
        self.changed.emit()

    # -- what the worker did ---------------------------------------------------------------------------------------
    def show_in_use(self, info: Optional[ReferenceInfo]) -> None:
        self.progress.setVisible(False)
        self.state_label.setText(f"In use: {info.description}." if info is not None else
                                 "None in use. Pick one and press Use.")
        self.state_label.setToolTip((info.path or "") if info is not None else "")

    def show_failed(self, message: str) -> None:
        self.progress.setVisible(False)
        self.state_label.setText(f"None in use: {message}")

    def show_progress(self, what: str, done: int, total: int) -> None:
        """A step of preparing or evaluating; hidden again when done reaches total."""
        self.progress.setVisible(done < total)
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)
        self.progress.setFormat(f"{what}: %v / %m")

    # -- persistence -----------------------------------------------------------------------------------------------
    def state(self) -> dict:
        return {"kind": self.kind(), "value": self.value_edit.text(), "values": dict(self._drafts),
                "tis_cap": self.cap_spin.value()}

    def restore_state(self, state) -> None:
        """The draft comes back; nothing is used until the user presses Use (an exact copy costs a write)."""
        if not isinstance(state, dict):
            return
        values = state.get("values")
        if isinstance(values, dict):
            self._drafts.update({k: v for k, v in values.items() if k in self._drafts and isinstance(v, str)})
        cap = state.get("tis_cap")
        if isinstance(cap, (int, float)) and not isinstance(cap, bool):
            self.cap_spin.setValue(float(cap))
        if isinstance(state.get("kind"), str) and self.combo.findData(state["kind"]) >= 0:
            self.set_choice(state["kind"], state.get("value") if isinstance(state.get("value"), str) else "")
