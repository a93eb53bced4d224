"""QApplication setup and `run_gui(args)`: the window, interactive or scripted.

Scripted mode (--run, --screenshot, --export, --quit) opens the window, loads the model, runs the queries, waits for
the end, saves a screenshot of the whole window and the rollout set, and with --quit exits: 0 on success, 1 with a
message on stderr on any error.
"""

from __future__ import annotations

import sys
from typing import Callable, Optional

from PySide6.QtCore import QSettings, Qt, QTimer, qInstallMessageHandler
from PySide6.QtWidgets import QApplication

from explorer.core.errors import ExplorerError
from explorer.core.models.discovery import resolve_model
from explorer.core.remote.servers import server_spec
from explorer.gui.window.signals import GracefulExit, SignalBridge
from explorer.gui.run.worker import default_engine_factory, wait_for_lingering
from explorer.gui.widgets.view_options import BETA_RANGE

ORGANIZATION = "rollout-explorer"
APPLICATION = "Rollout Explorer"


# Qt warnings that say nothing to a user: headless platforms (offscreen, used by the scripted mode) print this one
# for every window resize.
_QUIET_QT_MESSAGES = ("This plugin does not support propagateSizeHints()",)


def _qt_message(mode, context, message: str) -> None:
    if message in _QUIET_QT_MESSAGES:
        return
    sys.stderr.write(message + "\n")


def create_app(argv: Optional[list[str]] = None) -> QApplication:
    app = QApplication.instance()
    if app is None:
        qInstallMessageHandler(_qt_message)
        app = QApplication(argv if argv is not None else sys.argv[:1])
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    app.setApplicationDisplayName(APPLICATION)
    return app


def _arg(args, name: str, default=None):
    value = getattr(args, name, default)
    return default if value is None else value


def _apply_args(window, args) -> None:
    c = window.controls
    queries = _arg(args, "queries", [])
    if queries:
        c.set_queries(queries)
    for name, widget in (("k", c.k_spin), ("max_tokens", c.max_tokens), ("seed", c.seed),
                         ("n_gpu_layers", c.gpu_layers), ("n_ctx", c.n_ctx)):
        value = _arg(args, name)
        if value is not None:
            widget.setValue(int(value))
    if _arg(args, "raw", False):
        c.chat_check.setChecked(False)
    if _arg(args, "exact") is not None:
        c.set_exact(bool(_arg(args, "exact")))
    system = _arg(args, "system")
    if system:
        c.system_edit.setPlainText(system)
    if _arg(args, "no_std", False):
        c.reward_box.std_check.setChecked(False)
    if _arg(args, "reference"):
        c.reference_box.set_spec(_arg(args, "reference"))  # shown as the draft; the script uses it once loaded
    if _arg(args, "tis_cap") is not None:
        c.reference_box.cap_spin.setValue(float(_arg(args, "tis_cap")))
    if _arg(args, "beta") is not None:
        window.views.options.set_beta(float(_arg(args, "beta")))  # ValueError: out of range


def _read_reward_and_queries(args):
    """The --reward function and the --queries file's queries, read before the window opens so a bad one gives a
    one-line error and exit 2. Raises ExplorerError."""
    from explorer.core.files.queries import read_query_file
    from explorer.core.rl.rewards import load_reward
    from explorer.core.types import Query

    spec = _arg(args, "reward")
    fn = load_reward(spec) if spec else None
    queries = None
    if _arg(args, "queries_file"):
        queries = [Query(q) for q in _arg(args, "queries", [])] + read_query_file(
            args.queries_file, _arg(args, "prompt_column"), _arg(args, "answer_column"))
    return spec, fn, queries


class ScriptedSession:
    """Drives the window through load -> run -> screenshot -> export -> quit, recording the first error."""

    def __init__(self, app: QApplication, window, args):
        self.app, self.window, self.args = app, window, args
        self.failed = False
        window.model_ready.connect(self._on_model_ready)
        window.model_load_failed.connect(lambda _msg: self._fail())
        window.run_done.connect(self._on_run_done)
        self._score_started = False
        self._score_request = None
        self._reference_asked = False
        self._waiting: Optional[Callable[[], None]] = None  # what to do once the reference work has settled
        window.reference_evaluated.connect(self._check_settled)
        window.runs.reference_policy.changed.connect(self._check_settled)
        window.runs.host.finished.connect(self._on_request_finished)
        window.runs.host.failed.connect(self._on_failed)

    def error(self, title: str, message: str) -> None:
        print(f"rollout-explorer: {title}: {message}", file=sys.stderr)
        self._fail()

    def _fail(self) -> None:
        if not self.failed:
            self.failed = True
            if _arg(self.args, "quit", False):
                self.app.exit(1)

    def start(self, model: Optional[str]) -> None:
        if model:
            self.window.load_model(model)
        elif _arg(self.args, "run", False):
            self.error("No model", "--run needs a model (--model PATH or default)")
        else:
            QTimer.singleShot(0, self._finish)

    def _when_settled(self, then: Callable[[], None]) -> None:
        """then() once no reference is being prepared or evaluated (at once when none is)."""
        self._waiting = then
        self._check_settled()

    def _check_settled(self) -> None:
        reference = self.window.runs.reference_policy
        if self._waiting is None or reference.pending or reference.is_evaluating():
            return
        then, self._waiting = self._waiting, None
        QTimer.singleShot(0, then)

    def _on_model_ready(self, _info) -> None:
        if self.failed:
            return
        spec = _arg(self.args, "reference")
        if spec and not self._reference_asked:
            self._reference_asked = True
            if not self.window.choose_reference_policy(spec):
                self._fail()
                return
            self._when_settled(self._after_reference)
            return
        self._after_reference()

    def _after_reference(self) -> None:
        if self.failed:
            return
        if _arg(self.args, "reference") and self.window.runs.reference_policy.in_use is None:
            self._fail()  # the window said why
            return
        if _arg(self.args, "run", False):
            if self.window.run() is None:
                self._fail()
        else:
            self._finish()

    def _on_run_done(self, cancelled: bool, failed: bool) -> None:
        if failed:
            self._fail()
        elif not self.failed:
            self._when_settled(self._after_run)

    def _after_run(self) -> None:
        if not self.failed:
            responses = _arg(self.args, "score", [])
            if responses and not self._score_started:
                self._score_started = True
                self._score_request = self.window.request_score(self.window.views.current_group_id(), list(responses))
                if self._score_request is None:
                    self._fail()
                return
            self._finish()

    def _on_request_finished(self, request: int) -> None:
        # finished is the last signal of a request: the window has shown the scores and left its busy state
        if request == self._score_request and not self.failed:
            self._when_settled(self._finish)  # the scores are evaluated under the reference too

    def _on_failed(self, request: int, message) -> None:
        if request == self._score_request:
            self.error("Scoring failed", str(message))

    def _finish(self) -> None:
        self.app.processEvents()  # let the last layout changes settle before the grab
        screenshot = _arg(self.args, "screenshot")
        if screenshot and not self.window.grab().save(str(screenshot)):
            self.error("Cannot save the screenshot", f"{screenshot}: Qt could not write the image")
            return
        tree_shot = _arg(self.args, "tree_screenshot")
        if tree_shot:
            try:
                export_tree(self.window.views.tree_view, tree_shot)
            except (OSError, ValueError) as exc:
                self.error("Cannot save the tree", str(exc))
                return
        export_path = _arg(self.args, "export")
        if export_path and not self.window.files.export_rollout_set(str(export_path)):
            self._fail()
            return
        if _arg(self.args, "quit", False):
            self.app.exit(0)


TREE_SHOT_SIZE = (1400, 620)


def export_tree(view, path) -> None:
    """The shown tree, as the view shows it (heights, colours), drawn at a readable size of its own: the window's
    tree pane may be small."""
    from explorer.gui.tree.tree_view import TokenTreeView  # the window's import: pyqtgraph loads with it

    shot = TokenTreeView()
    try:
        shot.setAttribute(Qt.WidgetAttribute.WA_DontShowOnScreen)
        shot.set_mode(view.mode)
        shot.set_colour_by(view.colour_by)
        shot.resize(*TREE_SHOT_SIZE)
        shot.show()
        shot.set_tree(view.tree)
        QApplication.processEvents()
        shot.export_image(path)
    finally:
        shot.close()
        shot.deleteLater()


def run_gui(args, engine_factory: Callable = default_engine_factory, settings: Optional[QSettings] = None) -> int:
    """Open the main window; args carries model, queries, queries_file, reward, no_std, k, max_tokens, seed, run,
    score (responses to score for the first query after the run), screenshot, tree_screenshot, tree_heights,
    export, quit, n_gpu_layers, n_ctx, exact (any may be missing or None). Returns the exit status."""
    from explorer.gui.window.main_window import MainWindow

    app = create_app()
    scripted = any(_arg(args, name) for name in ("run", "screenshot", "tree_screenshot", "export", "quit"))
    model = _arg(args, "model")
    if _arg(args, "server"):  # a policy on a server is loaded like a model; the factory connects
        model = server_spec(_arg(args, "server"), _arg(args, "server_model"))
    elif model:
        try:
            model = str(resolve_model(model))
        except ExplorerError as exc:
            print(f"rollout-explorer: {exc}", file=sys.stderr)
            return 2
    try:
        reward_spec, reward_fn, queries = _read_reward_and_queries(args)
        if _arg(args, "reference"):
            from explorer.core.reference.policy import ReferenceSpec

            ReferenceSpec.parse(_arg(args, "reference"))  # a typo is refused before any window or model
    except ExplorerError as exc:
        print(f"rollout-explorer: {exc}", file=sys.stderr)
        return 2
    beta = _arg(args, "beta")
    low, high = BETA_RANGE
    if beta is not None and not low <= beta <= high:  # NaN too
        print(f"rollout-explorer: --beta must be between {low:g} and {high:g}, not {beta}", file=sys.stderr)
        return 2
    session = None
    quit_after = bool(_arg(args, "quit", False))
    # a run started with --run alone is watched by a user: it is autosaved like any other
    throwaway = any(_arg(args, name) for name in ("screenshot", "export", "quit"))
    window = MainWindow(engine_factory, settings=settings, persist=not throwaway,
                        show_error=(lambda t, m: session.error(t, m)) if quit_after else None,
                        ask=(lambda _title, _question: True) if quit_after else None)  # --quit means quit
    _apply_args(window, args)
    if queries is not None:
        window.controls.set_queries(queries)
    if reward_fn is not None:
        window.controls.reward_box.set_spec(reward_spec, reward_fn)
    if _arg(args, "shading"):
        window.views.options.set_shading(_arg(args, "shading"))
    if _arg(args, "tree_heights"):
        window.views.tree_view.set_mode(_arg(args, "tree_heights"))
    if _arg(args, "tree_colour"):
        window.views.tree_view.set_colour_by(_arg(args, "tree_colour"))
    if not model and not scripted:
        model = window.window_settings.startup_model()
    if _arg(args, "size"):
        window.resize(*_arg(args, "size"))
    window.show()
    signals = SignalBridge(app)
    GracefulExit(window, app, signals)
    if scripted:
        session = ScriptedSession(app, window, args)
        session.start(model)
    else:
        QTimer.singleShot(0, window.files.offer_recovery)
        if model:
            window.load_model(model)
    code = app.exec()
    window.close()
    if session is not None and session.failed and code == 0:
        code = 1
    if not wait_for_lingering():
        print("rollout-explorer: the engine thread did not end", file=sys.stderr)
    signals.close()  # the process's signal handlers are the caller's again (tests run several windows)
    return code
