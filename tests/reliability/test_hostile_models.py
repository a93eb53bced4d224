"""The GGUF validator against a corpus generated here: the tiny GGUF cut at every boundary between the parts of its
header (found with the gguf package's own reader, independent of ours), inside its tensor data, and files that are
not files. Each is refused with one line naming the file, quickly, never by llama.cpp (which would abort)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading

import pytest
from as_nobody import outcome_as_nobody
from gguf import GGUFReader

from explorer.core.errors import ModelError
from explorer.core.models.discovery import read_gguf


def _header_boundaries(path) -> list[int]:
    """Every offset where one part of a key/value or tensor info ends and the next begins."""
    reader = GGUFReader(path)
    cuts = {4, 8, 16, 24}  # magic, version, tensor count, key/value count
    fields = list(reader.fields.values()) + [t.field for t in reader.tensors]
    for field in fields:
        offset = field.offset
        for part in field.parts:
            offset += part.nbytes
            cuts.add(offset)
    return sorted(c for c in cuts if c < int(reader.data_offset))


def test_every_header_truncation_is_refused_as_truncated(tmp_path, tiny_gguf):
    data = tiny_gguf.read_bytes()
    cuts = _header_boundaries(tiny_gguf)
    assert len(cuts) > 300
    path = tmp_path / "cut.gguf"
    for cut in cuts:
        for at in (cut - 1, cut, cut + 1):
            path.write_bytes(data[:at])
            with pytest.raises(ModelError) as info:
                read_gguf(path)
            message = str(info.value)
            assert "\n" not in message and message.startswith(str(path))
            assert "truncated" in message or "empty file" in message, (at, message)


def test_truncations_inside_the_tensor_data(tmp_path, tiny_gguf):
    data = tiny_gguf.read_bytes()
    start = int(GGUFReader(tiny_gguf).data_offset)
    path = tmp_path / "short.gguf"
    for at in (start, start + 1, (start + len(data)) // 2, len(data) - 1):
        path.write_bytes(data[:at])
        with pytest.raises(ModelError, match="truncated: tensor .* needs bytes up to"):
            read_gguf(path)


def test_a_fifo_given_as_a_model_is_refused_by_the_cli_at_once(tmp_path):
    fifo = tmp_path / "model.gguf"
    os.mkfifo(fifo)
    try:
        proc = subprocess.run([sys.executable, "-m", "explorer", "generate", "--model", str(fifo), "-q", "x",
                               "-o", str(tmp_path / "o.json")], capture_output=True, text=True, timeout=120)
    finally:
        # had it opened the FIFO, it would be blocked on it: a writer end lets it go either way
        opener = threading.Thread(target=lambda: open(fifo, "wb").close(), daemon=True)
        opener.start()
        opener.join(timeout=0.5)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"rollout-explorer generate: {fifo}: is not a regular file"


def test_a_device_and_a_directory_as_models(tmp_path):
    with pytest.raises(ModelError, match="is a directory"):
        read_gguf(tmp_path)
    if stat.S_ISCHR(os.stat(os.devnull).st_mode):
        with pytest.raises(ModelError, match="is not a regular file"):
            read_gguf(os.devnull)


def test_an_unreadable_model(tiny_gguf, locked_copy):
    locked = locked_copy(tiny_gguf, "locked.gguf")
    assert outcome_as_nobody(lambda: read_gguf(locked)) == f"{locked}: cannot read: permission denied"


def test_a_rollout_set_or_text_given_as_a_model(tmp_path):
    path = tmp_path / "not-a-model.gguf"
    path.write_text('{"format": "rollout-explorer/rollout-set"}')
    with pytest.raises(ModelError, match=r"not a GGUF file \(magic b'\{\"fo'"):
        read_gguf(path)
