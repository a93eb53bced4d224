"""The main window: it builds its parts, wires them together and closes them.

The parts each own their state: the RunController (engine host, the Session shown, the run drawn, pending events,
the drain timer), the ViewsPanel (tabs, panes, tree, side plot, scoring, statistics), FileActions (open, export,
recent files, autosave, recovery), WindowSettings, the StatusPanel and the RewardStatus. The window keeps only what
is about the window itself: the model loaded, the dialogs, and the error log.
"""

from __future__ import annotations

import gc
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Optional

from PySide6.QtCore import QSettings, QStandardPaths, Qt, QTimer, Signal, Slot
from PySide6.QtWidgets import QInputDialog, QMainWindow, QMessageBox

from explorer.core.errors import SamplingParamsError
from explorer.core.models.discovery import discover_models
from explorer.core.remote.servers import API_KEY_ENV, display_url, parse_server_spec, server_spec
from explorer.core.session import Session
from explorer.core.types import ModelInfo, RolloutSet
from explorer.gui.window.actions import build_menus
from explorer.gui.side_panel.controls import ControlPanel
from explorer.gui.window.file_actions import FileActions, dropped_path
from explorer.gui.window.panel_layout import PanelLayout
from explorer.gui.window.reward_status import RewardStatus
from explorer.gui.run.run_controller import RunController
from explorer.gui.window.status import StatusPanel
from explorer.gui.views.panel import ViewsPanel
from explorer.gui.window.window_settings import WindowSettings
from explorer.gui.run.worker import Failure, default_engine_factory, keep_until_finished

STATUS_INTERVAL_S = 0.2
REFERENCE_DELAY_MS = 300
UNRUN = "(no run)"  # the scoring panel's group while no run is shown: the query selected in the list
MESSAGE_MS = 20000  # a failure message stays long enough to be read
ERROR_LOG = "errors.log"
SERVER_URL_KEY = "server/url"  # the last server connected to (no credentials), offered again
GC_INTERVAL_S = 0.25  # how often the GUI thread collects garbage (the generation thresholds decide how much)
ErrorSink = Callable[[str, str], None]
Asker = Callable[[str, str], bool]


_gui_collector = None  # pyqtgraph's GarbageCollector, once the first window is built


def collect_garbage_on_the_gui_thread() -> None:
    """Once, when the first window is built (the tests call it too):

    - the cyclic garbage collector runs only on this, the GUI thread, from a timer (pyqtgraph's GarbageCollector).
      Left automatic, it runs on whichever thread allocates: the engine worker then freed a closed widget's Qt
      objects, QObject's destructor took Qt's connection lock and waited for the GIL, while the GUI thread held the
      GIL and waited for that lock in its own QObject destructor (a deadlock, seen in the window tests);
    - what exists by then (modules, classes, Qt and pyqtgraph objects, ~90k) leaves the collector's scans: it lives
      as long as the app, and a full collection going over it took ~45 ms on the GUI thread in the middle of a run."""
    global _gui_collector
    if _gui_collector is None:
        from pyqtgraph.util.garbage_collector import GarbageCollector

        gc.freeze()
        _gui_collector = GarbageCollector(interval=GC_INTERVAL_S)


def error_log_path() -> Path:
    return Path(QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)) / ERROR_LOG


def log_traceback(title: str, trace: str, log_dir: Optional[Path] = None) -> None:
    """A bug's traceback goes to stderr and to the error log in the app's data folder (best effort)."""
    text = f"rollout-explorer: {title}\n{trace.rstrip()}\n"
    sys.stderr.write(text)
    path = (log_dir / ERROR_LOG) if log_dir is not None else error_log_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {text}")
    except OSError as exc:
        sys.stderr.write(f"rollout-explorer: cannot write {path}: {exc}\n")


class MainWindow(QMainWindow):
    model_ready = Signal(object)  # ModelInfo, after a load succeeded
    model_load_failed = Signal(str)
    run_done = Signal(bool, bool)  # cancelled, failed: the current run (or branch) has ended and been drawn
    error_shown = Signal(str, str)  # title, message: every dialog the user was shown
    reference_evaluated = Signal()  # an evaluation under the reference policy ended and is shown
    _models_found = Signal(object)  # from the discovery thread

    def __init__(self, engine_factory=default_engine_factory, settings: Optional[QSettings] = None,
                 show_error: Optional[ErrorSink] = None, ask: Optional[Asker] = None,
                 recovery_dir: Optional[str] = None, discover: Optional[Callable[[], list]] = discover_models,
                 persist: bool = True, ask_text: Optional[Callable[[str, str, str], Optional[str]]] = None):
        """persist=False (scripted runs) neither reads nor writes the user's settings or recovery file."""
        super().__init__()
        self.setWindowTitle("Rollout Explorer")
        self.setAcceptDrops(True)
        self.settings = settings if settings is not None else QSettings()
        self.persist = persist
        self._show_error_impl = show_error or self._error_dialog
        self._ask_impl = ask or self._question_dialog
        self._ask_text_impl = ask_text or self._text_dialog  # the server URL
        self._discover = discover
        self._log_dir = Path(recovery_dir) if recovery_dir is not None else None
        self.model_info: Optional[ModelInfo] = None
        self.model_loading = False
        self._closed = False
        self._status_shown_at = 0.0
        self._answer_timer = QTimer(self)  # typing a reference answer rewards once the typing pauses
        self._answer_timer.setSingleShot(True)
        self._answer_timer.setInterval(REFERENCE_DELAY_MS)

        self.runs = RunController(engine_factory, self)
        self.files = FileActions(self, self.settings, self, recovery_dir, persist)
        self.window_settings = WindowSettings(self, self.settings, persist)
        self.controls = ControlPanel()
        self.views = ViewsPanel(self.is_running, self.controls.k, self)
        self.panels = self._build_layout()
        self.menu_actions = build_menus(self)
        self.status = StatusPanel(self.statusBar())
        self.reward_status = RewardStatus("")
        self.statusBar().insertPermanentWidget(0, self.reward_status)
        self._wire()

        if persist:  # a scripted run starts from the defaults and its arguments, whatever the user last used
            self.window_settings.restore()
        self.panels.show_for(self.controls.k())
        self.window_settings.watch()
        self.files.refresh_recent_menu()
        self._set_running(False)
        self._update_reward_status()
        self._offer_scoring_without_run()
        if self._discover is not None:
            QTimer.singleShot(0, self.refresh_models)
        collect_garbage_on_the_gui_thread()

    # -- construction ----------------------------------------------------------------------------------------------
    def _build_layout(self) -> PanelLayout:
        # the side panel scrolls its own folding sections; the queries, k, temperature and Run stay in sight
        self.controls.setMinimumWidth(self.controls.sections["sampling"].minimumSizeHint().width() + 36)
        panels = PanelLayout(self, {**self.views.parts(), "controls": self.controls}, self.views.group_tabs)
        self.resize(1440, 900)
        return panels

    def _wire(self) -> None:
        host = self.runs.host  # its signals arrive on this (the GUI) thread
        host.model_loading.connect(self._on_model_loading)
        host.model_loaded.connect(self._on_model_loaded)
        host.model_failed.connect(self._on_model_failed)
        self.runs.session_replaced.connect(self._on_session_replaced)
        self.runs.ticked.connect(lambda: self.drain(spread=True))
        self.runs.run_ended.connect(self._on_run_ended)
        self.runs.fed.connect(self.files.record)
        self.runs.run_failed.connect(lambda failure: self.report_failure("The run failed", failure))
        self.runs.scores_arrived.connect(self.views.show_scores)
        self.runs.scores_arrived.connect(lambda _gid: self.evaluate_reference())
        reference = self.runs.reference_policy
        self.runs.score_failed.connect(lambda failure: self.report_failure("Scoring failed", failure))
        self.runs.score_done.connect(lambda: self.views.scoring.set_busy(False))
        self.controls.run_requested.connect(self.run)
        self.controls.stop_requested.connect(self.stop)
        self.controls.model_chosen.connect(self.load_model)
        self.controls.reload_requested.connect(self.reload_model)
        self.controls.server_requested.connect(self.connect_server)
        self.controls.error.connect(self.show_error)
        self.controls.reward_box.changed.connect(self.reapply_rewards)
        self.controls.query_editor.reference_answer_changed.connect(self._on_reference_answer_changed)
        self.controls.reference_box.chosen.connect(self.choose_reference_policy)
        host.reference_policy_progress.connect(self.controls.reference_box.show_progress)
        reference.changed.connect(self._on_reference_policy_changed)
        reference.failed.connect(self._on_reference_policy_failed)
        reference.evaluation_failed.connect(
            lambda failure: self.report_failure("Comparing with the reference policy failed", failure))
        reference.facts_changed.connect(self._on_reference_facts_changed)
        reference.evaluating.connect(lambda description: self.status.message(f"Comparing with {description}…"))
        reference.other_model.connect(lambda model: self.status.message(
            f"This set was made with {self.model_name(model)}: load that model to compare it with the reference",
            MESSAGE_MS))
        reference.evaluation_done.connect(self._on_evaluation_done)
        self.controls.reference_box.tis_cap_changed.connect(self._on_tis_cap_changed)
        self._answer_timer.timeout.connect(self._reward_new_answers)
        self.views.tree_view.branch_requested.connect(self.request_branch)
        self.views.panes.branch_requested.connect(  # a token's menu in a pane
            lambda rid, position, forced: self.request_branch(self.views.panes.group_id, rid, position, forced))
        self.views.scoring.score_requested.connect(self.request_score)
        self.views.group_changed.connect(self._on_group_changed)
        self.controls.query_editor.list.currentRowChanged.connect(lambda _row: self._offer_scoring_without_run())
        self.runs.group_added.connect(self._on_group_added)
        self._models_found.connect(self._on_models_found)

    def showEvent(self, event) -> None:  # noqa: N802 (Qt override)
        super().showEvent(event)
        self.panels.window_shown()

    # -- what the parts ask the window -----------------------------------------------------------------------------
    @property
    def session(self) -> Optional[Session]:
        return self.runs.session

    def is_running(self) -> bool:
        return self.runs.is_running()

    def _on_session_replaced(self) -> None:
        """A new run's session or an opened set: its mismatch statistics use the cap chosen here."""
        session = self.runs.session
        if session is not None:
            session.set_tis_cap(self.controls.reference_box.tis_cap())
        self.views.show_session(session)

    def fed_session(self) -> Optional[Session]:
        """The session shown, with every event received so far fed to it."""
        self.drain()
        return self.session

    def loaded_model(self) -> Optional[ModelInfo]:
        return self.model_info

    def message(self, text: str) -> None:
        self.status.message(text)

    def model_name(self, model: ModelInfo) -> str:
        """A model's one name in the window: the one the model picker lists it under (its file's name), whichever
        name its GGUF gives itself (that one is in the status bar's tooltip)."""
        return self.controls.model_name(model.path) if model.path else model.name

    # -- dialogs and errors ----------------------------------------------------------------------------------------
    def show_error(self, title: str, message: str) -> None:
        self.error_shown.emit(title, message)
        self._show_error_impl(title, message)

    def report_failure(self, title: str, failure: Failure, note: str = "") -> None:
        """A failure from the worker: the message for the user; a bug's traceback to stderr and the error log."""
        if not failure.user_error:
            log_traceback(title, failure.traceback, self._log_dir)
        self.show_error(title, str(failure) + note)

    def report_bug(self, title: str, message: str, exc: BaseException) -> None:
        self.report_failure(title, Failure(type(exc).__name__, message, Failure.of(exc).traceback, False))

    def ask(self, title: str, question: str) -> bool:
        return self._ask_impl(title, question)

    def may_discard(self, action: str) -> bool:
        """Before the session is replaced or the window closes: rollouts made here and not exported are only lost
        when the user says so."""
        session = self.session
        if session is None or not session.has_unexported():
            return True
        n = len(session.unexported_rollouts())
        return self.ask("Discard the rollouts not exported?",
                        f"{n} rollouts made in this session are not in any file yet. {action} and discard them? "
                        "(No keeps them: export them with File > Export first.)")

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
            except Exception as exc:  # noqa: BLE001 -- discovery never raises by contract; log a bug anyway
                log_traceback(f"model discovery failed: {exc}", Failure.of(exc).traceback, self._log_dir)
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
        self.runs.host.stop_all()  # the worker loads after the current run has ended; end it now
        self.runs.host.load_model(str(path), self.controls.n_gpu_layers(), self.controls.context_size(),
                                  self.controls.exact())

    def connect_server(self) -> None:
        """Ask for a server's URL (the last one offered again) and load its policy like a model. The API key is
        read from the environment by the engine factory: it never passes through the window or its settings."""
        last = self.settings.value(SERVER_URL_KEY, "") if self.persist else ""
        url = self._ask_text_impl(
            "Connect to a server",
            "Base URL of a vLLM, SGLang, llama-server or llama_cpp.server (add #MODEL to pick one of its models; "
            f"the API key is read from ${API_KEY_ENV}):", str(last or "http://127.0.0.1:8000"))
        if not url or not url.strip():
            return
        url = url.strip()
        if self.persist:
            base, model = parse_server_spec(url)
            self.settings.setValue(SERVER_URL_KEY, server_spec(display_url(base), model))  # never credentials
        self.load_model(url)

    def _text_dialog(self, title: str, label: str, text: str) -> Optional[str]:
        value, ok = QInputDialog.getText(self, title, label, text=text)
        return value if ok else None

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
        self.views.scoring.set_exactness(info.exactness() if info.exact is False else None)
        self.controls.select_model_path(info.path)
        self.status.end_loading()
        self.status.set_model(info, name=self.controls.model_name(info.path))
        if self.persist:
            self.window_settings.remember_model(info.path)
        self.model_ready.emit(info)

    @Slot(object)
    def _on_model_failed(self, failure: Failure) -> None:
        """After the worker loaded the previous model again, if there was one: it stays shown and in use."""
        self.model_loading = False
        self.controls.set_model_busy(False)
        self.status.end_loading()
        if self.model_info is None:
            self.controls.show_model_info(None)
            self.status.set_model(None, "No model loaded")
        else:
            self.controls.select_model_path(self.model_info.path)
        kept = f"\n\n{self.model_name(self.model_info)} is still loaded." if self.model_info is not None else ""
        self.report_failure("Cannot load the model", failure, kept)
        self.model_load_failed.emit(str(failure))

    # -- runs ------------------------------------------------------------------------------------------------------
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
        except SamplingParamsError as exc:
            self.show_error("Invalid sampling parameters", str(exc))
            return None
        if not self.may_discard("Run again"):
            return None
        self.panels.show_for(self.controls.k())
        box = self.controls.reward_box
        run_id = self.runs.generate(self.model_info, queries, self.controls.k(), params, self.controls.chat(),
                                    self.controls.system_prompt(), box.reward_fn(), box.normalize_std())
        self.setWindowTitle("Rollout Explorer")
        self._begin_run()
        return run_id

    def request_branch(self, group_id: str, rollout_id: str, position: int, forced_token) -> Optional[int]:
        """k new rollouts continuing `rollout_id` from `position` (forcing `forced_token` there when given)."""
        session = self.session
        if not self._check_can_run() or session is None or group_id not in session.group_ids:
            return None
        why_not = session.can_branch(group_id, self.model_info)
        if why_not is not None:
            self.show_error("Different model", why_not)
            return None
        run_id = self.runs.branch(group_id, rollout_id, position, forced_token, self.controls.k(),
                                  self.controls.sampling_params())
        self._begin_run()
        return run_id

    def _begin_run(self) -> None:
        self.views.set_streaming(True)
        self._set_running(True)
        self.status.start_run()
        self.files.run_started()

    def stop(self) -> None:
        if self.runs.stop():
            self.status.message("Stopping after the current decode step…")

    def _set_running(self, running: bool) -> None:
        self.controls.set_running(running)
        self.menu_actions["stop"].setEnabled(running)

    def drain(self, spread: bool = False) -> None:
        """Feed buffered events to the session, then refresh the views once. While a run streams the refresh timer's
        ticks (spread) draw the views, a view at a time (see ViewsPanel.refresh): a drain asked for elsewhere then
        (autosave, export, a branch) only feeds, instead of drawing everything in one go."""
        changes = self.runs.drain()
        if changes.new_groups:
            self.views.sync_tabs()
        if changes.rewarded_groups:
            self._rewards_changed(changes.rewarded_groups)
        streaming = self.views.streaming
        panes_turn = (spread or not streaming) and self.views.refresh(spread, busy=bool(changes.new_groups))
        # the progress bar repaints at once when its value changes: on the panes' turns, a few times a second
        now = time.monotonic()
        session = self.session
        if session is not None and self.is_running() and panes_turn and (
                not spread or now - self._status_shown_at >= STATUS_INTERVAL_S):
            self._status_shown_at = now
            self.status.update_run(session.tokens_done, session.total_tokens)

    @Slot(int)
    def _on_run_ended(self, run_id: int) -> None:
        self.views.set_streaming(False)  # everything is drawn in full before run_done
        self.drain()
        self.runs.end_run()
        self._set_running(False)
        session, failed = self.session, self.runs.failed
        if self.runs.refused:  # nothing of it was shown: what was on screen stays, and so do its figures
            self.files.run_refused()
            self.status.end_loading()
            self.status.message("The run was refused; the previous results are kept", MESSAGE_MS)
            self.run_done.emit(False, True)
            return
        cancelled = bool(session and session.cancelled)
        if session is not None:
            # the figures of this run only: a branch's progress and tok/s are its own
            self.status.end_run(session.tokens_done, session.total_tokens, cancelled, failed)
            rewarded = session.reward_after_run()
            if rewarded:
                self._rewards_changed(rewarded)
                self.views.panes.refresh()
            self._report_reward_errors()
        self.files.run_ended(interrupted=failed or cancelled)
        self.evaluate_reference()  # before run_done: a script waiting for the run sees the evaluation going
        self.run_done.emit(cancelled, failed)

    # -- opened sets -----------------------------------------------------------------------------------------------
    def show_rollout_set(self, rollout_set: RolloutSet, source: str, in_a_file: bool = True) -> None:
        """Show a saved (or recovered: not in a file) set read-only; the reward chosen here applies to a set without
        rewards."""
        session = Session.from_set(rollout_set, source, in_a_file)
        box = self.controls.reward_box
        session.choose_reward(box.reward_fn(), box.normalize_std())
        n = session.reward_opened()
        self._set_running(False)
        self.panels.show_for(max((len(g.rollouts) for g in rollout_set.groups), default=0))
        self.runs.show_session(session)
        self._update_reward_status()
        if n:
            self._report_reward_errors()
        name = Path(source).name
        self.setWindowTitle(f"{name} — Rollout Explorer")
        self.status.show_file(f"{name}, made with {self.model_name(rollout_set.model)}")
        self.evaluate_reference()  # a set without reference facts, of the model loaded, is compared too

    # -- scoring ---------------------------------------------------------------------------------------------------
    def request_score(self, group_id: str, responses: list) -> Optional[int]:
        if self.model_info is None:
            self.show_error("No model", "Load a model to score responses (what you typed is kept).")
            return None
        session = self.session
        if group_id == UNRUN:  # a query no run has sampled: teacher forcing needs no rollouts
            request = self.runs.score_query(self.model_info, self.views.scoring.query, list(responses),
                                            self.controls.chat(), self.controls.system_prompt(),
                                            self.controls.sampling_params().top_n)
            self.views.scoring.set_busy(True)
            return request
        if session is None or group_id not in session.group_ids:
            return None
        if not session.same_model(self.model_info):
            self.show_error("Different model", f"This rollout set was made with {self.model_name(session.model)}; load "
                            "that model to score responses against it (what you typed is kept).")
            return None
        request = self.runs.score(group_id, list(responses), self.controls.system_prompt(),
                                  self.controls.sampling_params().top_n)
        self.views.scoring.set_busy(True)
        return request

    def _on_group_changed(self, group_id) -> None:
        self._update_reward_status()
        if group_id is None:
            self._offer_scoring_without_run()

    def _offer_scoring_without_run(self) -> None:
        """Scoring needs no run: with no query tab shown, the scoring panel takes the query selected in the list."""
        if self.views.current_group_id() is not None:
            return
        item = self.controls.query_editor.list.currentItem()
        query = item.text().strip() if item is not None else ""
        self.views.scoring.set_group(UNRUN if query else None, query)

    def _on_group_added(self, group_id: str) -> None:
        self.views.sync_tabs()
        self.views.select_group(group_id)
        self.evaluate_reference()

    # -- the reference policy --------------------------------------------------------------------------------------
    def choose_reference_policy(self, spec: Optional[str]) -> bool:
        """Use this reference (ReferenceSpec text; None: none) for the set shown and the runs to come."""
        if spec is not None and self.model_info is None and not self.model_loading:
            self.show_error("No model", "Load the policy's model first: the reference is compared with it.")
            self.controls.reference_box.show_in_use(None)
            return False
        self.runs.reference_policy.choose(spec)
        return True

    def evaluate_reference(self) -> Optional[int]:
        """Evaluate what the set shown has not been evaluated on yet under the reference in use (none: nothing)."""
        return self.runs.reference_policy.evaluate()

    def _on_reference_policy_changed(self) -> None:
        self.controls.reference_box.show_in_use(self.runs.reference_policy.in_use)

    def _on_reference_policy_failed(self, failure: Failure) -> None:
        self.controls.reference_box.show_failed(str(failure))
        self.report_failure("Cannot use the reference policy", failure)

    def _on_reference_facts_changed(self) -> None:
        self.views.show_reference()

    def _on_tis_cap_changed(self, cap: float) -> None:
        session = self.session
        if session is not None and session.set_tis_cap(cap):
            self.views.show_stats(self.views.current_group_id())

    def _on_evaluation_done(self) -> None:
        reference = self.runs.reference_policy.in_use
        self.controls.reference_box.show_in_use(reference)
        if reference is not None:
            self.status.message(f"Compared with {reference.description}", MESSAGE_MS)
        self.reference_evaluated.emit()

    # -- rewards ---------------------------------------------------------------------------------------------------
    def reapply_rewards(self) -> None:
        """The reward choice changed: score every group that can be again, and show the result."""
        session = self.session
        if session is None:
            self._update_reward_status()
            return
        self.drain()
        box = self.controls.reward_box
        gids = session.set_reward(box.reward_fn(), box.normalize_std())
        self._rewards_changed(gids)
        self.views.panes.refresh()
        errors = self._report_reward_errors()
        name = box.description()
        if gids and not errors:
            self.status.message(f"Rewards: {name} on {len(gids)} queries" if name else "Rewards cleared")

    def _on_reference_answer_changed(self, query: str, answer) -> None:
        """A reference typed after a run (or for an opened set) applies to the rollouts shown."""
        session = self.session
        if session is not None and session.set_reference_answer(query, answer) and not self.is_running():
            self._answer_timer.start()

    def _reward_new_answers(self) -> None:
        session = self.session
        if session is None or self.is_running():
            return  # a run rewards its groups as they finish
        rewarded = session.reward_after_run()
        if rewarded:
            self._rewards_changed(rewarded)
            self.views.panes.refresh()
        self._report_reward_errors()

    def _rewards_changed(self, gids) -> None:
        current = self.views.current_group_id()
        if current in gids:
            self.views.show_stats(current)
        self._report_reward_errors(quiet_ids=gids)

    def _update_reward_status(self) -> list:
        return self.reward_status.update_for(self.controls.reward_box.description(), self.session)

    def _report_reward_errors(self, quiet_ids=None) -> list:
        """Status bar: a permanent count of failed rewards (in its tooltip), and a message for new ones."""
        errors = self._update_reward_status()
        if quiet_ids is not None and self.session is not None:
            errors = self.session.reward_errors(quiet_ids)
        if errors:
            rid, why = errors[0]
            self.status.message(f"{len(errors)} reward{'s' if len(errors) != 1 else ''} failed: {rid}: {why}",
                                MESSAGE_MS)
        return errors

    # -- drag and drop, shutdown -----------------------------------------------------------------------------------
    def dragEnterEvent(self, event) -> None:  # noqa: N802 (Qt override)
        if dropped_path(event.mimeData()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event) -> None:  # noqa: N802 (Qt override)
        path = dropped_path(event.mimeData())
        if path:
            event.acceptProposedAction()
            self.files.open_path(path)

    def shutdown(self, keep_recovery: bool = False) -> None:
        """Stop the run, close the engine on its thread and join it (at most 2 s); idempotent.

        keep_recovery (SIGINT, SIGTERM): the recovery journal stays, with what streamed up to now, and the next
        start offers it back; a close by the user removes it."""
        if self._closed:
            return
        self._closed = True
        if keep_recovery:
            self.drain()  # the events still buffered reach the session, and from it the journal
        self.files.shut(keep_recovery)
        self.runs.abandon()  # signals still queued from the worker are ignored from here on
        if self.persist:
            self.window_settings.save()
        if not self.runs.host.shutdown(2000):
            print("rollout-explorer: the engine is still busy (loading a model?); exiting when it is done",
                  file=sys.stderr)
            keep_until_finished(self.runs.host)
        self.files.close()

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt override)
        if not self._closed and not self.may_discard("Quit"):
            event.ignore()
            return
        self.shutdown()
        event.accept()
