"""Runs as the window drives them: the engine host, the Session being shown, which run is drawn, the events waiting
to be fed, and the ~30 Hz drain timer.

Events from the worker are only buffered when they arrive; each tick of the drain timer feeds the buffer to the
Session at once and tells the window, so a burst of tokens costs one repaint, never one per token.
"""

from __future__ import annotations

from typing import Optional

from PySide6.QtCore import QObject, QTimer, Signal, Slot

from explorer.core.session import Changes, Session
from explorer.core.types import ModelInfo, QueryGroup, SamplingParams
from explorer.gui.run.reference_policy import ReferencePolicyController
from explorer.gui.run.worker import EngineHost, Failure, default_engine_factory

REFRESH_INTERVAL_MS = 33


class RunController(QObject):
    """Owns the Session shown and the runs feeding it. Everything it learns goes out as a signal."""

    session_replaced = Signal()  # a new run or an opened set: the views start over
    ticked = Signal()  # the drain timer, while a run streams
    run_ended = Signal(int)  # run id: the drawn run's last signal arrived
    run_failed = Signal(object)  # Failure of the drawn run
    fed = Signal(object)  # tuple of events just fed to the session (the recovery journal appends them)
    scores_arrived = Signal(str)  # group id whose scores in the session changed
    group_added = Signal(str)  # a group made by scoring a query without a run
    score_failed = Signal(object)  # Failure
    score_done = Signal()  # a score request ended (with scores or not)

    def __init__(self, engine_factory=default_engine_factory, parent: Optional[QObject] = None):
        super().__init__(parent)
        self.host = EngineHost(engine_factory)
        self.host.events.connect(self._on_events)
        self.host.scores_ready.connect(self._on_scores)
        self.host.prompt_formatted.connect(self._on_prompt)
        self.host.failed.connect(self._on_failed)
        self.host.finished.connect(self._on_finished)
        self.session: Optional[Session] = None
        # a generate's new Session waits here until its run sends its first events: a run refused at the start
        # (a context too small, a server that says no) leaves the session shown as it was
        self._starting: Optional[Session] = None
        self.run_id: Optional[int] = None  # the generate or branch run being drawn
        self.refused = False  # the drawn run ended before it sent anything
        self.failed = False  # the drawn run failed
        self._score_requests: dict[int, tuple[Session, str]] = {}  # request -> (session asked about, group)
        # request -> (model, query): a query scored without a run, waiting for its prompt and scores
        self._unrun_requests: dict[int, tuple[ModelInfo, str]] = {}
        self._prompts: dict[int, tuple] = {}  # request -> (chat, prompt, prompt ids) of an unrun query
        self._scoring: set[int] = set()  # score requests not finished yet, of both kinds
        self._pending: list[tuple[int, tuple]] = []
        # the reference policy in use, pending, and the evaluations under it, for the session shown
        self.reference_policy = ReferencePolicyController(self.host, lambda: self.session, self.is_running, self)
        self.timer = QTimer(self)
        self.timer.setInterval(REFRESH_INTERVAL_MS)
        self.timer.timeout.connect(self.ticked)

    def is_running(self) -> bool:
        return self.run_id is not None

    # -- starting --------------------------------------------------------------------------------------------------
    def generate(self, model: ModelInfo, queries, k: int, params: SamplingParams, chat: bool,
                 system: Optional[str], reward_fn, divide_by_std: bool) -> int:
        """A new Session for k rollouts of every query, shown once the run streams; a run already going is stopped
        (its events are dropped)."""
        self._pending.clear()
        self._starting = Session(model, params)
        self._starting.choose_reward(reward_fn, divide_by_std)
        # the reference in use follows the run (its facts come with the tokens); the session says so from the start
        follow = self.reference_policy.follow(self._starting)
        self._starting.carry_scores(self.session)  # scores typed before the run stay with their queries
        self.run_id = self.host.generate(queries, k, params, chat, system, follow)
        self._starting.accept(self.run_id)
        self._begin()
        return self.run_id

    def branch(self, group_id: str, rollout_id: str, position: int, forced_token, k: int,
               params: SamplingParams) -> int:
        """k new rollouts of the shown session continuing `rollout_id` from `position`."""
        self.drain()
        group: QueryGroup = self.session.group(group_id, unfinished_reason="cancelled")
        follow = self.reference_policy.follow(self.session)
        self.run_id = self.host.branch(group, rollout_id, position, forced_token, k, params, follow)
        self.session.accept(self.run_id)
        self._begin()
        return self.run_id

    def _begin(self) -> None:
        self.failed = False
        self.refused = False
        self.timer.start()

    def show_session(self, session: Session) -> None:
        """Show an opened (or recovered) set instead: the run going is abandoned."""
        self.abandon()
        self._starting = None
        self.session = session
        self.session_replaced.emit()

    def score(self, group_id: str, responses: list, system: Optional[str], top_n: int) -> int:
        header = self.session.header(group_id)
        request = self.host.score(group_id, header.query, list(responses), header.chat,
                                  system if header.chat else None, top_n)
        self._score_requests[request] = (self.session, group_id)
        self._scoring.add(request)
        return request

    def score_query(self, model: ModelInfo, query: str, responses: list, chat: bool, system: Optional[str],
                    top_n: int) -> int:
        """Score responses to a query no run has sampled: the scores become a group of the session shown (a new
        session when there is none)."""
        request = self.host.score("", query, list(responses), chat, system if chat else None, top_n)
        self._unrun_requests[request] = (model, query)
        self._scoring.add(request)
        return request

    @Slot(int, object)
    def _on_prompt(self, request: int, prompt: tuple) -> None:
        if request in self._unrun_requests:
            self._prompts[request] = prompt

    def stop(self) -> bool:
        if self.run_id is None:
            return False
        self.host.stop(self.run_id)
        return True

    def abandon(self) -> None:
        """Stop drawing the current run (it is cancelled on the worker; its late events are dropped)."""
        self.host.stop_all()
        self._pending.clear()
        self.run_id = None
        self.timer.stop()

    # -- events ----------------------------------------------------------------------------------------------------
    @Slot(int, object)
    def _on_events(self, run_id: int, events: tuple) -> None:
        if self._starting is not None:
            if not self._starting.accepts(run_id):
                return  # a run of the session shown, stopped when the new one was asked for
            self.session, self._starting = self._starting, None
            self.session_replaced.emit()
        if self.session is not None and self.session.accepts(run_id):
            self._pending.append((run_id, events))

    def has_pending(self) -> bool:
        return bool(self._pending)

    def drain(self) -> Changes:
        """Feed the buffered events to the session; what changed, all batches together."""
        if not self._pending or self.session is None:
            return Changes()
        batches, self._pending = self._pending, []
        new, finished, rewarded = [], [], []
        for run_id, events in batches:
            changes = self.session.feed(run_id, events)
            if self.session.accepts(run_id):
                self.fed.emit(events)
            new += changes.new_groups
            finished += changes.finished_groups
            rewarded += changes.rewarded_groups
        return Changes(tuple(new), tuple(dict.fromkeys(finished)), tuple(dict.fromkeys(rewarded)))

    @Slot(int, str, object)
    def _on_scores(self, request: int, group_id: str, scores: tuple) -> None:
        if request in self._unrun_requests:
            model, query = self._unrun_requests.pop(request)
            chat, prompt, prompt_ids = self._prompts.pop(request)
            if self.session is None or not self.session.same_model(model):
                self.session = Session(model, SamplingParams())
                self.session_replaced.emit()
            gid = self.session.add_scored_query(query, chat, prompt, prompt_ids, scores)
            self.group_added.emit(gid)
            return
        session, gid = self._score_requests.get(request, (None, None))
        if session is None or session is not self.session:
            return  # asked about a set that is no longer shown
        session.set_scores(gid, scores)
        self.scores_arrived.emit(gid)

    @Slot(int, object)
    def _on_failed(self, run_id: int, failure: Failure) -> None:
        if self._unrun_requests.pop(run_id, None) is not None:
            self._prompts.pop(run_id, None)
            self.score_failed.emit(failure)
        elif run_id in self._score_requests:
            self.score_failed.emit(failure)
        elif run_id == self.run_id:
            self.failed = True
            self.run_failed.emit(failure)

    @Slot(int)
    def _on_finished(self, run_id: int) -> None:
        if run_id in self._scoring:
            self._scoring.discard(run_id)
            self._score_requests.pop(run_id, None)
            self.score_done.emit()
            return
        if run_id == self.run_id:
            self.refused = self._starting is not None
            self._starting = None
            self.run_ended.emit(run_id)

    def end_run(self) -> None:
        """The window has drawn the ended run in full."""
        self.run_id = None
        self.timer.stop()
