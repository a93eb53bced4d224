"""The reference policy as the window drives it: which pi_ref the worker has in use (and for which policy), which one
was asked for and is not answered yet, and the evaluations asked of it.

The worker builds the reference beside the policy engine (EngineWorker.set_reference_policy) and evaluates rollouts
under it (annotate); the facts go into the Session shown (Session.annotate, Session.use_reference_policy). This object
is the one place that knows what is in use, what is pending and which evaluation belongs to which session; the
window only shows what it says.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from PySide6.QtCore import QObject, Signal, Slot

from explorer.core.session import Session
from explorer.core.types import ModelInfo, QueryGroup, ReferenceInfo
from explorer.gui.run.worker import EngineHost, Failure


@dataclass(frozen=True)
class _Asked:
    """A reference asked of the worker and not answered yet; chosen: by the user, for the set shown too (a set that
    carries another reference's facts is then evaluated again)."""

    chosen: bool


class ReferencePolicyController(QObject):
    changed = Signal()  # in_use changed, or the reference asked for could not be used (in_use is None then)
    failed = Signal(object)  # Failure: the reference asked for cannot be used
    evaluation_failed = Signal(object)  # Failure: an evaluation under the reference in use failed
    facts_changed = Signal()  # the shown session's reference facts changed (a group evaluated, facts cleared)
    evaluating = Signal(str)  # an evaluation was asked of the reference in use (its description)
    other_model = Signal(object)  # the set shown was made with another model (its ModelInfo): it cannot be evaluated
    evaluation_done = Signal()  # no evaluation is left (done, cancelled or failed)

    def __init__(self, host: EngineHost, shown: Callable[[], Optional[Session]], running: Callable[[], bool],
                 parent: Optional[QObject] = None):
        """shown(): the session the window shows; running(): whether a run streams into it (its rollouts are
        evaluated when it ends, or followed as it samples)."""
        super().__init__(parent)
        self._host = host
        self._shown = shown
        self._running = running
        self.in_use: Optional[ReferenceInfo] = None  # what the worker last said it has in use
        self._policy: Optional[ModelInfo] = None  # the policy engine the reference in use was built for
        self._asked: Optional[_Asked] = None
        self._evaluations: dict[int, Session] = {}  # request -> the session it evaluates (one no longer shown takes
        # nothing)
        self._evaluate_after = False  # asked while an evaluation went on: what is left is evaluated when it ends
        host.reference_policy_ready.connect(self._on_ready)
        host.reference_policy_failed.connect(self._on_failed)
        host.annotated.connect(self._on_annotated)
        host.failed.connect(self._on_request_failed)
        host.finished.connect(self._on_request_finished)

    @property
    def pending(self) -> bool:
        """A reference was asked for and the worker has not answered yet."""
        return self._asked is not None

    def is_evaluating(self) -> bool:
        return bool(self._evaluations)

    # -- asking ----------------------------------------------------------------------------------------------------
    def choose(self, spec: Optional[str]) -> None:
        """The user's choice (ReferenceSpec text; None: none) for the set shown and the runs to come; `changed`
        follows, then the evaluation of the set shown."""
        self._asked = _Asked(chosen=True)
        self._host.set_reference_policy(spec)

    def follow(self, session: Session) -> Optional[ReferenceInfo]:
        """The reference a run of `session` is compared with (None: none), recorded on the session before its first
        token. A set that carries another reference's facts (an opened file) keeps them: its runs are not followed."""
        reference = self.in_use
        if reference is None or session.reference_policy not in (None, reference):
            return None
        session.use_reference_policy(reference)
        return reference

    def evaluate(self, again: bool = False) -> Optional[int]:
        """Evaluate what the shown session's reference facts lack (finished rollouts, scores) under the reference in
        use. A session that carries another reference's facts keeps them unless `again` (the user chose this
        reference for it). Nothing while a run streams (its rollouts are evaluated when it ends), while another
        reference is on its way (it evaluates the set when it comes), or while another evaluation goes on (what is
        left is evaluated after it)."""
        session, reference = self._shown(), self.in_use
        if self.pending or session is None or reference is None or self._running():
            return None
        if not session.same_model(self._policy):
            self.other_model.emit(session.model)
            return None
        if self._evaluations and not again:
            self._evaluate_after = True
            return None
        if session.reference_policy not in (None, reference):
            if not again:
                return None
            session.clear_reference_policy()
            self.facts_changed.emit()
        groups = [g for g in (session.unreferenced(gid) for gid in session.group_ids) if g is not None]
        if not groups:
            return None
        request = self._host.annotate(groups)
        self._evaluations[request] = session
        self.evaluating.emit(reference.description)
        return request

    # -- what the worker said --------------------------------------------------------------------------------------
    @Slot(object, object)
    def _on_ready(self, info: Optional[ReferenceInfo], policy: Optional[ModelInfo]) -> None:
        asked, self._asked = self._asked, None
        self.in_use, self._policy = info, policy
        session = self._shown()
        if info is None and session is not None and session.reference_policy is not None:
            session.clear_reference_policy()  # the user said no reference: its facts go with it
            self.facts_changed.emit()
        if info is not None:
            self.evaluate(again=asked is not None and asked.chosen)
        self.changed.emit()  # after the evaluation was asked for: whoever waits on both sees it going

    @Slot(object)
    def _on_failed(self, failure: Failure) -> None:
        self._asked = None
        self.in_use = self._policy = None
        self.changed.emit()
        self.failed.emit(failure)

    @Slot(int, object, object)
    def _on_annotated(self, request: int, group: QueryGroup, info: ReferenceInfo) -> None:
        session = self._evaluations.get(request)
        if session is not None and session is self._shown() and info == self.in_use:
            session.annotate(group, info)
            self.facts_changed.emit()

    @Slot(int, object)
    def _on_request_failed(self, request: int, failure: Failure) -> None:
        if request in self._evaluations:
            self.evaluation_failed.emit(failure)

    @Slot(int)
    def _on_request_finished(self, request: int) -> None:
        if self._evaluations.pop(request, None) is None:
            return
        if self._evaluate_after and not self._evaluations:
            self._evaluate_after = False
            self.evaluate()
        if not self._evaluations:
            self.evaluation_done.emit()
