"""Memory figures for large inputs (issue 12), each in a fresh process so peaks do not mix:

  - loading a large rollout set: the streaming loader against the whole-parse baseline (json.loads of the file, then
    the same checks and conversion on the dict tree), as peak RSS over the file size;
  - `rollout-explorer export-jsonl` of that file (streams a group at a time);
  - `rollout-explorer generate` of 200 rollouts x 256 tokens (8 queries x k=25, the tiny GGUF unless
    BENCH_CLI_MODEL=default), against the same command generating 1 token (the model and the runtime alone);
  - 20 consecutive runs in one window (run_window_soak): memory after each.

Peaks are each child's own VmHWM (see _peak_mb), not timers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
SET_MB = float(os.environ.get("BENCH_SET_MB", 60))

_LOAD = "import sys; from explorer.core.files import export; export.load(sys.argv[1])"
_WHOLE = ("import json, sys; from explorer.core.files import export; d = json.loads(open(sys.argv[1], encoding='utf-8')"
          ".read()); export.validate(d); export.from_dict(d)")
_IMPORTS = "import json, jsonschema; from explorer.core.files import export; export._validators()"


_HWM = ("import atexit, os\n"
        "def _hwm():\n"
        "    with open('/proc/self/status') as f, open(os.environ['BENCH_HWM_FILE'], 'w') as out:\n"
        "        out.write(next(line.split()[1] for line in f if line.startswith('VmHWM:')))\n"
        "atexit.register(_hwm)\n")


def _peak_mb(args: list[str]) -> float:
    """The child's own peak resident set (VmHWM, per address space). Not its rusage: Linux carries a process's
    maximum RSS across exec, so every child would report at least this (large) benchmark process's size."""
    with tempfile.NamedTemporaryFile("r", suffix=".hwm") as hwm:
        env = dict(os.environ, PYTHONPATH=str(ROOT), QT_QPA_PLATFORM="offscreen", BENCH_HWM_FILE=hwm.name)
        if args[1] == "-c":
            args = [args[0], "-c", _HWM + args[2], *args[3:]]
        else:  # -m module ...: run it under the same hook
            args = [args[0], "-c", _HWM + "import runpy, sys; sys.argv = sys.argv[1:]; "
                    "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)", *args[2:]]
        proc = subprocess.run(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              errors="replace")
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args[-4:])} exited {proc.returncode}: {proc.stderr[-300:]}")
        return int(hwm.read()) / 1024  # kB


def _write_set(path: Path, target_mb: float) -> None:
    sys.path.insert(0, str(ROOT / "tests" / "reliability"))
    from synthetic import synthetic_set

    from explorer.core.files import export

    # 16 rollouts x 256 tokens x top-5 is ~2.3 MB per group
    export.save(synthetic_set(max(1, round(target_mb / 2.3)), 16, 256), path)


def _model(directory: Path, which: Optional[str]) -> str:
    if which == "default":
        from explorer.core.models.discovery import default_model_path

        return str(default_model_path())
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_gguf import write_tiny_gguf

    return str(write_tiny_gguf(directory / "tiny.gguf"))


def run_reliability_bench() -> list[dict]:
    rows = []
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "large.json"
        _write_set(path, SET_MB)
        size_mb = path.stat().st_size / 2**20
        interpreter = _peak_mb([py, "-c", _IMPORTS])
        for case, args in (("load (streaming)", [py, "-c", _LOAD, str(path)]),
                           ("load (whole-parse baseline)", [py, "-c", _WHOLE, str(path)]),
                           ("export-jsonl", [py, "-m", "explorer", "export-jsonl", str(path), "-o",
                                             str(Path(tmp) / "o.jsonl")])):
            peak = _peak_mb(args)
            rows.append({"case": case, "input MB": round(size_mb, 1), "peak RSS MB": round(peak),
                         "peak / file": round(peak / size_mb, 2),
                         "(peak - imports) / file": round((peak - interpreter) / size_mb, 2)})
        # the tiny GGUF by default: the figure is about what the run keeps, and the default model's KV cache for
        # 200 parallel sequences (~1.2 GB at 51k cells) would hide it; BENCH_CLI_MODEL=default for that one
        model = _model(Path(tmp), os.environ.get("BENCH_CLI_MODEL"))
        queries = Path(tmp) / "q.txt"
        queries.write_text("".join(f"Question number {i}: tell me about the oceans.\n" for i in range(8)))
        generate = [py, "-m", "explorer", "generate", "--model", model, "--queries", str(queries), "--seed", "1",
                    "--temperature", "1.5", "-o", str(Path(tmp) / "g.json")]
        alone = _peak_mb(generate + ["-k", "1", "--max-tokens", "1"])
        peak = _peak_mb(generate + ["-k", "25", "--max-tokens", "256"])
        out_mb = (Path(tmp) / "g.json").stat().st_size / 2**20
        rows.append({"case": f"generate 8 queries x k=25 x 256 tokens ({Path(model).name})",
                     "input MB": f"{out_mb:.1f} written", "peak RSS MB": round(peak),
                     "peak / file": round(peak / out_mb, 2),
                     "(peak - imports) / file": f"{(peak - alone) / out_mb:.2f} over a 1-token run ({alone:.0f} MB)"})
    return rows


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return int(next(line.split()[1] for line in f if line.startswith("VmRSS:"))) / 1024


def run_window_soak(runs: int = 20, k: int = 16, n_tokens: int = 128) -> list[dict]:
    """`runs` consecutive runs of k x n_tokens for one query in one offscreen window (the tiny GGUF, or the default
    model with BENCH_SOAK_MODEL=default): resident memory after each run, once Python's garbage is collected.
    Target: after the last run within 5% of after the second (each run replaces the last one's set, trees and
    panes; nothing may pile up)."""
    import gc

    from PySide6.QtCore import QEventLoop, QSettings, QTimer
    from PySide6.QtWidgets import QApplication

    from explorer.gui.window.main_window import MainWindow
    from explorer.gui.run.worker import default_engine_factory

    app = QApplication.instance() or QApplication([])
    errors: list[str] = []
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        model = _model(Path(tmp), os.environ.get("BENCH_SOAK_MODEL"))
        window = MainWindow(default_engine_factory, settings=QSettings(os.path.join(tmp, "s.ini"),
                                                                       QSettings.Format.IniFormat),
                            show_error=lambda t, m: errors.append(f"{t}: {m}"), ask=lambda *_: True,
                            recovery_dir=os.path.join(tmp, "recovery"), discover=None, persist=False)
        window.resize(1280, 800)
        window.show()
        loop = QEventLoop()
        window.model_ready.connect(lambda _info: loop.quit())
        window.model_load_failed.connect(lambda msg: (errors.append(str(msg)), loop.quit()))
        window.load_model(model)
        loop.exec()
        window.controls.set_queries(["Tell me about the oceans."])
        window.controls.k_spin.setValue(k)
        window.controls.max_tokens.setValue(n_tokens)
        window.run_done.connect(lambda *_: loop.quit())
        rss = []
        try:
            for _ in range(runs):
                if errors or window.run() is None:
                    raise RuntimeError(f"the window refused a run: {errors}")
                QTimer.singleShot(600_000, loop.quit)
                loop.exec()
                app.processEvents()
                gc.collect()
                rss.append(_rss_mb())
        finally:
            window.close()
            app.processEvents()
    growth = 100 * (rss[-1] - rss[1]) / rss[1]
    return [{"case": f"{runs} runs of k={k} x {n_tokens} in one window ({Path(model).name})",
             "RSS after run 1 MB": round(rss[0]), "after run 2": round(rss[1]), "after the last": round(rss[-1]),
             "last vs 2nd": f"{growth:+.1f}% ({'ok' if abs(growth) <= 5 else 'over'} the 5% target)",
             "every run": " ".join(f"{v:.0f}" for v in rss)}]


def run_signal_exit_bench(tries: int = 3) -> list[dict]:
    """SIGINT and SIGTERM to the window while a run streams (the tiny GGUF): seconds from the signal to the process's
    exit, and its status. Target: within 2 s, status 128 + the signal."""
    import signal
    import statistics
    import time

    sys.path.insert(0, str(ROOT / "tests" / "reliability"))
    from window_process import start_streaming_window

    rows = []
    with tempfile.TemporaryDirectory(prefix="signals-") as tmp:
        model = Path(_model(Path(tmp), None))
        for signum in (signal.SIGINT, signal.SIGTERM):
            times, codes = [], set()
            for i in range(tries):
                proc, journal = start_streaming_window(Path(tmp) / f"{signum}-{i}", model)
                if journal is None:
                    raise RuntimeError("the window's run never reached its journal")
                sent = time.monotonic()
                proc.send_signal(signum)
                codes.add(proc.wait(timeout=60))
                times.append(time.monotonic() - sent)
                proc.stderr.close()
            rows.append({"case": f"{signal.Signals(signum).name} mid-run ({tries} tries)",
                         "median s": round(statistics.median(times), 2), "max s": round(max(times), 2),
                         "exit status": " ".join(map(str, sorted(codes))),
                         "target": f"<= 2 s, status {128 + signum}"})
    return rows
