"""The one QObject on the one QThread that owns the engine.

The GUI never calls the engine: it asks EngineHost, which forwards each request as a queued signal to EngineWorker
living on its own QThread. The worker creates the engine there (through an injected factory), runs it there and
closes it there, and answers with signals carrying frozen values tagged with the request's run id.

Stop is a threading.Event per run, set directly from the GUI thread: a queued "stop" slot could not run while the
worker is busy iterating the engine, but the engine checks the event before every decode step.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Sequence

from PySide6.QtCore import QObject, QThread, Signal, Slot

from explorer.core.engine.protocol import EngineLike
from explorer.core.errors import ExplorerError
from explorer.core.types import Query, QueryGroup, RunStarted, SamplingParams

PROGRESS_INTERVAL_S = 0.1  # a reference's progress (exact copy, evaluation) goes to the GUI at most this often

EngineFactory = Callable[..., EngineLike]  # (model_path, n_gpu_layers=None, n_ctx=None, exact=True) -> engine

EMIT_INTERVAL_S = 0.03  # the GUI repaints at ~30 Hz; batching events at the same pace keeps the signal count low


def default_engine_factory(model_path: str, n_gpu_layers: Optional[int] = None,
                           n_ctx: Optional[int] = None, exact: bool = True) -> EngineLike:
    """A local Engine for a .gguf path; a RemoteEngine for a server URL (URL#model), its key from the environment.
    exact: batch-invariant decoding of a local model (a server batches as it does)."""
    from explorer.core.remote.servers import API_KEY_ENV, is_server_spec, parse_server_spec

    if is_server_spec(model_path):
        from explorer.core.remote.remote_engine import RemoteEngine

        url, model = parse_server_spec(model_path)
        return RemoteEngine(url, api_key=os.environ.get(API_KEY_ENV) or None, model=model)
    from explorer.core.engine.local import Engine  # imported here: loading llama.cpp is the worker's business, not the GUI's

    return Engine(model_path, n_gpu_layers=n_gpu_layers, n_ctx=n_ctx, exact=exact)


@dataclass(frozen=True)
class Failure:
    """An exception caught on the worker thread, sent to the GUI with its cause: the type, the message, the
    traceback, and whether it is the user's input (an ExplorerError) or a bug (then the window logs the trace)."""

    kind: str
    message: str
    traceback: str
    user_error: bool

    @classmethod
    def of(cls, exc: BaseException) -> "Failure":
        trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return cls(type(exc).__name__, str(exc), trace, isinstance(exc, ExplorerError))

    def __str__(self) -> str:
        """The text a user sees: our own errors as they are, anything else named by its type."""
        return self.message if self.user_error else f"Engine error: {self.kind}: {self.message}"


def _close_keeping_on(what: str, closable) -> None:
    """Close it; a close that fails must not keep the next model or reference from opening: its traceback goes to
    stderr and the worker goes on."""
    if closable is None:
        return
    try:
        closable.close()
    except Exception:  # noqa: BLE001
        sys.stderr.write(f"rollout-explorer: closing {what} failed\n{traceback.format_exc()}")


class EngineWorker(QObject):
    """Lives on the worker thread; every slot runs there, one request at a time, in the order they were asked."""

    model_loading = Signal(str)  # path
    model_loaded = Signal(object)  # ModelInfo
    model_failed = Signal(object)  # Failure
    events = Signal(int, object)  # run id, tuple of events
    scores_ready = Signal(int, str, object)  # run id, group id, tuple of Score
    prompt_formatted = Signal(int, object)  # run id, (chat used, prompt, prompt token ids): before scores_ready
    failed = Signal(int, object)  # run id, Failure
    finished = Signal(int)  # run id; always the last signal of a generate / branch / score / annotate request
    # the reference policy now in use: its ReferenceInfo and the ModelInfo of the policy it belongs to (None, None:
    # no reference)
    reference_policy_ready = Signal(object, object)
    reference_policy_failed = Signal(object)  # Failure: the reference asked for cannot be used (none is in use)
    reference_policy_progress = Signal(str, int, int)  # what, done, total: writing the exact copy, evaluating
    annotated = Signal(int, object, object)  # request id, QueryGroup evaluated under the reference, ReferenceInfo

    def __init__(self, engine_factory: EngineFactory = default_engine_factory):
        super().__init__()
        self._factory = engine_factory
        self._engine: Optional[EngineLike] = None
        self._loaded_with: Optional[tuple] = None  # (path, n_gpu_layers, n_ctx, exact) of the engine loaded
        # The reference policy pi_ref, and what the user asked for: it belongs to the policy engine (its rows, its
        # tokenizer), so a new model builds it again from the same spec.
        self._reference = None  # ReferencePolicy
        self._reference_spec: Optional[str] = None
        self._progress_at = 0.0

    # -- slots (queued from EngineHost) ----------------------------------------------------------------------------
    @Slot(str, object, object, bool)
    def load_model(self, path: str, n_gpu_layers: Optional[int], n_ctx: Optional[int], exact: bool = True) -> None:
        self.model_loading.emit(path)
        # The old model goes first: two multi-GB models side by side may not fit (VRAM especially). When the new one
        # cannot be loaded, the old one is loaded again, so a bad pick leaves the model the user had.
        previous, self._loaded_with = self._loaded_with, None
        self._close_reference()
        self._close_engine()
        failure = self._load(path, n_gpu_layers, n_ctx, exact)
        if failure is not None and previous is not None and previous[0] != path:
            self._load(*previous)  # model_loaded again: the window shows the previous model
        if failure is not None:
            self.model_failed.emit(failure)
        if self._engine is not None and self._reference_spec is not None:
            self._open_reference()  # the same reference, for the policy now loaded

    def _load(self, path: str, n_gpu_layers: Optional[int], n_ctx: Optional[int],
              exact: bool) -> Optional[Failure]:
        try:
            engine = self._factory(path, n_gpu_layers=n_gpu_layers, n_ctx=n_ctx, exact=exact)
            info = engine.info
        except BaseException as exc:  # noqa: BLE001 -- anything reaching Qt's event loop would abort the thread
            return Failure.of(exc)
        self._engine = engine
        self._loaded_with = (path, n_gpu_layers, n_ctx, exact)
        self.model_loaded.emit(info)
        return None

    @Slot(int, object, int, object, bool, object, object, object)
    def generate(self, run_id: int, queries: Sequence[Query | str], k: int, params: SamplingParams, chat: bool,
                 system: Optional[str], cancel: threading.Event, reference) -> None:
        """reference: the ReferenceInfo the window expects the tokens to be compared with (None: none)."""
        self._stream(run_id, lambda engine, follow: engine.generate(list(queries), k, params, cancel=cancel,
                                                                    chat=chat, system=system, **follow),
                     reference, params.top_n)

    @Slot(int, object, str, int, object, int, object, object, object)
    def branch(self, run_id: int, group: QueryGroup, rollout_id: str, position: int, forced_token: Optional[int],
               k: int, params: SamplingParams, cancel: threading.Event, reference) -> None:
        self._stream(run_id, lambda engine, follow: engine.branch(group, rollout_id, position, forced_token, k,
                                                                  params, cancel=cancel, **follow),
                     reference, params.top_n)

    @Slot(int, str, str, object, bool, object, int)
    def score(self, run_id: int, group_id: str, query: str, responses: Sequence[str], chat: bool,
              system: Optional[str], top_n: int) -> None:
        try:
            engine = self._require_engine()
            scores = tuple(engine.score(query, list(responses), chat=chat, system=system, top_n=top_n))
            used_chat = engine.uses_chat(chat)
            prompt, prompt_ids = engine.format_prompt(query, used_chat, system)
        except BaseException as exc:  # noqa: BLE001
            self.failed.emit(run_id, Failure.of(exc))
        else:
            # what a query scored without a run needs to become a group of its own
            self.prompt_formatted.emit(run_id, (used_chat, prompt, tuple(prompt_ids)))
            self.scores_ready.emit(run_id, group_id, scores)
        self.finished.emit(run_id)

    @Slot(object)
    def set_reference_policy(self, spec: Optional[str]) -> None:
        """Use the reference policy `spec` (ReferenceSpec text) from now on; None: no reference."""
        self._close_reference()
        self._reference_spec = spec
        if spec is None:
            self.reference_policy_ready.emit(None, None)
        else:
            self._open_reference()

    @Slot(int, object, object)
    def annotate(self, run_id: int, groups: Sequence[QueryGroup], cancel: threading.Event) -> None:
        """Evaluate the groups under the reference in use (teacher forcing), one `annotated` per group; nothing
        when no reference is in use any more (it was cleared after the request was made)."""
        try:
            reference = self._reference
            total = sum(len(s.tokens) for g in groups for s in g.rollouts + g.scores)
            before = 0
            for group in groups if reference is not None else ():
                out = reference.annotate_group(
                    group, cancel=cancel,
                    progress=lambda done, _n, at=before: self._progress("Evaluating the reference", at + done, total))
                if out is None:
                    break  # cancelled: a new run or another reference was asked for
                before += sum(len(s.tokens) for s in group.rollouts + group.scores)
                self.annotated.emit(run_id, out, reference.info)
        except BaseException as exc:  # noqa: BLE001
            self.failed.emit(run_id, Failure.of(exc))
        self.finished.emit(run_id)

    @Slot()
    def shutdown(self) -> None:
        self._close_reference()
        self._close_engine()
        # Quit from here, not from the GUI: a quit() posted while a slot runs can end the loop before a queued
        # shutdown request is delivered, and the engine would then never be closed on its own thread.
        QThread.currentThread().quit()

    # -- helpers ---------------------------------------------------------------------------------------------------
    def _require_engine(self) -> EngineLike:
        if self._engine is None:
            raise ExplorerError("No model is loaded: pick a model first.")
        return self._engine

    def _open_reference(self) -> None:
        from explorer.core.reference.exact_copy import cached_exact_copy
        from explorer.core.reference.policy import ReferencePolicy, ReferenceSpec

        engine = self._engine
        try:
            if engine is None:
                raise ExplorerError("No model is loaded: load the policy before choosing its reference.")
            if engine.info.server_url is None and not hasattr(engine, "teacher_force"):
                raise ExplorerError("A reference policy needs a local GGUF model or a server's: this engine gives "
                                    "no logits rows, and the KL is computed over the whole vocabulary.")
            spec = ReferenceSpec.parse(self._reference_spec)
            _path, n_gpu_layers, n_ctx, exact = self._loaded_with
            self._reference = ReferencePolicy(
                spec, engine, lambda path: self._factory(path, n_gpu_layers=n_gpu_layers, n_ctx=n_ctx, exact=exact),
                cached_exact_copy, lambda done, total: self._progress("Writing the exact float copy", done, total))
        except BaseException as exc:  # noqa: BLE001
            self._reference_spec = None
            self.reference_policy_failed.emit(Failure.of(exc))
            return
        self.reference_policy_ready.emit(self._reference.info, engine.info)

    def _progress(self, what: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done >= total or now - self._progress_at >= PROGRESS_INTERVAL_S:
            self._progress_at = now
            self.reference_policy_progress.emit(what, done, total)

    def _close_reference(self) -> None:
        reference, self._reference = self._reference, None
        _close_keeping_on("the reference policy", reference)

    def _close_engine(self) -> None:
        engine, self._engine = self._engine, None
        _close_keeping_on("the engine", engine)

    def _stream(self, run_id: int, start: Callable[[EngineLike, dict], Iterable], reference=None,
                top_n: int = 0) -> None:
        pending: list = []
        last_emit = time.monotonic()
        follower = None
        try:
            engine = self._require_engine()
            # the reference in use follows the run when it is the one the window expects (it may have been changed
            # since the run was asked for; the window then evaluates the rollouts after the run)
            if (reference is not None and self._reference is not None and self._reference.info == reference
                    and self._reference.follows_runs):
                follower = self._reference.lockstep(top_n)
            for event in start(engine, {"follower": follower} if follower is not None else {}):
                pending.append(event)
                now = time.monotonic()
                # RunStarted goes out at once so the panes appear before the first tokens
                if isinstance(event, RunStarted) or now - last_emit >= EMIT_INTERVAL_S:
                    self.events.emit(run_id, tuple(pending))
                    pending.clear()
                    last_emit = now
        except BaseException as exc:  # noqa: BLE001
            if pending:  # what was generated before the failure is kept
                self.events.emit(run_id, tuple(pending))
                pending.clear()
            self.failed.emit(run_id, Failure.of(exc))
        finally:
            if follower is not None:
                follower.close()
        if pending:
            self.events.emit(run_id, tuple(pending))
        self.finished.emit(run_id)


class EngineHost(QObject):
    """The GUI side: owns the QThread and the worker, hands out run ids and cancel events.

    Requests are queued signals to the worker, so they run in order on the worker thread; a run asked for while
    another streams cancels the old one first, so the new one starts as soon as the old loop has ended.
    """

    # The worker's signals, re-emitted here on the GUI thread (signal-to-signal connections to an object of the
    # GUI thread are queued), so whatever the GUI connects to them, lambdas included, runs on the GUI thread.
    model_loading = Signal(str)
    model_loaded = Signal(object)
    model_failed = Signal(object)
    events = Signal(int, object)
    scores_ready = Signal(int, str, object)
    prompt_formatted = Signal(int, object)
    failed = Signal(int, object)
    finished = Signal(int)
    reference_policy_ready = Signal(object, object)
    reference_policy_failed = Signal(object)
    reference_policy_progress = Signal(str, int, int)
    annotated = Signal(int, object, object)

    _load_requested = Signal(str, object, object, bool)
    _generate_requested = Signal(int, object, int, object, bool, object, object, object)
    _branch_requested = Signal(int, object, str, int, object, int, object, object, object)
    _score_requested = Signal(int, str, str, object, bool, object, int)
    _reference_requested = Signal(object)
    _annotate_requested = Signal(int, object, object)
    _shutdown_requested = Signal()

    def __init__(self, engine_factory: EngineFactory = default_engine_factory, parent: Optional[QObject] = None):
        super().__init__(parent)
        self._thread = QThread()
        self._thread.setObjectName("engine-worker")
        self.worker = EngineWorker(engine_factory)
        self.worker.moveToThread(self._thread)
        self._load_requested.connect(self.worker.load_model)
        self._generate_requested.connect(self.worker.generate)
        self._branch_requested.connect(self.worker.branch)
        self._score_requested.connect(self.worker.score)
        self._reference_requested.connect(self.worker.set_reference_policy)
        self._annotate_requested.connect(self.worker.annotate)
        self._shutdown_requested.connect(self.worker.shutdown)
        self._thread.finished.connect(self.worker.deleteLater)
        w = self.worker
        for source, target in ((w.model_loading, self.model_loading), (w.model_loaded, self.model_loaded),
                               (w.model_failed, self.model_failed), (w.events, self.events),
                               (w.scores_ready, self.scores_ready), (w.failed, self.failed),
                               (w.prompt_formatted, self.prompt_formatted),
                               (w.reference_policy_ready, self.reference_policy_ready),
                               (w.reference_policy_failed, self.reference_policy_failed),
                               (w.reference_policy_progress, self.reference_policy_progress),
                               (w.annotated, self.annotated),
                               (w.finished, self.finished)):
            source.connect(target)
        self._next_id = 0
        self._cancels: dict[int, threading.Event] = {}
        self._annotations: set[int] = set()  # the annotate requests not finished
        self.finished.connect(self._forget)
        self._thread.start()

    @property
    def thread(self) -> QThread:
        return self._thread

    def _new_run(self) -> tuple[int, threading.Event]:
        self._next_id += 1
        cancel = threading.Event()
        self._cancels[self._next_id] = cancel
        return self._next_id, cancel

    @Slot(int)
    def _forget(self, run_id: int) -> None:
        self._cancels.pop(run_id, None)
        self._annotations.discard(run_id)

    def is_alive(self) -> bool:
        return self._thread.isRunning()

    def load_model(self, path: str, n_gpu_layers: Optional[int] = None, n_ctx: Optional[int] = None,
                   exact: bool = True) -> None:
        self._load_requested.emit(str(path), n_gpu_layers, n_ctx, exact)

    def generate(self, queries: Sequence[Query | str], k: int, params: SamplingParams, chat: bool = True,
                 system: Optional[str] = None, reference=None) -> int:
        """reference: the ReferenceInfo to compare the tokens with as they are sampled, if it is still the one the
        worker has in use when the run starts."""
        self.stop_all()
        run_id, cancel = self._new_run()
        self._generate_requested.emit(run_id, tuple(queries), k, params, chat, system, cancel, reference)
        return run_id

    def branch(self, group: QueryGroup, rollout_id: str, position: int, forced_token: Optional[int], k: int,
               params: SamplingParams, reference=None) -> int:
        self.stop_all()
        run_id, cancel = self._new_run()
        self._branch_requested.emit(run_id, group, rollout_id, position, forced_token, k, params, cancel, reference)
        return run_id

    def score(self, group_id: str, query: str, responses: Sequence[str], chat: bool = True,
              system: Optional[str] = None, top_n: int = 5) -> int:
        run_id, _ = self._new_run()
        self._score_requested.emit(run_id, group_id, query, tuple(responses), chat, system, top_n)
        return run_id

    def set_reference_policy(self, spec: Optional[str]) -> None:
        """The reference policy from now on (ReferenceSpec text; None: none). Evaluations going are cancelled (they
        were for the reference before); a run streaming goes on, and is evaluated when it ends."""
        for run_id in self._annotations:
            self.stop(run_id)
        self._reference_requested.emit(spec)

    def annotate(self, groups: Sequence[QueryGroup]) -> int:
        """Evaluate finished groups under the reference in use; cancelled like a run by the next generate, branch
        or reference."""
        run_id, cancel = self._new_run()
        self._annotations.add(run_id)
        self._annotate_requested.emit(run_id, tuple(groups), cancel)
        return run_id

    def stop(self, run_id: int) -> None:
        cancel = self._cancels.get(run_id)
        if cancel is not None:
            cancel.set()

    def stop_all(self) -> None:
        for cancel in self._cancels.values():
            cancel.set()

    def shutdown(self, timeout_ms: int = 2000) -> bool:
        """Cancel everything, close the engine on its thread, end the thread. False if it did not end in time
        (a model load cannot be interrupted); the caller must then keep this object alive until it does."""
        if not self._thread.isRunning():
            return True
        self.stop_all()
        self._shutdown_requested.emit()  # the worker closes the engine, then ends its thread's event loop
        return self._thread.wait(timeout_ms)

    def wait(self, timeout_ms: Optional[int] = None) -> bool:
        return self._thread.wait() if timeout_ms is None else self._thread.wait(timeout_ms)


_LINGERING: list[EngineHost] = []


def keep_until_finished(host: EngineHost) -> None:
    """Hold a host whose thread did not end in time (a model load cannot be interrupted): destroying a running
    QThread aborts the process, so it is kept referenced until wait_for_lingering() has seen it end."""
    _LINGERING.append(host)


def wait_for_lingering(timeout_ms: int = 30_000) -> bool:
    """Wait for held hosts' threads to end; True when none is left running."""
    deadline = time.monotonic() + timeout_ms / 1000
    for host in list(_LINGERING):
        left = max(0, int((deadline - time.monotonic()) * 1000))
        if host.wait(left):
            _LINGERING.remove(host)
    return not _LINGERING
