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


@pytest.fixture(scope="session")
def tiny_served(tmp_path_factory):
    """A real llama_cpp.server on 127.0.0.1 serving a tiny Q8_0 GGUF, with what a reference of it needs: its URL, the
    quantized file (the served weights, here too) and its float source. One per session: it starts in seconds."""
    from servers import LlamaCppServer
    from tiny_gguf import write_q8_copy

    folder = tmp_path_factory.mktemp("served")
    source = write_tiny_gguf(folder / "source.gguf", tie_embeddings=False, seed=3)
    q8 = write_q8_copy(source, folder / "served-q8.gguf")
    other = write_tiny_gguf(folder / "other.gguf", extra_tokens=["zebra"], tie_embeddings=False, seed=3)
    server = LlamaCppServer(q8, extra=("--n_ctx", "1024"))
    yield {"url": server.url, "q8": q8, "source": source, "other": other}
    server.stop()
