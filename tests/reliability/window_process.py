"""The real window as a separate process, started as a user would (offscreen, the given model, a run streaming),
with its settings and recovery journal under a folder of its own. Shared by the signal tests and the benchmark."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from explorer.core.errors import RolloutFileError
from explorer.core.files.journal import read_journal

ROOT = Path(__file__).resolve().parents[2]


def journal_tokens(path: Path) -> int:
    """Tokens the journal holds now (0 before its checkpoint is written)."""
    try:
        rs = read_journal(path)
    except RolloutFileError:
        return 0
    return sum(len(r.tokens) for g in rs.groups for r in g.rollouts)


def start_streaming_window(folder: Path, model: Path, timeout_s: float = 120.0
                           ) -> tuple[subprocess.Popen, Optional[Path]]:
    """The window process once its recovery journal holds streamed tokens, and the journal's path (None, with the
    process killed, when no token reached it within timeout_s)."""
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", XDG_DATA_HOME=str(folder / "data"),
               XDG_CONFIG_HOME=str(folder / "config"), XDG_CACHE_HOME=str(folder / "cache"),
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.Popen([sys.executable, "-m", "explorer", "gui", "--model", str(model), "--run",
                             "-q", "the ocean", "-q", "a sea", "-k", "32", "--max-tokens", "900"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:  # polling another process's file: no signal to wait on
        found = list((folder / "data").rglob("recovery.journal"))
        if found and journal_tokens(found[0]) > 0:
            return proc, found[0]
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    return proc, None
