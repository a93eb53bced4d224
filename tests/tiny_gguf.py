"""A tiny but real llama-architecture GGUF, written in milliseconds with the `gguf` package, plus corrupt variants.

The model has random (seeded) weights, so what it generates is noise, but llama.cpp loads and runs it like any other:
it is what the fast unit tests use instead of a mock. The vocabulary is SentencePiece-style ("llama" tokenizer):
specials, the ChatML control tokens, the 256 byte tokens (so any UTF-8 text tokenizes, a multi-byte character that has
no piece of its own falling back to its byte tokens), then word pieces. The same writer makes a synthetic model with a
262k-token vocabulary and SmolLM2-like sizes for the benchmark.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Iterable

import numpy as np
from gguf import GGUFValueType, GGUFWriter, Keys, LlamaFileType, TokenType

# A ChatML template in the style of SmolLM2's: a default system turn when the conversation has none.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

UNK_ID, BOS_ID, EOS_ID, IM_START_ID, IM_END_ID = 0, 1, 2, 3, 4
FIRST_BYTE_ID = 5  # <0x00> .. <0xFF> follow the five specials
N_FIXED = FIRST_BYTE_ID + 256

# Words whose SentencePiece pieces are in every vocabulary that has room for them (the score examples use these).
WORDS = (
    "the", "a", "is", "of", "and", "to", "in", "Atlantic", "Ocean", "Pacific", "Indian", "Arctic", "largest", "ocean",
    "Which", "What", "The", "Hello", "world", "answer", "yes", "no", "one", "two", "three",
)
SPACE = "\u2581"  # SentencePiece's visible space


def _word_pieces(words: Iterable[str]) -> list[str]:
    """Each word as "▁word" with every left prefix, so llama.cpp's SPM tokenizer can merge its way up to the word."""
    pieces: list[str] = []
    for word in words:
        piece = word if word.startswith(SPACE) else SPACE + word
        pieces.extend(piece[:end] for end in range(2, len(piece) + 1))
    return pieces


def _vocabulary(n_vocab: int, extra_tokens: Iterable[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
    if n_vocab < N_FIXED + 1:
        raise ValueError(f"n_vocab must be at least {N_FIXED + 1} (specials and the 256 byte tokens), got {n_vocab}")
    tokens = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    wanted = list(extra_tokens) + [SPACE] + _word_pieces(WORDS)
    wanted += list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'\"-:;()")
    seen = set(tokens)
    for piece in wanted:
        if piece not in seen and len(tokens) < n_vocab:
            seen.add(piece)
            tokens.append(piece)
    # Filler pieces for large vocabularies: unique by construction, so no membership test is needed per piece.
    n_fill = n_vocab - len(tokens)
    tokens += [f"{SPACE}w{i:x}" for i in range(n_fill)]
    if len(set(tokens)) != n_vocab:  # an extra token that collides with a filler piece
        raise ValueError("extra_tokens collide with the generated vocabulary; choose other pieces")

    types = np.full(n_vocab, int(TokenType.NORMAL), dtype=np.int32)
    types[UNK_ID] = int(TokenType.UNKNOWN)
    types[[BOS_ID, EOS_ID, IM_START_ID, IM_END_ID]] = int(TokenType.CONTROL)
    types[FIRST_BYTE_ID:N_FIXED] = int(TokenType.BYTE)
    scores = np.zeros(n_vocab, dtype=np.float32)
    scores[N_FIXED:] = -np.arange(n_vocab - N_FIXED, dtype=np.float32)  # earlier pieces are preferred merges
    return tokens, scores, types


def write_tiny_gguf(
    path: str | Path,
    *,
    n_vocab: int = 300,
    n_embd: int = 32,
    n_layer: int = 2,
    n_head: int = 2,
    n_head_kv: int | None = None,
    n_ff: int | None = None,
    n_ctx_train: int = 1024,
    seed: int = 0,
    chat_template: str | None = CHATML_TEMPLATE,
    architecture: str = "llama",
    name: str = "tiny-test",
    extra_tokens: Iterable[str] = (),
    dtype: str = "f32",
    tie_embeddings: bool = True,
    with_tokenizer: bool = True,
    general_type: str | None = None,
) -> Path:
    """Write a loadable llama-architecture GGUF with random weights; returns the path.

    dtype "f16" stores the 2-D matrices as F16 (1-D norms stay F32), halving big synthetic models.
    architecture, with_tokenizer and general_type exist to write well-formed files that are not text generators.
    """
    if dtype not in ("f32", "f16"):
        raise ValueError(f"dtype must be 'f32' or 'f16', got {dtype!r}")
    n_head_kv = n_head if n_head_kv is None else n_head_kv
    n_ff = 4 * n_embd if n_ff is None else n_ff
    if n_embd % n_head or n_head % n_head_kv:
        raise ValueError("n_embd must be a multiple of n_head, and n_head a multiple of n_head_kv")
    head_dim = n_embd // n_head
    matrix_dtype = np.float16 if dtype == "f16" else np.float32
    path = Path(path)
    rng = np.random.default_rng(seed)

    def matrix(rows: int, cols: int) -> np.ndarray:
        # numpy's (rows, cols) is GGUF's ne = [cols, rows]: llama.cpp's weight layouts below are written that way.
        # Uniform in +-0.035 (std ~0.02): three times faster to draw than normal, which matters for 262k vocabularies.
        weights = rng.random((rows, cols), dtype=np.float32)
        weights -= 0.5
        weights *= 0.07
        return weights.astype(matrix_dtype, copy=False)

    writer = GGUFWriter(path, architecture)
    if general_type is not None:
        writer.add_type(general_type)
    writer.add_name(name)
    writer.add_file_type(int(LlamaFileType.MOSTLY_F16 if dtype == "f16" else LlamaFileType.ALL_F32))
    writer.add_context_length(n_ctx_train)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    writer.add_rope_dimension_count(head_dim)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(n_vocab)
    if with_tokenizer:
        tokens, scores, types = _vocabulary(n_vocab, extra_tokens)
        writer.add_tokenizer_model("llama")
        # With the item type given, the writer skips its per-item type check (seconds on a 262k vocabulary).
        writer.add_key_value(Keys.Tokenizer.LIST, tokens, GGUFValueType.ARRAY, sub_type=GGUFValueType.STRING)
        writer.add_key_value(Keys.Tokenizer.SCORES, scores.tolist(), GGUFValueType.ARRAY,
                             sub_type=GGUFValueType.FLOAT32)
        writer.add_key_value(Keys.Tokenizer.TOKEN_TYPE, types.tolist(), GGUFValueType.ARRAY,
                             sub_type=GGUFValueType.INT32)
        writer.add_unk_token_id(UNK_ID)
        writer.add_bos_token_id(BOS_ID)
        writer.add_eos_token_id(IM_END_ID if chat_template else EOS_ID)
        writer.add_add_bos_token(True)
        writer.add_add_eos_token(False)
        if chat_template:
            writer.add_chat_template(chat_template)

    writer.add_tensor("token_embd.weight", matrix(n_vocab, n_embd))
    writer.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    if not tie_embeddings:
        writer.add_tensor("output.weight", matrix(n_vocab, n_embd))
    for i in range(n_layer):
        blk = f"blk.{i}"
        writer.add_tensor(f"{blk}.attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        writer.add_tensor(f"{blk}.attn_q.weight", matrix(n_embd, n_embd))
        writer.add_tensor(f"{blk}.attn_k.weight", matrix(n_head_kv * head_dim, n_embd))
        writer.add_tensor(f"{blk}.attn_v.weight", matrix(n_head_kv * head_dim, n_embd))
        writer.add_tensor(f"{blk}.attn_output.weight", matrix(n_embd, n_embd))
        writer.add_tensor(f"{blk}.ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        writer.add_tensor(f"{blk}.ffn_gate.weight", matrix(n_ff, n_embd))
        writer.add_tensor(f"{blk}.ffn_up.weight", matrix(n_ff, n_embd))
        writer.add_tensor(f"{blk}.ffn_down.weight", matrix(n_embd, n_ff))
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return path


def count_params(n_vocab: int = 300, n_embd: int = 32, n_layer: int = 2, n_head: int = 2, n_head_kv: int | None = None,
                 n_ff: int | None = None, tie_embeddings: bool = True) -> int:
    """The element count write_tiny_gguf produces, computed independently of any GGUF reader."""
    n_head_kv = n_head if n_head_kv is None else n_head_kv
    n_ff = 4 * n_embd if n_ff is None else n_ff
    kv_dim = n_head_kv * (n_embd // n_head)
    per_layer = 2 * n_embd + 2 * n_embd * n_embd + 2 * kv_dim * n_embd + 3 * n_ff * n_embd
    return n_vocab * n_embd * (1 if tie_embeddings else 2) + n_embd + n_layer * per_layer


# ---------------------------------------------------------------------------------------------------------------
# Corrupt files. Offsets follow the GGUF v3 layout: magic(4) version(u32) n_tensors(u64) n_kv(u64), then the
# key/value pairs (key: u64 length + bytes, u32 value type, value) -- GGUFWriter writes general.architecture first.

_HEADER_SIZE = 24


def _patch(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    patched = bytearray(data)
    struct.pack_into(fmt, patched, offset, value)
    return bytes(patched)


def _key_value_offset(data: bytes, key: str) -> int:
    """Offset just after `key`'s bytes (where its u32 value type starts), found by searching the raw header."""
    encoded = key.encode()
    at = data.find(struct.pack("<Q", len(encoded)) + encoded, _HEADER_SIZE)
    if at < 0:
        raise ValueError(f"key {key!r} not found in the file")
    return at + 8 + len(encoded)


def _data_start(good_path: Path) -> int:
    """Where the tensor data begins, from the gguf package's own reader (independent of the code under test)."""
    from gguf import GGUFReader

    return int(GGUFReader(good_path).data_offset)


def corrupt_variants(tmp_dir: str | Path, good_path: str | Path) -> dict[str, Path]:
    """Write one broken (or not-a-text-generator) file per failure a validator must name; returns name -> path."""
    tmp_dir, good_path = Path(tmp_dir), Path(good_path)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    good = good_path.read_bytes()
    arch_value = _key_value_offset(good, "general.architecture")
    tokens_value = _key_value_offset(good, "tokenizer.ggml.tokens")
    data_start = _data_start(good_path)
    raw: dict[str, bytes] = {
        "empty": b"",
        "too_short": b"GGU",
        "bad_magic": b"PK\x03\x04" + good[4:],
        "version_1": _patch(good, 4, "<I", 1),
        "version_7": _patch(good, 4, "<I", 7),
        "big_endian": good[:4] + struct.pack(">I", 3) + good[8:],
        "huge_tensor_count": _patch(good, 8, "<Q", 2**60),
        "huge_kv_count": _patch(good, 16, "<Q", 2**60),
        "huge_key_length": _patch(good, _HEADER_SIZE, "<Q", 2**62),
        "huge_string_length": _patch(good, arch_value + 4, "<Q", 2**62),
        "huge_array_length": _patch(good, tokens_value + 8, "<Q", 2**61),
        "bad_value_type": _patch(good, arch_value, "<I", 99),
        "truncated_header": good[: tokens_value + 64],
        "truncated_tensor_info": good[: data_start - 40],
        "truncated_data": good[: data_start + (len(good) - data_start) // 2],
    }
    paths: dict[str, Path] = {}
    for label, data in raw.items():
        paths[label] = tmp_dir / f"{label}.gguf"
        paths[label].write_bytes(data)
    written = {
        "no_tokenizer": dict(with_tokenizer=False),
        "bert": dict(architecture="bert"),
        "nomic_bert": dict(architecture="nomic-bert"),
        "clip": dict(architecture="clip", with_tokenizer=False, general_type="mmproj"),
        "lora_adapter": dict(general_type="adapter"),
    }
    for label, kwargs in written.items():
        paths[label] = write_tiny_gguf(tmp_dir / f"{label}.gguf", n_vocab=N_FIXED + 8, n_embd=8, n_head=1,
                                       n_layer=1, **kwargs)
    return paths


# ---------------------------------------------------------------------------------------------------------------
# Hand-packed GGUF bytes, for malformations GGUFWriter refuses to write (duplicate keys, bad tensor types, ...).

_RAW_SCALARS = {"u8": (0, "<B"), "u32": (4, "<I"), "i32": (5, "<i"), "f32": (6, "<f"), "bool": (7, "<?"),
                "u64": (10, "<Q")}


def _raw_string(text: str) -> bytes:
    encoded = text.encode()
    return struct.pack("<Q", len(encoded)) + encoded


def raw_value(kind: str, value) -> bytes:
    """A typed GGUF value: kind is u8/u32/i32/f32/bool/u64, "str", or "arr:<kind>" with a list value."""
    if kind == "str":
        return struct.pack("<I", 8) + _raw_string(value)
    if kind.startswith("arr:"):
        item = kind[4:]
        body = b"".join(raw_value(item, v)[4:] for v in value)  # items carry no type of their own
        item_code = 8 if item == "str" else 9 if item.startswith("arr:") else _RAW_SCALARS[item][0]
        return struct.pack("<IIQ", 9, item_code, len(value)) + body
    code, fmt = _RAW_SCALARS[kind]
    return struct.pack("<I", code) + struct.pack(fmt, value)


def raw_gguf(kvs: list[tuple[str, str, object]], tensors: list[tuple[str, tuple[int, ...], int, int]] = (),
             *, version: int = 3, data_bytes: int | None = None, alignment: int = 32) -> bytes:
    """GGUF bytes from (key, kind, value) triples and (name, shape, ggml type, offset) tensor infos, followed by
    data_bytes zero bytes of tensor data (by default: up to the furthest F32 tensor end)."""
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    for key, kind, value in kvs:
        out += _raw_string(key) + raw_value(kind, value)
    for name, shape, ggml_type, offset in tensors:
        out += _raw_string(name) + struct.pack("<I", len(shape)) + b"".join(struct.pack("<Q", d) for d in shape)
        out += struct.pack("<IQ", ggml_type, offset)
    out += b"\0" * (-len(out) % alignment)
    if data_bytes is None:
        data_bytes = max((offset + 4 * int(np.prod(shape)) for _, shape, _, offset in tensors), default=0)
    return out + b"\0" * data_bytes


def minimal_llama_kvs(architecture: str = "llama") -> list[tuple[str, str, object]]:
    """The keys read_gguf needs to call a file a text generator (tokens kept short on purpose)."""
    return [
        ("general.architecture", "str", architecture),
        ("tokenizer.ggml.model", "str", "llama"),
        ("tokenizer.ggml.tokens", "arr:str", ["<unk>", "<s>", "</s>", "a"]),
    ]


def numpy_forward(path, ids):
    """Logits (float64) after each of ids, by a plain numpy evaluation of a llama GGUF's weights (what this file
    writes: RMS norm, rotary embedding on adjacent pairs with base 10000, causal attention, SwiGLU)."""
    from gguf import GGUFReader

    from explorer.core.reference.exact_copy import as_float32

    r = GGUFReader(str(path))
    weights = {t.name: as_float32(t).astype(np.float64) for t in r.tensors}

    def f(key):
        return r.get_field(key).contents()

    n_head, n_kv = f("llama.attention.head_count"), f("llama.attention.head_count_kv")
    n_layer = f("llama.block_count")
    eps = f("llama.attention.layer_norm_rms_epsilon")
    x = weights["token_embd.weight"][ids]
    n, d = x.shape
    hd = d // n_head

    def rms(v, w):
        return v / np.sqrt((v * v).mean(-1, keepdims=True) + eps) * w

    pos = np.arange(n)[:, None]
    inv = 10000.0 ** (-np.arange(0, hd, 2) / hd)
    ang = pos * inv[None, :]
    cos, sin = np.cos(ang), np.sin(ang)

    def rope(t):  # (n, heads, head_dim): each adjacent pair rotated by its position's angle
        a, b = t[..., 0::2], t[..., 1::2]
        out = np.empty_like(t)
        out[..., 0::2] = a * cos[:, None, :] - b * sin[:, None, :]
        out[..., 1::2] = a * sin[:, None, :] + b * cos[:, None, :]
        return out

    mask = np.triu(np.full((n, n), -np.inf), 1)
    for i in range(n_layer):
        p = f"blk.{i}."
        h = rms(x, weights[p + "attn_norm.weight"])
        q = rope((h @ weights[p + "attn_q.weight"].T).reshape(n, n_head, hd))
        k = rope((h @ weights[p + "attn_k.weight"].T).reshape(n, n_kv, hd))
        v = (h @ weights[p + "attn_v.weight"].T).reshape(n, n_kv, hd)
        rep = n_head // n_kv
        k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
        s = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(hd) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        o = np.einsum("hqk,khd->qhd", s, v).reshape(n, d)
        x = x + o @ weights[p + "attn_output.weight"].T
        h = rms(x, weights[p + "ffn_norm.weight"])
        g = h @ weights[p + "ffn_gate.weight"].T
        x = x + ((g / (1 + np.exp(-g))) * (h @ weights[p + "ffn_up.weight"].T)) @ weights[p + "ffn_down.weight"].T
    x = rms(x, weights["output_norm.weight"])
    out = weights.get("output.weight", weights["token_embd.weight"])
    return x @ out.T


# -- reference-policy variants: copies of a tiny GGUF written through the exact-copy writer ----------------------
def write_scaled_row_copy(src, dst, row: int, scale: float):
    """src with output row `row` scaled (a reference with the same vocabulary whose logit `row` alone differs: the
    hidden states are the same, so its logits are the policy's with that one multiplied). src must be untied."""
    from explorer.core.reference.exact_copy import as_float32, copy_gguf

    def data(t, qtype):
        values = as_float32(t)
        if t.name == "output.weight":
            values = values.copy()
            values[row] *= scale
        return values

    return copy_gguf(src, dst, lambda t: t.tensor_type, data, int(LlamaFileType.ALL_F32))


def write_q8_copy(src, dst):
    """src with its 2-D tensors quantized to Q8_0 by gguf (a quantized model whose exact weights are known)."""
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize

    from explorer.core.reference.exact_copy import as_float32, copy_gguf

    def out_type(t):
        return GGMLQuantizationType.Q8_0 if len(t.shape) == 2 else t.tensor_type

    def data(t, qtype):
        values = as_float32(t)
        return quantize(values, qtype) if qtype == GGMLQuantizationType.Q8_0 else values

    return copy_gguf(src, dst, out_type, data, int(LlamaFileType.MOSTLY_Q8_0))


# llama.cpp's own quantization types, by the name its llama-quantize tool gives them
LLAMA_FILE_TYPES = {"Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "F16": 1, "Q4_K_M": 15, "Q5_K_M": 17, "Q6_K": 18, "BF16": 32}


def write_quantized(src, dst, file_type: str):
    """src (a float GGUF) quantized by llama.cpp itself (llama_model_quantize, the code behind llama-quantize) to
    file_type, one of LLAMA_FILE_TYPES: the tensor types and fallbacks of the files users download. A width that is a
    multiple of 256 gives every K-quant tensor the real super-block kernels."""
    import ctypes
    import os

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = LLAMA_FILE_TYPES[file_type]
    params.nthread = 1
    stderr = os.dup(2)
    try:  # llama.cpp prints a line per tensor on stderr
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    finally:
        os.dup2(stderr, 2)
        os.close(stderr)
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize({src} -> {file_type}) failed with code {rc}")
    return Path(dst)
