"""Fixtures shared by every test: a tiny real GGUF (written once per session) and the default model's path."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# tiny_gguf.py lives beside this file; make it importable whatever pytest's import mode or package layout.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tiny_gguf import write_tiny_gguf  # noqa: E402


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A loadable 300-token llama GGUF with a ChatML template (read-only: copy it before changing it)."""
    return write_tiny_gguf(tmp_path_factory.mktemp("tiny") / "tiny.gguf")


@pytest.fixture(scope="session")
def default_model_path() -> Path:
    """The default model (SmolLM2-135M-Instruct); skips when its package is not installed."""
    from explorer.core.errors import ModelError
    from explorer.core.models.discovery import default_model_path as locate

    try:
        return locate()
    except ModelError as exc:
        pytest.skip(f"default model not available: {exc}")


@pytest.fixture(scope="module")
def local_engine(default_model_path):
    """The local engine on the default model, for checking other engines (a server) against it."""
    from explorer.core.engine.local import Engine

    eng = Engine(default_model_path)
    yield eng
    eng.close()
