"""The main window: wiring between the controls, the engine worker, the views, the status bar and the files.

Events from the worker are only buffered when they arrive; a ~30 Hz timer drains the buffer into the RunCollector
and the token trees and asks the views to refresh, so a burst of tokens costs one repaint, never one per token.
"""

from __future__ import annotations

import gc
import sys
import threading
import time
from typing import Callable, Optional

from PySide6.QtCore import QSettings, Qt, QTimer, Signal, Slot
from PySide6.QtWidgets import (
    QHBoxLayout,
    QMainWindow,
    QMessageBox,
    QScrollArea,
    QSplitter,
    QTabBar,
    QVBoxLayout,
    QWidget,
)

from ..core.collect import RunCollector
from ..core.models import discover_models
from ..core.types import ModelInfo
from .actions import build_menus
from .controls import ControlPanel
from .recovery import AUTOSAVE_INTERVAL_MS, RecoveryStore
from .stats_panel import StatsPanel
from .status import StatusPanel
from .window_files import WindowFilesMixin
from .window_rewards import WindowRewardsMixin
from .window_views import WindowViewsMixin
from .panes import RolloutPanes
from .scoring import ScoringPanel
from .side_plot import SidePlot
from .tree_view import TokenTreeView
from .worker import EngineHost, default_engine_factory

REFRESH_INTERVAL_MS = 33
STATUS_INTERVAL_S = 0.2
_startup_frozen = False
ErrorSink = Callable[[str, str], None]
Asker = Callable[[str, str], bool]


def _freeze_startup_objects() -> None:
    """Once, when the first window is built: take what exists by then (modules, classes, Qt and pyqtgraph objects,
    ~90k) out of the cyclic garbage collector's scans. It lives as long as the app, and a full collection going
    over it took ~45 ms on the GUI thread in the middle of a run; later collections only scan newer objects."""
    global _startup_frozen
    if not _startup_frozen:
        _startup_frozen = True
        gc.freeze()


class MainWindow(WindowViewsMixin, WindowFilesMixin, WindowRewardsMixin, QMainWindow):
    model_ready = Signal(object)  # ModelInfo, after a load succeeded
    model_load_failed = Signal(str)
    run_done = Signal(bool, bool)  # cancelled, failed: the current run (or branch) has ended and been drawn
    error_shown = Signal(str, str)  # title, message: every dialog the user was shown
    _models_found = Signal(object)  # from the discovery thread

    def __init__(self, engine_factory=default_engine_factory, settings: Optional[QSettings] = None,
                 show_error: Optional[ErrorSink] = None, ask: Optional[Asker] = None,
                 recovery_dir: Optional[str] = None, discover: Optional[Callable[[], list]] = discover_models,
                 persist: bool = True):
        """persist=False (scripted runs) neither reads nor writes the user's settings or recovery file."""
        super().__init__()
        self.setWindowTitle("Rollout Explorer")
        self.setAcceptDrops(True)
        self.settings = settings if settings is not None else QSettings()
        self.persist = persist
        self._show_error_impl = show_error or self._error_dialog
        self._ask_impl = ask or self._question_dialog
        self._discover = discover
        self.recovery = RecoveryStore(recovery_dir, enabled=persist)

        self.host = EngineHost(engine_factory)
        w = self.host  # its signals arrive on this (the GUI) thread
        w.model_loading.connect(self._on_model_loading)
        w.model_loaded.connect(self._on_model_loaded)
        w.model_failed.connect(self._on_model_failed)
        w.events.connect(self._on_events)
        w.scores_ready.connect(self._on_scores)
        w.failed.connect(self._on_failed)
        w.finished.connect(self._on_finished)

        self.model_info: Optional[ModelInfo] = None
        self.model_loading = False
        self.collector: Optional[RunCollector] = None
        self.trees: dict = {}
        self.read_only_path: Optional[str] = None
        self._run_id: Optional[int] = None  # the generate or branch run being drawn
        self._accepted: set[int] = set()  # runs whose events feed the current collector (a generate and its branches)
        self._score_requests: dict[int, tuple[RunCollector, str]] = {}
        self._pending: list = []
        self._run_failed = False
        self._closed = False
        self._dirty_since_autosave = False
        self._status_shown_at = 0.0

        self._models_found.connect(self._on_models_found)
        self._build_layout()
        self.actions = build_menus(self)
        self.status = StatusPanel(self.statusBar())
        self._init_rewards()

        self._refresh_timer = QTimer(self)
        self._refresh_timer.setInterval(REFRESH_INTERVAL_MS)
        self._refresh_timer.timeout.connect(self._tick)
        self._autosave_timer = QTimer(self)
        self._autosave_timer.setInterval(AUTOSAVE_INTERVAL_MS)
        self._autosave_timer.timeout.connect(self.autosave)

        self._splitters_restored = False
        if persist:  # a scripted run starts from the defaults and its arguments, whatever the user last used
            self.restore_settings()
        self.refresh_recent_menu()
        self._set_running(False)
        if self._discover is not None:
            QTimer.singleShot(0, self.refresh_models)
        _freeze_startup_objects()

    # -- layout ----------------------------------------------------------------------------------------------------
    def _build_layout(self) -> None:
        self.controls = ControlPanel()
        self.controls.run_requested.connect(self.run)
        self.controls.stop_requested.connect(self.stop)
        self.controls.model_chosen.connect(self.load_model)
        self.controls.reload_requested.connect(self.reload_model)
        self.controls.error.connect(self.show_error)
        side = QScrollArea()
        side.setWidgetResizable(True)
        side.setWidget(self.controls)
        side.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        side.setMinimumWidth(self.controls.minimumSizeHint().width() + 24)

        self.group_tabs = QTabBar()
        self.group_tabs.setExpanding(False)
        self.group_tabs.setDocumentMode(True)
        self.group_tabs.setElideMode(Qt.TextElideMode.ElideRight)
        self.group_tabs.currentChanged.connect(self._on_tab_changed)
        header = QHBoxLayout()
        header.setContentsMargins(4, 2, 4, 0)
        header.addWidget(self.group_tabs, 1)

        # The panes bring their own legend, shading and sort choices.
        self.panes = RolloutPanes()
        self.panes.token_clicked.connect(self._on_token_clicked)
        if hasattr(self.panes, "shading_changed"):
            self.panes.shading_changed.connect(self._on_shading_changed)
        panes_area = QWidget()
        v = QVBoxLayout(panes_area)
        v.setContentsMargins(0, 0, 0, 0)
        v.setSpacing(2)
        v.addLayout(header)
        v.addWidget(self.panes, 1)

        # The token tree (issue 4) sits under the panes in the same vertical splitter.
        self.tree_view = TokenTreeView()
        self.tree_view.token_selected.connect(self._on_tree_token)
        self.tree_view.node_selected.connect(lambda _gid, ids: self.panes.highlight_rollouts(list(ids)))
        self.tree_view.branch_requested.connect(self.request_branch)
        self.controls.k_spin.valueChanged.connect(self.tree_view.set_branch_k)
        self.tree_view.set_branch_k(self.controls.k())
        self.scoring = ScoringPanel()
        self.scoring.score_requested.connect(self.request_score)

        # Under the panes: the token tree (with its per-position plot) beside the scoring panel.
        self.bottom_splitter = QSplitter(Qt.Orientation.Horizontal)
        self.bottom_splitter.setChildrenCollapsible(False)
        tree_area = QSplitter(Qt.Orientation.Vertical)
        tree_area.addWidget(self.tree_view)
        self.side_plot = SidePlot()
        self.side_plot.follow(self.tree_view)
        tree_area.addWidget(self.side_plot)
        tree_area.setSizes([280, 170])
        self.bottom_splitter.addWidget(tree_area)
        # the selected query's statistics sit under the scoring panel, which gets the spare height
        self.stats_panel = StatsPanel()
        score_side = QWidget()
        sv = QVBoxLayout(score_side)
        sv.setContentsMargins(0, 0, 0, 0)
        sv.setSpacing(4)
        sv.addWidget(self.scoring, 1)
        sv.addWidget(self.stats_panel)
        self.bottom_splitter.addWidget(score_side)
        self.bottom_splitter.setSizes([600, 480])

        self.right_splitter = QSplitter(Qt.Orientation.Vertical)
        self.right_splitter.addWidget(panes_area)
        self.right_splitter.addWidget(self.bottom_splitter)
        self.right_splitter.setStretchFactor(0, 1)
        self.right_splitter.setStretchFactor(1, 1)
        self.right_splitter.setChildrenCollapsible(False)
        self.right_splitter.setSizes([400, 450])

        self.main_splitter = QSplitter(Qt.Orientation.Horizontal)
        self.main_splitter.addWidget(side)
        self.main_splitter.addWidget(self.right_splitter)
        self.main_splitter.setStretchFactor(0, 0)
        self.main_splitter.setStretchFactor(1, 1)
        self.main_splitter.setSizes([300, 1140])
        self.setCentralWidget(self.main_splitter)
        self.resize(1440, 900)

    def showEvent(self, event) -> None:  # noqa: N802 (Qt override)
        super().showEvent(event)
        if not self._splitters_restored and not getattr(self, "_sized", False):
            self._sized = True
            QTimer.singleShot(0, self._default_splitter_sizes)

    def _default_splitter_sizes(self) -> None:
        """First start: split the space by proportion once the real sizes are known (sizes given before the
        window is shown are not kept in proportion)."""
        h, w = max(self.right_splitter.height(), 400), max(self.bottom_splitter.width(), 600)
        self.right_splitter.setSizes([int(h * 0.46), h - int(h * 0.46)])
        if self.bottom_splitter.count() == 2:
            self.bottom_splitter.setSizes([int(w * 0.57), w - int(w * 0.57)])

    # -- dialogs ---------------------------------------------------------------------------------------------------
    def show_error(self, title: str, message: str) -> None:
        self.error_shown.emit(title, message)
        self._show_error_impl(title, message)

    def ask(self, title: str, question: str) -> bool:
        return self._ask_impl(title, question)

    def _error_dialog(self, title: str, message: str) -> None:
        QMessageBox.critical(self, title, message)

    def _question_dialog(self, title: str, question: str) -> bool:
        answer = QMessageBox.question(self, title, question)
        return answer == QMessageBox.StandardButton.Yes

    # -- models ----------------------------------------------------------------------------------------------------
    def refresh_models(self, background: bool = True) -> None:
        """List the GGUF files found on this machine in the model picker. Discovery reads file headers (and hashes
        a little of each file), which can take a while with a large cache, so it runs on a plain Python thread and
        hands its list back through a queued signal."""
        def work() -> None:
            try:
                entries = self._discover()
            except Exception as exc:  # noqa: BLE001 -- discovery never raises by contract; be safe anyway
                print(f"rollout-explorer: model discovery failed: {exc}", file=sys.stderr)
                return
            self._models_found.emit(entries)

        if background:
            threading.Thread(target=work, name="model-discovery", daemon=True).start()
        else:
            work()

    @Slot(object)
    def _on_models_found(self, entries: list) -> None:
        if self._closed:
            return
        self.controls.set_models(entries)
        if self.model_info is not None:
            self.controls.select_model_path(self.model_info.path)

    @Slot(str)
    def load_model(self, path: str) -> None:
        self.controls.select_model_path(str(path))
        self.host.stop_all()  # the worker loads after the current run has ended; end it now
        self.host.load_model(str(path), self.controls.n_gpu_layers(), self.controls.context_size())

    def reload_model(self) -> None:
        path = self.controls.current_model_path()
        if path:
            self.load_model(path)

    @Slot(str)
    def _on_model_loading(self, path: str) -> None:
        self.model_loading = True
        self.model_info = None
        self.controls.set_model_busy(True)
        self.status.set_loading(path)

    @Slot(object)
    def _on_model_loaded(self, info: ModelInfo) -> None:
        self.model_loading = False
        self.model_info = info
        self.controls.set_model_busy(False)
        self.controls.show_model_info(info)
        self.controls.select_model_path(info.path)
        self.status.end_loading()
        self.status.set_model(info)
        if self.persist:
            self.settings.setValue("last_model", info.path)
        self.model_ready.emit(info)

    @Slot(str)
    def _on_model_failed(self, message: str) -> None:
        self.model_loading = False
        self.controls.set_model_busy(False)
        self.controls.show_model_info(None)
        self.status.end_loading()
        self.status.set_model(None, "No model loaded")
        self.show_error("Cannot load the model", message)
        self.model_load_failed.emit(message)

    # -- runs ------------------------------------------------------------------------------------------------------
    def is_running(self) -> bool:
        return self._run_id is not None

    def _check_can_run(self) -> bool:
        if self.model_info is None:
            self.show_error("No model", "The model is still loading; run again when it is ready."
                            if self.model_loading else "Load a model first (pick one in the list, Open…, or drop a "
                                                       ".gguf file on the window).")
            return False
        return True

    def run(self) -> Optional[int]:
        """Start k rollouts for every query; a run already going is stopped first (its events are dropped)."""
        if not self._check_can_run():
            return None
        queries = self.controls.queries()
        if not queries:
            self.show_error("No queries", "Add at least one query to the query list.")
            return None
        params = self.controls.sampling_params()
        try:
            params.validate()
        except ValueError as exc:
            self.show_error("Invalid sampling parameters", str(exc))
            return None
        self._pending.clear()
        self.collector = RunCollector(self.model_info, params)
        self.trees = {}
        self.read_only_path = None
        self._clear_tabs()
        self._run_id = self.host.generate(queries, self.controls.k(), params, self.controls.chat(),
                                          self.controls.system_prompt())
        self._accepted = {self._run_id}
        self._begin_run()
        return self._run_id

    def request_branch(self, group_id: str, rollout_id: str, position: int, forced_token) -> Optional[int]:
        """k new rollouts continuing `rollout_id` from `position` (forcing `forced_token` there when given)."""
        if not self._check_can_run() or self.collector is None or group_id not in self.collector.group_ids:
            return None
        if self.read_only_path is not None and not self._same_model_as_collector():
            self.show_error("Different model", "This rollout set was made with another model; load that model to "
                            "branch from its rollouts.")
            return None
        self.drain()
        params = self.controls.sampling_params()
        group = self.collector.group(group_id, unfinished_reason="cancelled")
        self._run_id = self.host.branch(group, rollout_id, position, forced_token, self.controls.k(), params)
        self._accepted.add(self._run_id)
        self._begin_run()
        return self._run_id

    def _begin_run(self) -> None:
        self._run_failed = False
        self._set_streaming_views(True)
        self._set_running(True)
        self.status.start_run()
        self._refresh_timer.start()
        self._autosave_timer.start()

    def stop(self) -> None:
        if self._run_id is not None:
            self.host.stop(self._run_id)
            self.status.message("Stopping after the current decode step…")

    def _set_running(self, running: bool) -> None:
        self.controls.set_running(running)
        self.actions["stop"].setEnabled(running)

    @Slot(int, object)
    def _on_events(self, run_id: int, events: tuple) -> None:
        if run_id in self._accepted:
            self._pending.extend(events)

    def _tick(self) -> None:
        self.drain(spread=True)

    def drain(self, spread: bool = False) -> None:
        """Feed buffered events to the collector and the trees, then refresh the views once. While a run streams the
        refresh timer's ticks (spread) draw the views, a view at a time (see _refresh_views): a drain asked for
        elsewhere then (autosave, export, a branch) only feeds, instead of drawing everything in one go."""
        new_groups = False
        if self._pending and self.collector is not None:
            events, self._pending = self._pending, []
            for event in events:
                self.collector.add(event)
                new_groups |= self._feed_trees(event)
            self._dirty_since_autosave = True
            if new_groups:
                self._sync_tabs()
            self._reward_finished_groups(events)
        panes_turn = (spread or not self._views_streaming) and self._refresh_views(spread, busy=new_groups)
        # the progress bar repaints at once when its value changes: on the panes' turns, a few times a second
        now = time.monotonic()
        if self.collector is not None and self.is_running() and panes_turn and (
                not spread or now - self._status_shown_at >= STATUS_INTERVAL_S):
            self._status_shown_at = now
            self.status.update_run(self.collector.tokens_done, self.collector.total_tokens)

    @Slot(int, str)
    def _on_failed(self, run_id: int, message: str) -> None:
        request = self._score_requests.get(run_id)
        if request is not None:
            self.scoring.set_busy(False)
            self.show_error("Scoring failed", message)
        elif run_id == self._run_id:
            self._run_failed = True
            self.show_error("The run failed", message)

    @Slot(int)
    def _on_finished(self, run_id: int) -> None:
        if self._score_requests.pop(run_id, None) is not None:
            self.scoring.set_busy(False)
            return
        if run_id != self._run_id:
            return
        self._set_streaming_views(False)  # everything is drawn in full before run_done
        self.drain()
        self._run_id = None
        self._refresh_timer.stop()
        self._autosave_timer.stop()
        self._set_running(False)
        cancelled = bool(self.collector and self.collector.cancelled)
        if self.collector is not None:
            self.status.end_run(self.collector.tokens_done, self.collector.total_tokens, cancelled, self._run_failed)
            self._rewards_after_run()
        if self.collector is not None and (self._run_failed or cancelled) and self.collector.group_ids:
            self.autosave()  # an interrupted run is worth keeping until the user exports it or closes
        else:
            self.recovery.clear()
        self.run_done.emit(cancelled, self._run_failed)
