"""Memory figures for large inputs (issue 12), each in a fresh process so peaks do not mix:

  - loading a large rollout set: the streaming loader against the whole-parse baseline (json.loads of the file, then
    the same checks and conversion on the dict tree), as peak RSS over the file size;
  - `rollout-explorer export-jsonl` of that file (streams a group at a time);
  - `rollout-explorer generate` of 200 rollouts x 256 tokens on the default model, against the same command
    generating 1 token (the model and the runtime alone).

Peaks are each child's own VmHWM (see _peak_mb), not timers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SET_MB = float(os.environ.get("BENCH_SET_MB", 60))

_LOAD = "import sys; from explorer.core import export; export.load(sys.argv[1])"
_WHOLE = ("import json, sys; from explorer.core import export; d = json.loads(open(sys.argv[1], encoding='utf-8')"
          ".read()); export.validate(d); export.from_dict(d)")
_IMPORTS = "import json, jsonschema; from explorer.core import export; export._validators()"


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

    from explorer.core import export

    # 16 rollouts x 256 tokens x top-5 is ~2.3 MB per group
    export.save(synthetic_set(max(1, round(target_mb / 2.3)), 16, 256), path)


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
        generate = [py, "-m", "explorer", "generate", "-q", "Tell me about the oceans.", "--seed", "1", "-o",
                    str(Path(tmp) / "g.json")]
        try:
            alone = _peak_mb(generate + ["-k", "1", "--max-tokens", "1"])
            peak = _peak_mb(generate + ["-k", "200", "--max-tokens", "256"])
        except RuntimeError as exc:  # no default model installed
            rows.append({"case": "generate 200 x 256", "input MB": "-", "peak RSS MB": f"skipped: {exc}"})
        else:
            out_mb = (Path(tmp) / "g.json").stat().st_size / 2**20
            rows.append({"case": "generate 200 x 256 (default model)", "input MB": f"{out_mb:.1f} written",
                         "peak RSS MB": round(peak), "peak / file": "-",
                         "(peak - imports) / file": f"{peak - alone:.0f} MB over 1 token ({alone:.0f} MB)"})
    return rows
