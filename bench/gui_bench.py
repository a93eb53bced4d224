"""Window responsiveness while streaming: the longest event-loop stall during a real run (issue 3, section 9).

An offscreen MainWindow loads the default model with the real engine (through its worker thread, as in the app) and
streams k=8 rollouts for 2 queries. A 5 ms QTimer probe stamps every tick it gets; the gap between two stamps is how
long the GUI thread could not serve its event loop. Target: the longest gap at 30 ms or less.

Attribution, without timing code in the product: the bench wraps some of the window's methods on the instance
(drain, panes / tree / side plot refresh) with perf_counter, and its QApplication subclass times every event delivered
to the GUI thread (notify; only when this module creates the QApplication), so the longest gaps can be traced to what
ran inside them. Linux's schedstat splits the worst gap into the GUI thread's CPU time, its time waiting for a CPU
(a busy machine) and the rest (blocked: the GIL, a lock).

`run_cpu_share(...)` streams k = 64 rollouts of one query in the same window and sets the GUI thread's CPU time
against the engine's (every other thread of the process: the worker and llama.cpp's), target at most a tenth: on a
2-core machine every cycle the window spends is taken from decoding. Run with --cpu-share.

`run_gui_bench(...)` returns rows of {case, max_ms, p50_ms, p99_ms, note}: one per run, the best and the worst run,
then each timed step over all runs. The machine may be shared: several runs are made and the load average is noted.
Run this file to print the table (--verbose: the five longest gaps of each run and what ran inside them, and the time
per kind of event; --deep: pyqtgraph's paint calls too).
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Optional

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

TARGET_MS = 30.0
PROBE_MS = 5
QUERIES = ("Explain in detail how a steam engine works, step by step.",
           "Write a short story about a lighthouse keeper and a storm.")
SLOW_EVENT_MS = 3.0  # events delivered on the GUI thread that took longer than this are kept for attribution


def _sched_reader() -> Callable[[], tuple[float, float]]:
    """(CPU ms, ms spent waiting for a CPU) of the calling thread so far, from Linux's schedstat; zeros elsewhere."""
    path = f"/proc/self/task/{threading.get_native_id()}/schedstat"
    if not os.path.exists(path):
        return lambda: (0.0, 0.0)

    def read() -> tuple[float, float]:
        with open(path) as f:
            run_ns, wait_ns, _ = f.read().split()
        return int(run_ns) / 1e6, int(wait_ns) / 1e6

    return read


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(round(q / 100.0 * (len(ordered) - 1)))))
    return ordered[index]


class _Recorder:
    """Timed spans on the GUI thread: (name, start, end) in seconds of its clock: perf_counter (wall), or the
    thread's own CPU time (time.thread_time: what a step costs, not what it waited for, a GIL the engine holds)."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        self.clock = clock
        self.spans: list[tuple[str, float, float]] = []
        self.gui_thread = threading.get_ident()
        self.depth = 0
        self.totals: Optional[dict] = None  # event name -> (count, total ms), when asked for

    def wrap(self, obj, name: str, label: str) -> None:
        """Time obj.name from now on (nothing, when the window has no such step: its parts move)."""
        original = getattr(obj, name, None)
        if original is None:
            return

        def timed(*args, **kwargs):
            t0 = self.clock()
            try:
                return original(*args, **kwargs)
            finally:
                self.spans.append((label, t0, self.clock()))

        setattr(obj, name, timed)


def _make_app(recorder: _Recorder, timed_events: bool = True):
    from PySide6.QtCore import QEvent
    from PySide6.QtWidgets import QApplication

    if not timed_events:  # a Python notify() on every event costs the GUI thread CPU of its own
        return QApplication.instance() or QApplication(sys.argv[:1])

    class TimedApp(QApplication):
        """Times each event delivered on the GUI thread (outermost deliveries only: nested ones sit inside)."""

        def notify(self, receiver, event):  # noqa: N802 (Qt override)
            if threading.get_ident() != recorder.gui_thread or recorder.depth:
                return super().notify(receiver, event)
            recorder.depth += 1
            t0 = time.perf_counter()
            try:
                return super().notify(receiver, event)
            finally:
                t1 = time.perf_counter()
                recorder.depth -= 1
                if recorder.totals is not None or (t1 - t0) * 1000.0 >= SLOW_EVENT_MS:
                    kind = QEvent.Type(event.type()).name if hasattr(QEvent.Type(event.type()), "name") \
                        else str(int(event.type()))
                    name = f"event {kind} -> {type(receiver).__name__}"
                    if (t1 - t0) * 1000.0 >= SLOW_EVENT_MS:
                        recorder.spans.append((name, t0, t1))
                    if recorder.totals is not None:
                        count, total = recorder.totals.get(name, (0, 0.0))
                        recorder.totals[name] = (count + 1, total + (t1 - t0) * 1000.0)

    return QApplication.instance() or TimedApp(sys.argv[:1])


def _wait(app, done: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            return False
        app.processEvents()
        time.sleep(0.001)
    return True


def _one_run(window, recorder: _Recorder, k: int, n_tokens: int, timeout_s: float, verbose: bool) -> dict:
    """One run streamed to the end while the probe ticks; the gaps and the spans inside the run's window of time."""
    from PySide6.QtCore import QEventLoop, QTimer

    stamps: list[float] = []
    sched: list[tuple[float, float]] = []
    read_sched = _sched_reader()

    def tick():
        stamps.append(time.perf_counter())
        sched.append(read_sched())

    probe = QTimer()
    probe.setInterval(PROBE_MS)
    probe.timeout.connect(tick)
    loop = QEventLoop()
    finished: list = []

    def on_done(cancelled, failed):
        finished.append((cancelled, failed))
        loop.quit()

    window.run_done.connect(on_done)
    QTimer.singleShot(int(timeout_s * 1000), loop.quit)
    window.controls.k_spin.setValue(k)
    window.controls.max_tokens.setValue(n_tokens)
    recorder.spans.clear()
    if recorder.totals is not None:
        recorder.totals.clear()
    probe.start()
    tick()
    t_start = stamps[0]
    run_id = window.run()
    if run_id is None:
        raise RuntimeError("the window refused to run (see its error dialog text above)")
    loop.exec()
    tick()
    t_end = stamps[-1]
    probe.stop()
    window.run_done.disconnect(on_done)
    if not finished:
        raise RuntimeError(f"the run did not finish within {timeout_s:.0f} s")
    gaps = [(stamps[i + 1] - stamps[i]) * 1000.0 for i in range(len(stamps) - 1)]
    worst_at = max(range(len(gaps)), key=gaps.__getitem__)
    g0, g1 = stamps[worst_at], stamps[worst_at + 1]
    inside = sorted(((n, (e - s) * 1000.0) for n, s, e in recorder.spans if s >= g0 - 1e-4 and e <= g1 + 1e-4),
                    key=lambda item: -item[1])
    tokens = window.session.tokens_done if window.session is not None else 0
    if recorder.totals:
        print("  event time by kind (count, total ms):", file=sys.stderr)
        for name, (count, total) in sorted(recorder.totals.items(), key=lambda kv: -kv[1][1])[:14]:
            print(f"    {name:60} {count:6d} {total:9.1f}", file=sys.stderr)
    if verbose:  # the five longest gaps of the run and what ran inside each
        for i in sorted(range(len(gaps)), key=gaps.__getitem__)[-5:]:
            a, b = stamps[i], stamps[i + 1]
            spans = sorted(((n, s - a, (e - s) * 1000.0) for n, s, e in recorder.spans if s >= a - 1e-4
                            and e <= b + 1e-4), key=lambda item: item[1])
            print(f"  gap {gaps[i]:.1f} ms at {a - t_start:.2f} s, CPU {sched[i + 1][0] - sched[i][0]:.0f} ms: "
                  + "; ".join(f"+{at * 1000:.0f} {n} {ms:.1f}" for n, at, ms in spans), file=sys.stderr)
    # where the worst gap went: the GUI thread running, waiting for a CPU, or neither (blocked: the GIL, a lock)
    cpu = sched[worst_at + 1][0] - sched[worst_at][0]
    runq = sched[worst_at + 1][1] - sched[worst_at][1]
    split = (cpu, runq, max(0.0, gaps[worst_at] - cpu - runq))
    total_cpu = sched[-1][0] - sched[0][0]
    return {"gaps": gaps, "wall_s": t_end - t_start, "tokens": tokens, "spans": list(recorder.spans),
            "worst_split": split, "gui_cpu_s": total_cpu / 1000.0,
            "worst_gap_at_s": g0 - t_start, "worst_gap_inside": inside[:6], "cancelled_failed": finished[0]}


def _time_plot_paints(recorder: _Recorder, label: str):
    """Time every pyqtgraph view's paint (class-wide), each span named after the widget holding the view; returns
    the original paintEvent."""
    import pyqtgraph as pg

    view_paint = pg.GraphicsView.paintEvent

    def timed_view_paint(view, *args):
        t0 = recorder.clock()
        try:
            return view_paint(view, *args)
        finally:
            owner = type(view.parentWidget()).__name__ if view.parentWidget() is not None else "?"
            recorder.spans.append((f"{label} {owner}", t0, recorder.clock()))

    pg.GraphicsView.paintEvent = timed_view_paint
    return view_paint


def _wrap_pyqtgraph(recorder: _Recorder) -> None:
    """Time pyqtgraph's paint entry points too (class-wide: every plot of the window)."""
    import pyqtgraph as pg

    for cls, name in ((pg.GraphicsView, "resizeEvent"), (pg.ViewBox, "prepareForPaint"),
                      (pg.PlotCurveItem, "paint"), (pg.ScatterPlotItem, "paint"), (pg.TextItem, "paint")):
        recorder.wrap(cls, name, f"pg {cls.__name__}.{name}")
    _time_plot_paints(recorder, "pg paint of")
    axis_paint = pg.AxisItem.paint

    def timed_axis_paint(axis, *args):
        fresh = axis.picture is None  # the axis regenerates its ticks and labels, else it replays them
        t0 = time.perf_counter()
        try:
            return axis_paint(axis, *args)
        finally:
            recorder.spans.append((f"pg AxisItem.paint {axis.orientation}{' (new ticks)' if fresh else ''}", t0,
                                   time.perf_counter()))

    pg.AxisItem.paint = timed_axis_paint


def _open_window(recorder: "_Recorder", model_path: Optional[str], deep: bool, queries=QUERIES,
                 timed_events: bool = True):
    """An offscreen MainWindow at the default size, the default model loaded through its worker thread, the queries
    set, and its refresh steps timed by the recorder. Returns (app, window, errors, tmp)."""
    from PySide6.QtCore import QSettings

    from explorer.core.models.discovery import default_model_path
    from explorer.gui.window.main_window import MainWindow
    from explorer.gui.run.worker import default_engine_factory

    app = _make_app(recorder, timed_events)
    if deep:
        _wrap_pyqtgraph(recorder)
    path = str(model_path or default_model_path())
    errors: list[str] = []
    tmp = tempfile.TemporaryDirectory(prefix="gui-bench-")
    settings = QSettings(os.path.join(tmp.name, "settings.ini"), QSettings.Format.IniFormat)
    window = MainWindow(default_engine_factory, settings=settings, show_error=lambda t, m: errors.append(f"{t}: {m}"),
                        ask=lambda *_: True, recovery_dir=os.path.join(tmp.name, "recovery"), discover=None,
                        persist=False)
    window.resize(1440, 900)
    window.show()
    app.processEvents()

    recorder.wrap(window, "drain", "drain (whole tick)")  # the refresh timer's tick calls self.drain()
    recorder.wrap(window.runs, "drain", "session feed (run_controller.drain)")
    if window.views.rollout_table is not None:
        recorder.wrap(window.views.rollout_table, "set_rollouts", "rollout_table.set_rollouts")
    recorder.wrap(window.views.panes, "refresh", "panes.refresh")
    recorder.wrap(window.views.panes, "show_group", "panes.show_group")
    if window.views.tree_view is not None:
        recorder.wrap(window.views.tree_view, "refresh", "tree_view.refresh")
        recorder.wrap(window.views.tree_view, "set_tree", "tree_view.set_tree")
        recorder.wrap(window.views.tree_view.icicle, "paint", "tree: icicle paint")
    if window.views.side_plot is not None:
        recorder.wrap(window.views.side_plot, "refresh", "side_plot.refresh")
    recorder.wrap(window, "_sync_tabs", "sync tabs")
    recorder.wrap(window.status, "update_run", "status.update_run")

    loaded = []
    window.model_ready.connect(lambda info: loaded.append(info))
    window.model_load_failed.connect(lambda msg: loaded.append(None))
    window.load_model(path)
    if not _wait(app, lambda: bool(loaded), 120) or loaded[0] is None:
        raise RuntimeError(f"cannot load the default model: {errors or 'timed out'}")
    window.controls.set_queries(list(queries))
    return app, window, errors, tmp


def run_gui_bench(k: int = 8, n_tokens: int = 96, runs: int = 3, model_path: Optional[str] = None,
                  timeout_s: float = 300.0, deep: bool = False, verbose: bool = False) -> list[dict]:
    """Stream `runs` runs of k rollouts x n_tokens for 2 queries in an offscreen window; one row per run (longest
    event-loop gap, p50, p99 of the probe's gaps), the best and the worst run, then each timed step."""
    recorder = _Recorder()
    if verbose:
        recorder.totals = {}
    app, window, errors, tmp = _open_window(recorder, model_path, deep)

    rows = []
    results = []
    try:
        for i in range(runs):
            load = os.getloadavg()[0]
            result = _one_run(window, recorder, k, n_tokens, timeout_s, verbose)
            if errors:
                raise RuntimeError("; ".join(errors))
            results.append(result)
            gaps = result["gaps"]
            cpu, runq, blocked = result["worst_split"]
            inside = ", ".join(f"{name} {ms:.1f}" for name, ms in result["worst_gap_inside"][:3]) or "-"
            verdict = "ok" if max(gaps) <= TARGET_MS else f"over the {TARGET_MS:.0f} ms target"
            rows.append({"case": f"run {i + 1}: longest stall (k={k})", "max_ms": max(gaps),
                         "p50_ms": _percentile(gaps, 50), "p99_ms": _percentile(gaps, 99),
                         "note": f"{verdict}; {result['tokens']} tokens in {result['wall_s']:.1f} s, {len(gaps)} "
                                 f"probe ticks, GUI thread CPU {result['gui_cpu_s']:.1f} s, load {load:.1f}; worst at "
                                 f"{result['worst_gap_at_s']:.2f} s = {cpu:.0f} ms CPU + {runq:.0f} waiting for a CPU "
                                 f"+ {blocked:.0f} blocked; inside: {inside}"})
    finally:
        window.close()
        app.processEvents()
        tmp.cleanup()

    by_max = sorted(rows, key=lambda r: r["max_ms"])
    rows.append({**by_max[0], "case": "best run: longest stall"})
    rows.append({**by_max[-1], "case": "worst run: longest stall"})
    for label in sorted({name for res in results for name, _, _ in res["spans"]}):
        times = [(e - s) * 1000.0 for res in results for n, s, e in res["spans"] if n == label]
        rows.append({"case": f"step: {label}", "max_ms": max(times), "p50_ms": _percentile(times, 50),
                     "p99_ms": _percentile(times, 99), "note": f"{len(times)} calls (events: only those >= "
                                                               f"{SLOW_EVENT_MS:.0f} ms)" if label.startswith("event")
                     else f"{len(times)} calls"})
    return rows


CPU_SHARE_TARGET = 0.10  # the window's thread at most a tenth of the engine's CPU time while a run streams


def _thread_cpu_ms() -> dict[int, tuple[str, float]]:
    """CPU ms so far of every thread of this process: tid -> (its name, ms), from Linux's schedstat."""
    out = {}
    base = "/proc/self/task"
    for tid in os.listdir(base):
        try:
            with open(f"{base}/{tid}/schedstat") as f:
                run_ns = int(f.read().split()[0])
            with open(f"{base}/{tid}/comm") as f:
                name = f.read().strip()
        except OSError:  # the thread ended meanwhile
            continue
        out[int(tid)] = (name, run_ns / 1e6)
    return out


def run_cpu_share(k: int = 64, n_tokens: int = 96, runs: int = 2, model_path: Optional[str] = None,
                  timeout_s: float = 600.0) -> list[dict]:
    """The window's thread against the engine while k rollouts stream (one query, real engine, offscreen window at
    1440x900): the CPU time of the GUI thread against that of every other thread of the process (the engine's
    worker thread and llama.cpp's; the journal's is negligible), per run, with the GUI time spent in each timed
    step. On 2 cores every cycle the window spends is one the decoding does not get."""
    if not os.path.isdir("/proc/self/task"):
        return [{"case": "window / engine CPU (needs Linux's /proc)", "gui_cpu_s": 0.0, "engine_cpu_s": 0.0,
                 "gui/engine": 0.0, "note": "skipped"}]
    from PySide6.QtCore import QEventLoop, QTimer

    import pyqtgraph as pg

    recorder = _Recorder(clock=time.thread_time)
    app, window, errors, tmp = _open_window(recorder, model_path, False, queries=QUERIES[:1], timed_events=False)
    view_paint = _time_plot_paints(recorder, "paint of")  # outside the drain: in the event loop's paint events
    # the window's other Python-side costs per repaint, class-wide (the table's model answers every cell and role
    # in Python; its preview column is painted by a Python delegate)
    from explorer.gui.panes.panes import RolloutPane
    from explorer.gui.views import rollout_table

    originals = [(cls, name, getattr(cls, name)) for cls, name in (
        (rollout_table.RolloutTableModel, "data"), (rollout_table._PreviewDelegate, "paint"),
        (RolloutPane, "paintEvent"))]
    for cls, name, _ in originals:
        recorder.wrap(cls, name, f"{cls.__name__}.{name}")
    gui = threading.get_native_id()
    rows = []
    try:
        for i in range(runs):
            window.controls.k_spin.setValue(k)
            window.controls.max_tokens.setValue(n_tokens)
            recorder.spans.clear()
            loop = QEventLoop()
            finished: list = []

            def on_done(cancelled, failed, finished=finished, loop=loop):
                finished.append((cancelled, failed))
                loop.quit()

            window.run_done.connect(on_done)
            QTimer.singleShot(int(timeout_s * 1000), loop.quit)
            load = os.getloadavg()[0]
            before, t0 = _thread_cpu_ms(), time.perf_counter()
            if window.run() is None:
                raise RuntimeError("the window refused to run (see its error dialog text above)")
            loop.exec()
            after, wall = _thread_cpu_ms(), time.perf_counter() - t0
            window.run_done.disconnect(on_done)
            if errors:
                raise RuntimeError("; ".join(errors))
            if not finished:
                raise RuntimeError(f"the run did not finish within {timeout_s:.0f} s")
            spent = {tid: (name, ms - before.get(tid, (name, 0.0))[1]) for tid, (name, ms) in after.items()}
            gui_ms = spent.pop(gui)[1]
            engine_ms = sum(ms for _, ms in spent.values())
            by_step: dict[str, float] = {}
            for name, start, end in recorder.spans:
                if not name.startswith("event"):
                    by_step[name] = by_step.get(name, 0.0) + (end - start) * 1000.0
            steps = ", ".join(f"{name} {ms / 1000:.2f} s" for name, ms in sorted(by_step.items(),
                                                                               key=lambda kv: -kv[1])[:9])
            ratio = gui_ms / engine_ms if engine_ms else 0.0
            verdict = "ok" if ratio <= CPU_SHARE_TARGET else f"over the {CPU_SHARE_TARGET:.0%} target"
            tokens = window.session.tokens_done if window.session is not None else 0
            rows.append({"case": f"run {i + 1}: window / engine CPU, k={k} x {n_tokens}", "gui_cpu_s": gui_ms / 1000,
                         "engine_cpu_s": engine_ms / 1000, "gui/engine": ratio,
                         "note": f"{verdict}; {tokens} tokens in {wall:.1f} s, load {load:.1f}; GUI thread CPU by "
                                 f"step (nested ones inside the drain): {steps}"})
    finally:
        pg.GraphicsView.paintEvent = view_paint
        for cls, name, original in originals:
            setattr(cls, name, original)
        window.close()
        app.processEvents()
        tmp.cleanup()
    return rows


def print_rows(rows: list[dict]) -> None:
    print(f"{'case':58} {'max ms':>8} {'p50 ms':>8} {'p99 ms':>8}  note")
    for row in rows:
        print(f"{row['case'][:58]:58} {row['max_ms']:>8.1f} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f}  {row['note']}")


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--deep", action="store_true", help="also time pyqtgraph's paint calls")
    parser.add_argument("--verbose", action="store_true", help="the longest gaps of each run, and what ran in them")
    parser.add_argument("--cpu-share", action="store_true",
                        help="the window's CPU time against the engine's while k rollouts stream (--k 64 by default)")
    args = parser.parse_args()
    if args.cpu_share:
        for row in run_cpu_share(k=64 if args.k == 8 else args.k, n_tokens=args.tokens, runs=args.runs):
            print(f"{row['case']:48} GUI {row['gui_cpu_s']:.2f} s  engine {row['engine_cpu_s']:.2f} s  "
                  f"ratio {row['gui/engine']:.3f}  {row['note']}")
        return
    print_rows(run_gui_bench(k=args.k, n_tokens=args.tokens, runs=args.runs, deep=args.deep, verbose=args.verbose))


if __name__ == "__main__":
    main()
