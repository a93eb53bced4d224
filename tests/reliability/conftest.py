"""Shared pieces of the reliability suite: a small valid rollout set on disk, and unreadable files that stay
unreadable when the suite runs as root."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic import synthetic_set  # noqa: E402

from explorer.core.files import export  # noqa: E402


@pytest.fixture
def small_set_path(tmp_path) -> Path:
    path = tmp_path / "small.json"
    export.save(synthetic_set(2, 2, 3, top_n=2), path)
    return path


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
