"""Shared pieces of the reliability suite: a small valid rollout set on disk, and unreadable files that stay
unreadable when the suite runs as root."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic import synthetic_set  # noqa: E402

from explorer.core import export  # noqa: E402


@pytest.fixture
def small_set_path(tmp_path) -> Path:
    path = tmp_path / "small.json"
    export.save(synthetic_set(2, 2, 3, top_n=2), path)
    return path


NOBODY = 65534


def outcome_as_nobody(call: Callable[[], object]) -> str:
    """The message of the exception call() raises ("ok" when none) for a user who is not root: root reads any file
    whatever its mode, and the suite usually runs as root, so a forked child drops to 'nobody' and reports back."""
    def outcome() -> str:
        try:
            call()
        except Exception as exc:  # noqa: BLE001 -- the caller compares the message
            return str(exc)
        return "ok"

    if os.geteuid() != 0:
        return outcome()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        try:
            os.close(read_end)
            os.setegid(NOBODY)
            os.seteuid(NOBODY)
            os.write(write_end, outcome().encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        message = pipe.read().decode()
    os.waitpid(pid, 0)
    return message


@pytest.fixture
def locked_copy():
    """locked_copy(source, name): a copy of source that only root could read, in a folder anyone can enter."""
    folder = tempfile.mkdtemp()
    os.chmod(folder, 0o755)

    def make(source, name: str) -> str:
        path = os.path.join(folder, name)
        shutil.copyfile(source, path)
        os.chmod(path, 0)
        return path

    yield make
    shutil.rmtree(folder)
