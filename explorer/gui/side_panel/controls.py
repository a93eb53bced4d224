"""The side panel: model picker and facts, query set, prompt mode, sampling parameters, reward, reference policy,
Run / Stop."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Iterable, Optional

from PySide6.QtCore import QEvent, QObject, Qt, Signal
from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QCheckBox,
    QComboBox,
    QMenu,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from explorer.core.errors import SamplingParamsError
from explorer.core.models.discovery import ModelEntry, format_params, format_size, model_label
from explorer.core.files.queries import SEED_QUERIES
from explorer.gui.widgets.combo import keep_texts_whole
from explorer.core.types import ModelInfo, Query, SamplingParams
from explorer.gui.side_panel.query_list import QueryListEditor
from explorer.gui.side_panel.reference_box import ReferenceBox
from explorer.gui.side_panel.reward_box import RewardBox

MAX_SEED = 2**31 - 1
_PATH_ROLE = Qt.ItemDataRole.UserRole


def parse_stop_strings(text: str) -> tuple[str, ...]:
    r"""Comma-separated stop strings; '\n' and '\t' are newline and tab, '\,' a literal comma, '\\' a backslash."""
    stops, current, i = [], [], 0
    escapes = {"n": "\n", "t": "\t", ",": ",", "\\": "\\"}
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text) and text[i + 1] in escapes:
            current.append(escapes[text[i + 1]])
            i += 2
            continue
        if c == ",":
            stops.append("".join(current))
            current = []
        else:
            current.append(c)
        i += 1
    stops.append("".join(current))
    return tuple(s for s in stops if s)  # taken exactly as typed: a leading space can matter to a stop string


def format_stop_strings(stops: Iterable[str]) -> str:
    def escape(s: str) -> str:
        return s.replace("\\", "\\\\").replace(",", "\\,").replace("\n", "\\n").replace("\t", "\\t")

    return ",".join(escape(s) for s in stops)


def gpu_offload_support() -> tuple[bool, str]:
    """Whether this llama.cpp build can offload layers, and why not when it cannot."""
    try:
        import llama_cpp  # the library alone: no model, no context

        if llama_cpp.llama_supports_gpu_offload():
            return True, ""
        return False, "This llama.cpp build has no GPU offload (CPU only); rebuild with CUDA or Metal to use a GPU."
    except Exception as exc:  # noqa: BLE001 -- a missing or broken library is reported when a model loads
        return False, f"llama.cpp is not available ({type(exc).__name__})"


class CollapsibleSection(QWidget):
    """A group box under a header button that folds it away (the side panel's less used settings)."""

    def __init__(self, box: QGroupBox, expanded: bool = True, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.box = box
        self.header = QToolButton()
        self.header.setText(box.title())
        box.setTitle("")
        self.header.setCheckable(True)
        self.header.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.header.setAutoRaise(True)
        self.header.setStyleSheet("QToolButton { font-weight: bold; }")
        self.header.toggled.connect(self.set_expanded)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.header)
        layout.addWidget(box)
        self.header.setChecked(expanded)
        self.set_expanded(expanded)

    def is_expanded(self) -> bool:
        return self.header.isChecked()

    def set_expanded(self, expanded: bool) -> None:
        self.header.setChecked(expanded)
        self.header.setArrowType(Qt.ArrowType.DownArrow if expanded else Qt.ArrowType.RightArrow)
        self.box.setVisible(expanded)


class WheelGuard(QObject):
    """Spin boxes and combos take the wheel only when focused: scrolling the side panel over them scrolls the
    panel instead of silently changing a value (a scroll down over Temperature used to set it to 0)."""

    def guard(self, widget: QWidget) -> None:
        widget.setFocusPolicy(Qt.FocusPolicy.StrongFocus)  # the wheel never gives focus
        widget.installEventFilter(self)

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 (Qt override)
        if event.type() == QEvent.Type.Wheel and not obj.hasFocus():
            event.ignore()  # unhandled: Qt hands it to the parents, so the scroll area scrolls
            return True
        return False


NAME_ROLE = Qt.ItemDataRole.UserRole + 1  # a picker entry's model name, without its details


def _spin(lo: int, hi: int, value: int, tip: str, special: Optional[str] = None) -> QSpinBox:
    box = QSpinBox()
    box.setRange(lo, hi)
    box.setValue(value)
    box.setToolTip(tip)
    if special:
        box.setSpecialValueText(special)
    box.setAccelerated(True)
    return box


def _dspin(lo: float, hi: float, step: float, decimals: int, value: float, tip: str) -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setRange(lo, hi)
    box.setSingleStep(step)
    box.setDecimals(decimals)
    box.setValue(value)
    box.setToolTip(tip)
    return box


class ControlPanel(QWidget):
    model_chosen = Signal(str)  # a path picked in the list or with Open...
    reload_requested = Signal()  # same model, new GPU layers / context
    server_requested = Signal()  # "Connect to a server..." (the window asks for the URL)
    run_requested = Signal()
    stop_requested = Signal()
    error = Signal(str, str)  # title, message
    changed = Signal()  # anything kept in state() changed (the window saves its settings then)

    def __init__(self, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
        # Always in sight: the queries, k, temperature, Run and Stop. Below them, scrolling, the rest in sections
        # that fold away.
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self._build_query_box(), 1)
        sampling_box = self._build_sampling_box()
        layout.addLayout(self._build_run_row())
        self.reward_box = RewardBox()
        self.reward_box.error.connect(self.error)
        self.reference_box = ReferenceBox()
        self.reference_box.error.connect(self.error)
        sections = QWidget()
        column = QVBoxLayout(sections)
        column.setContentsMargins(0, 0, 0, 0)
        self.sections = {}
        for name, box in (("model", self._build_model_box()), ("sampling", sampling_box),
                          ("prompt", self._build_prompt_box()), ("reward", self.reward_box),
                          ("reference", self.reference_box)):
            self.sections[name] = CollapsibleSection(box)
            column.addWidget(self.sections[name])
        column.addStretch(1)
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.scroll.setWidget(sections)
        layout.addWidget(self.scroll, 2)
        for spin in self.findChildren(QAbstractSpinBox):
            spin.valueChanged.connect(self.changed)
        for edit in (self.stop_edit, self.system_edit):
            edit.textChanged.connect(self.changed)
        self.chat_check.toggled.connect(self.changed)
        self.query_editor.changed.connect(self.changed)
        self.reward_box.changed.connect(self.changed)
        self.reference_box.changed.connect(self.changed)
        self.wheel_guard = WheelGuard(self)
        for widget in self.findChildren(QAbstractSpinBox) + self.findChildren(QComboBox):
            self.wheel_guard.guard(widget)
        self.set_gpu_offload_supported(*gpu_offload_support())
        self.show_model_info(None)
        self.set_running(False)

    # -- construction ----------------------------------------------------------------------------------------------
    def _build_model_box(self) -> QGroupBox:
        box = QGroupBox("Model")
        form = QFormLayout(box)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.model_combo = QComboBox()
        self.model_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.model_combo.setMinimumContentsLength(12)
        self.model_combo.setPlaceholderText("No model")
        keep_texts_whole(self.model_combo)  # the list shows whole names (the box elides them; its tooltip too)
        self.model_combo.activated.connect(self._combo_activated)
        self.open_button = QToolButton()
        self.open_button.setText("Open…")
        self.open_button.setToolTip("Open any .gguf file (or drop one on the window)")
        self.open_button.clicked.connect(self.open_model_dialog)
        # the arrow beside Open... offers a policy on a server (vLLM, SGLang, llama-server, llama_cpp.server)
        menu = QMenu(self.open_button)
        menu.addAction("Open a .gguf file…", self.open_model_dialog)
        self.server_action = menu.addAction("Connect to a server…", self.server_requested.emit)
        self.open_button.setMenu(menu)
        self.open_button.setPopupMode(QToolButton.ToolButtonPopupMode.MenuButtonPopup)
        row = QHBoxLayout()
        row.addWidget(self.model_combo, 1)
        row.addWidget(self.open_button)
        form.addRow(row)
        self.facts = {}
        for key, label in (("architecture", "Architecture"), ("params", "Parameters"),
                           ("quantization", "Quantization"), ("context", "Context"), ("backend", "Backend"),
                           ("offload", "Offloaded"), ("logprobs", "Logprobs"), ("server", "Server")):
            value = QLabel("–")
            value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            form.addRow(label, value)
            self.facts[key] = value
        self.gpu_layers = _spin(-1, 1024, -1, "Layers to offload to the GPU (all = every layer)", "all")
        self.n_ctx = _spin(0, 1 << 20, 0, "Context size in tokens (auto = sized by the engine)", "auto")
        self.n_ctx.setSingleStep(512)
        self.reload_button = QToolButton()
        self.reload_button.setText("Reload")
        self.reload_button.setToolTip("Reload the model with these GPU layers and context size")
        self.reload_button.clicked.connect(self.reload_requested)
        form.addRow("GPU layers", self.gpu_layers)
        row = QHBoxLayout()
        row.addWidget(self.n_ctx, 1)
        row.addWidget(self.reload_button)
        form.addRow("Context size", row)
        self.exact_check = QCheckBox("Exact logprobs")
        self.exact_check.setChecked(True)
        self.exact_check.setToolTip(
            "A token's logprob is the same sampled or scored, whatever k or what shares its decode step (small "
            "decode steps are padded). Off: faster below k = 8 on K-quant models; sampled and scored logprobs may "
            "then differ, by the band measured on the model when it loads. Changing it reloads the model.")
        self.exact_check.toggled.connect(self.changed)
        self.exact_check.toggled.connect(self.reload_requested)
        form.addRow(self.exact_check)
        return box

    def _build_query_box(self) -> QGroupBox:
        box = QGroupBox("Queries")
        layout = QVBoxLayout(box)
        self.query_editor = QueryListEditor()
        self.query_editor.error.connect(self.error)
        self.query_editor.set_queries(SEED_QUERIES)
        layout.addWidget(self.query_editor)
        return box

    def _build_prompt_box(self) -> QGroupBox:
        box = QGroupBox("Prompt")
        layout = QVBoxLayout(box)
        self.chat_check = QCheckBox("Apply the model's chat template")
        self.chat_check.setChecked(True)
        self.chat_check.setToolTip("Off: raw completion, the query is the whole prompt")
        self.system_edit = QPlainTextEdit()
        self.system_edit.setPlaceholderText("System prompt (optional)")
        self.system_edit.setFixedHeight(self.fontMetrics().lineSpacing() * 3 + 12)
        self.chat_check.toggled.connect(self.system_edit.setEnabled)
        layout.addWidget(self.chat_check)
        layout.addWidget(self.system_edit)
        return box

    def _build_sampling_box(self) -> QGroupBox:
        box = QGroupBox("Sampling")
        form = QFormLayout(box)
        d = SamplingParams()
        self.k_spin = _spin(1, 64, 5, "Rollouts per query")
        self.temperature = _dspin(0.0, 5.0, 0.1, 2, d.temperature, "0 = greedy")
        self.top_k = _spin(0, 100_000, d.top_k, "Keep the k most probable tokens (0 = off)", "off")
        self.top_p = _dspin(0.01, 1.0, 0.05, 2, d.top_p, "Nucleus sampling (1 = off)")
        self.min_p = _dspin(0.0, 0.99, 0.01, 2, d.min_p, "Drop tokens below min-p x the top probability (0 = off)")
        self.repeat_penalty = _dspin(0.5, 3.0, 0.05, 2, d.repeat_penalty, "1 = off")
        self.seed = _spin(0, MAX_SEED, d.seed, "Rollout i uses seed + i")
        self.new_seed_button = QToolButton()
        self.new_seed_button.setText("New")
        self.new_seed_button.setToolTip("Pick a new random seed (Ctrl+R)")
        self.new_seed_button.clicked.connect(self.new_seed)
        seed_row = QHBoxLayout()
        seed_row.addWidget(self.seed, 1)
        seed_row.addWidget(self.new_seed_button)
        self.max_tokens = _spin(1, 32_768, d.max_tokens, "Most new tokens per rollout")
        self.stop_edit = QLineEdit()
        self.stop_edit.setPlaceholderText(r"e.g. \n\n,###")
        self.stop_edit.setToolTip(r"Comma-separated stop strings; \n is a newline, \, a comma")
        self.top_n = _spin(0, 20, d.top_n, "Top-N alternatives recorded per token")
        form.addRow("Top-k", self.top_k)
        form.addRow("Top-p", self.top_p)
        form.addRow("Min-p", self.min_p)
        form.addRow("Repeat penalty", self.repeat_penalty)
        form.addRow("Seed", seed_row)
        form.addRow("Max tokens", self.max_tokens)
        form.addRow("Stop strings", self.stop_edit)
        form.addRow("Top-N", self.top_n)
        return box

    def _build_run_row(self) -> QVBoxLayout:
        column = QVBoxLayout()
        top = QFormLayout()
        top.addRow("k rollouts", self.k_spin)
        top.addRow("Temperature", self.temperature)
        column.addLayout(top)
        row = QHBoxLayout()
        self.run_button = QPushButton("Run")
        self.run_button.setToolTip("Sample k rollouts per query (Ctrl+Enter)")
        self.run_button.setDefault(True)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop after the current decode step, keeping what was generated (Esc)")
        self.run_button.clicked.connect(self.run_requested)
        self.stop_button.clicked.connect(self.stop_requested)
        row.addWidget(self.run_button, 2)
        row.addWidget(self.stop_button, 1)
        column.addLayout(row)
        return column

    # -- model -----------------------------------------------------------------------------------------------------
    def set_models(self, entries: Iterable[ModelEntry]) -> None:
        current = self.current_model_path()
        self.model_combo.clear()
        for entry in entries:
            info = entry.info
            if info is not None:
                detail = " · ".join(x for x in (format_params(info.n_params), info.quantization or "") if x)
                tip = f"{entry.path}\n{info.architecture}, {detail}, {format_size(info.file_size)} ({entry.source})"
            else:
                detail, tip = "unusable", f"{entry.path}\n{entry.error}"
            self.model_combo.addItem(f"{entry.name}  ({detail})", str(entry.path))
            index = self.model_combo.count() - 1
            self.model_combo.setItemData(index, entry.name, NAME_ROLE)
            self.model_combo.setItemData(index, tip, Qt.ItemDataRole.ToolTipRole)
            if info is None:  # listed so the user sees why, but not selectable
                self.model_combo.model().item(index).setEnabled(False)
        if current:
            self.select_model_path(current)

    def select_model_path(self, path: str) -> None:
        """Show `path` as the current model, adding it to the list when discovery did not find it."""
        index = self.model_combo.findData(str(path))
        if index < 0:
            name = model_label(path)
            self.model_combo.addItem(name, str(path))
            index = self.model_combo.count() - 1
            self.model_combo.setItemData(index, name, NAME_ROLE)
            self.model_combo.setItemData(index, str(path), Qt.ItemDataRole.ToolTipRole)
        self.model_combo.setCurrentIndex(index)

    def model_name(self, path: str) -> str:
        """The name the picker lists this model under (the status bar shows the same)."""
        index = self.model_combo.findData(str(path))
        entry_name = self.model_combo.itemData(index, NAME_ROLE) if index >= 0 else None
        return entry_name or model_label(path)

    def current_model_path(self) -> Optional[str]:
        return self.model_combo.currentData()

    def _combo_activated(self, index: int) -> None:
        path = self.model_combo.itemData(index)
        if path:
            self.model_chosen.emit(path)

    def open_model_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open model", "", "GGUF models (*.gguf);;All files (*)")
        if path:
            self.select_model_path(path)
            self.model_chosen.emit(path)

    def show_model_info(self, info: Optional[ModelInfo], loading: bool = False) -> None:
        f = self.facts
        if info is None:
            for label in f.values():
                label.setText("loading…" if loading else "–")
            return
        f["architecture"].setText(info.architecture or "–")
        f["params"].setText(format_params(info.n_params))
        f["quantization"].setText(info.quantization or "–")
        train = f" (trained {info.n_ctx_train:,})" if info.n_ctx_train else ""
        f["context"].setText(f"{info.n_ctx:,}{train}" if info.n_ctx else "–")
        f["backend"].setText(info.backend or "CPU")
        f["backend"].setToolTip(info.system_info or "")
        f["logprobs"].setText(_exactness_fact(info))
        f["logprobs"].setToolTip(info.exactness() or "")
        f["server"].setText(_server_facts(info))
        f["server"].setToolTip(info.server_facts or "")  # everything the capability probe found
        if info.n_layers:
            f["offload"].setText(f"{min(info.n_gpu_layers, info.n_layers)} of {info.n_layers} layers")
        else:
            f["offload"].setText(f"{info.n_gpu_layers} layers")
        if info.n_layers:
            self.gpu_layers.setMaximum(info.n_layers)
        self.set_gpu_offload_supported(info.gpu_offload, "" if info.gpu_offload else
                                       "This llama.cpp build has no GPU offload (CPU only); rebuild with CUDA or "
                                       "Metal to use a GPU.")

    def set_gpu_offload_supported(self, supported: bool, reason: str = "") -> None:
        self.gpu_layers.setEnabled(supported)
        self.gpu_layers.setToolTip("Layers to offload to the GPU (all = every layer)" if supported else reason)

    def n_gpu_layers(self) -> Optional[int]:
        """None (the engine's default) when the build cannot offload; -1 means all layers."""
        return self.gpu_layers.value() if self.gpu_layers.isEnabled() else None

    def set_exact(self, exact: bool) -> None:
        """Set the checkbox without asking for a reload (restored settings, the command line: the model loads after)."""
        self.exact_check.blockSignals(True)
        self.exact_check.setChecked(exact)
        self.exact_check.blockSignals(False)

    def exact(self) -> bool:
        """Whether a local model is to be decoded batch-invariantly (the engine's exact decoding)."""
        return self.exact_check.isChecked()

    def context_size(self) -> Optional[int]:
        return self.n_ctx.value() or None

    def set_model_busy(self, busy: bool) -> None:
        for w in (self.model_combo, self.open_button, self.reload_button):
            w.setEnabled(not busy)
        if busy:
            self.show_model_info(None, loading=True)

    # -- queries and prompt ----------------------------------------------------------------------------------------
    def queries(self) -> list[Query]:
        return self.query_editor.queries()

    def set_queries(self, queries: Iterable[Query | str]) -> None:
        self.query_editor.set_queries(queries)

    def chat(self) -> bool:
        return self.chat_check.isChecked()

    def system_prompt(self) -> Optional[str]:
        text = self.system_edit.toPlainText().strip()
        return text if text and self.chat() else None

    # -- sampling --------------------------------------------------------------------------------------------------
    def k(self) -> int:
        return self.k_spin.value()

    def sampling_params(self) -> SamplingParams:
        return SamplingParams(
            temperature=round(self.temperature.value(), 4), top_k=self.top_k.value(),
            top_p=round(self.top_p.value(), 4), min_p=round(self.min_p.value(), 4),
            repeat_penalty=round(self.repeat_penalty.value(), 4), max_tokens=self.max_tokens.value(),
            seed=self.seed.value(), top_n=self.top_n.value(), stop=parse_stop_strings(self.stop_edit.text()),
        )

    def set_sampling_params(self, p: SamplingParams) -> None:
        self.temperature.setValue(p.temperature)
        self.top_k.setValue(p.top_k)
        self.top_p.setValue(p.top_p)
        self.min_p.setValue(p.min_p)
        self.repeat_penalty.setValue(p.repeat_penalty)
        self.max_tokens.setValue(p.max_tokens)
        self.seed.setValue(p.seed)
        self.top_n.setValue(p.top_n)
        self.stop_edit.setText(format_stop_strings(p.stop))

    def new_seed(self) -> int:
        self.seed.setValue(random.randrange(MAX_SEED - 64))  # leave room for seed + i
        return self.seed.value()

    def set_running(self, running: bool) -> None:
        self.stop_button.setEnabled(running)

    # -- persistence -----------------------------------------------------------------------------------------------
    def state(self) -> dict:
        p = self.sampling_params()
        return {
            "k": self.k(), "chat": self.chat(), "system": self.system_edit.toPlainText(),
            "gpu_layers": self.gpu_layers.value(), "n_ctx": self.n_ctx.value(), "exact": self.exact(),
            "sampling": {"temperature": p.temperature, "top_k": p.top_k, "top_p": p.top_p, "min_p": p.min_p,
                         "repeat_penalty": p.repeat_penalty, "max_tokens": p.max_tokens, "seed": p.seed,
                         "top_n": p.top_n, "stop": list(p.stop)},
            "queries": [{"query": q.text, "reference": q.reference_answer} for q in self.queries()],
            "reward": self.reward_box.state(),
            "reference": self.reference_box.state(),
        }

    def restore_state(self, state: dict) -> None:
        """Apply what state() saved; values that are missing or no longer valid keep their defaults."""
        if not isinstance(state, dict):
            return
        try:
            sampling = state.get("sampling") or {}
            fields = {k: v for k, v in sampling.items() if k in SamplingParams.__dataclass_fields__}
            fields["stop"] = tuple(fields.get("stop") or ())
            params = SamplingParams(**fields)
            params.validate()
            self.set_sampling_params(params)
        except (TypeError, SamplingParamsError):  # a settings file from another version: the defaults stay
            pass
        for key, widget in (("k", self.k_spin), ("gpu_layers", self.gpu_layers), ("n_ctx", self.n_ctx)):
            if isinstance(state.get(key), int):
                widget.setValue(state[key])
        if isinstance(state.get("chat"), bool):
            self.chat_check.setChecked(state["chat"])
        if isinstance(state.get("exact"), bool):
            self.set_exact(state["exact"])
        if isinstance(state.get("system"), str):
            self.system_edit.setPlainText(state["system"])
        queries = state.get("queries")
        if isinstance(queries, list):
            parsed = [Query(q["query"], q.get("reference")) for q in queries
                      if isinstance(q, dict) and isinstance(q.get("query"), str)]
            self.set_queries(parsed)
        self.reward_box.restore_state(state.get("reward"))
        self.reference_box.restore_state(state.get("reference"))


def _exactness_fact(info: ModelInfo) -> str:
    """The model facts' line on how sampled and scored logprobs agree (ModelInfo.exactness says it in full)."""
    if info.exact is None:
        return "as the server batches" if info.server_kind else "–"
    if info.exact:
        return "exact on CPU; GPU unverified" if info.gpu_offload else "exact: sampled = scored"
    if info.logprob_band is None:
        return "not exact"
    return f"not exact: up to {info.logprob_band:.2g} nats apart" if info.logprob_band else \
        "not exact (none on the probe)"


def _server_facts(info: ModelInfo) -> str:
    """Which server, and what its numbers are, for a policy on a server (the whole probe is the tooltip); '–' for a
    local model."""
    if not info.server_kind:
        return "–"
    entropy = "unknown (top N)" if info.entropy_kind == "unavailable" else info.entropy_kind
    return f"{info.server_kind} {info.server_version or ''}\nlogprobs {info.logprob_kind}\nentropy {entropy}"
