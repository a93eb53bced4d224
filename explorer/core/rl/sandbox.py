"""A user's reward file runs in a child process of its own, so that a reward() that never returns is stopped after a
time limit (that rollout's reward is null, with the reason) and one that allocates without limit hits a memory cap in
the child (MemoryError, or the child dies) instead of taking the app down.

The child is this module run as a script: stdlib only, so it starts in ~50 ms. It imports the file once, checks it
defines reward(query, response, reference), then answers one JSON line per call on a private pipe (the user's
print() goes to stderr, never into the protocol). A child that timed out or died is replaced for the next call.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import math
import numbers
import os
import select
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Optional

TIME_LIMIT_S = 10.0  # per rollout
IMPORT_LIMIT_S = 30.0  # importing the file (it may import heavy libraries)
MEMORY_LIMIT_BYTES = 2 << 30  # address space of the child


class SandboxError(Exception):
    """Carries a one-line reason up to rewards.py, which turns it into RewardError (a user-facing error)."""


def one_line(e: BaseException, limit: int = 200) -> str:
    text = " ".join(f"{type(e).__name__}: {e}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def checked_value(value: Any) -> tuple[Optional[float], Optional[str]]:
    """(reward, None) for a finite real number (bool counts: True is 1.0), else (None, why)."""
    if not isinstance(value, numbers.Real):
        return None, f"reward() returned {type(value).__name__}, not a number"
    try:
        value = float(value)
    except (OverflowError, ValueError) as e:
        return None, f"reward() returned a number that is not a float ({one_line(e)})"
    if not math.isfinite(value):
        return None, f"reward() returned {value}, not a finite number"
    return value, None


# -- the child -------------------------------------------------------------------------------------------------------


def _import_reward(path: str):
    """The file's reward function, or raises SandboxError with the reason (the parent adds the file's name)."""
    spec = importlib.util.spec_from_file_location("_rollout_explorer_reward", path)
    if spec is None or spec.loader is None:
        raise SandboxError("cannot be imported as Python")
    module = importlib.util.module_from_spec(spec)
    # in sys.modules because dataclasses and pickling in the user's file look their module up there
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        raise SandboxError(f"syntax error at line {e.lineno}: {e.msg}") from None
    except BaseException as e:  # the user's module code may raise anything, SystemExit included
        raise SandboxError(f"importing it failed: {one_line(e)}") from None
    fn = getattr(module, "reward", None)
    if fn is None:
        raise SandboxError("does not define reward(query, response, reference)")
    if not callable(fn):
        raise SandboxError(f"'reward' is a {type(fn).__name__}, not a function")
    try:
        inspect.signature(fn).bind("query", "response", "reference")
    except TypeError:
        raise SandboxError("reward() must accept (query, response, reference)") from None
    except ValueError:
        pass  # no signature to inspect (some builtins): find out when it is called
    return fn


def _child(path: str, memory_limit: int) -> None:
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # the user's print() goes to stderr
    sys.stdout = sys.stderr
    if memory_limit > 0:
        try:
            import resource

            resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))
        except (ImportError, ValueError, OSError):
            pass  # no limit on this platform: the time limit still holds

    def send(message: dict) -> None:
        protocol.write(json.dumps(message) + "\n")
        protocol.flush()

    try:
        fn = _import_reward(path)
    except SandboxError as e:
        send({"load_error": str(e)})
        return
    send({"ready": True})
    for line in sys.stdin:
        call = json.loads(line)
        try:
            value, error = checked_value(fn(call["query"], call["response"], call["reference"]))
        except MemoryError:
            value, error = None, f"reward() ran out of memory (the limit is {memory_limit >> 20} MiB)"
        except (Exception, SystemExit) as e:  # a user file that calls sys.exit() must not end the run
            value, error = None, f"reward() raised {one_line(e)}"
        send({"value": value, "error": error})


# -- the parent ------------------------------------------------------------------------------------------------------


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for stream in (proc.stdin, proc.stdout):
        try:
            stream.close()
        except OSError:
            pass


class Sandbox:
    """One reward file behind a child process. call() is thread-safe (calls are serialised)."""

    def __init__(self, path: Path, time_limit_s: float = TIME_LIMIT_S, memory_limit: int = MEMORY_LIMIT_BYTES):
        self.path = path
        self.time_limit_s = time_limit_s
        self.memory_limit = memory_limit
        self._lock = threading.Lock()
        self._proc: Optional[subprocess.Popen] = None
        self._buffer = b""
        self._finalizer = None
        self._start()  # imports the file now: a broken file is refused when it is picked, not at the first rollout

    def _start(self) -> None:
        # -c puts the reward file's folder (the cwd) on sys.path, as a user expects for its own helper modules, and
        # not this module's folder, whose types.py would shadow the standard library's
        boot = "import runpy, sys; runpy.run_path(sys.argv[1], run_name='__main__')"
        proc = subprocess.Popen([sys.executable, "-c", boot, str(Path(__file__).resolve()), str(self.path),
                                 str(self.memory_limit)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=self.path.parent,
                                start_new_session=True)  # a Ctrl-C in the terminal goes to us, not the child
        self._proc, self._buffer = proc, b""
        if self._finalizer is not None:
            self._finalizer.detach()
        self._finalizer = weakref.finalize(self, _kill, proc)
        reply = self._read(IMPORT_LIMIT_S)
        if reply is None:
            self._stop()
            raise SandboxError(f"importing it did not finish within {IMPORT_LIMIT_S:.0f} s")
        if "load_error" in reply:
            self._stop()
            raise SandboxError(reply["load_error"])

    def _stop(self) -> None:
        if self._finalizer is not None:
            self._finalizer()
        self._proc = None

    def close(self) -> None:
        with self._lock:
            self._stop()

    def _read(self, limit_s: float) -> Optional[dict]:
        """The child's next reply; None when it does not come within limit_s; SandboxError when the child died."""
        proc = self._proc
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + limit_s
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            data = os.read(fd, 1 << 16)
            if not data:
                code = proc.wait()
                why = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
                if code == -9:
                    why += " (out of memory?)"
                raise SandboxError(f"the reward process {why}")
            self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        return json.loads(line)

    def call(self, query: str, response: str, reference: Optional[str]) -> tuple[Optional[float], Optional[str]]:
        """(reward, None) or (None, why); never raises for what the user's function does."""
        with self._lock:
            if self._proc is None:
                try:
                    self._start()
                except SandboxError as e:
                    return None, f"the reward file cannot be used any more: {e}"
            # ensure_ascii: a lone surrogate in a response travels as an escape
            message = json.dumps({"query": query, "response": response, "reference": reference}) + "\n"
            try:
                self._proc.stdin.write(message.encode("ascii"))
                self._proc.stdin.flush()
                reply = self._read(self.time_limit_s)
            except (BrokenPipeError, SandboxError) as e:
                self._stop()
                return None, str(e) if isinstance(e, SandboxError) else "the reward process has exited"
            if reply is None:
                self._stop()  # the next call starts a fresh child
                return None, f"reward() did not return within {self.time_limit_s:g} s (the limit per rollout)"
            return reply["value"], reply["error"]


if __name__ == "__main__":
    _child(sys.argv[-2], int(sys.argv[-1]))
