"""Thin, careful wrapper over llama-cpp-python's low-level API: model, context, batch, tokenizer, logits.

Only this module touches ctypes. It checks every size before llama.cpp sees it, because llama.cpp aborts the whole
process (not an exception) on an oversized batch or a bad sequence id.
"""

from __future__ import annotations

import collections
import ctypes
import os
import re
import threading
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

import llama_cpp as L

from explorer.core.errors import EngineError

# llama.cpp's LLAMA_MAX_SEQ is 256 (sequence ids must stay below it); an exact context keeps the last one for the rows
# that pad its micro-batches
MAX_SEQ = 255
N_BATCH = 512  # tokens per llama_decode call; prompts are split into chunks of this size
# Tokens per micro-batch, the unit llama.cpp's kernels work on. On CPU, flash attention takes a tiled kernel for
# micro-batches of 64 rows or more, whose other summation order moves logprobs by up to ~0.4 nats (measured on
# SmolLM2-135M Q4_1); below 64 every row runs the same attention code, whatever shares its micro-batch.
N_UBATCH = 63


@dataclass(frozen=True)
class MicroBatchShape:
    """Row counts a micro-batch keeps to: 0 or at least min_rows rows, a multiple of `multiple`, and the same for its
    outputs (the rows whose logits are asked, which llama.cpp alone carries through the last layer and the output
    matrix). A context with a shape pads each micro-batch into it with rows of a sequence of its own, decoded and then
    removed: the shape that keeps every matrix product of a model on one kernel (exactness.exact_shape) makes a
    token's logits independent of how many rows share its micro-batch, of what they are and of its place among them."""

    min_rows: int
    multiple: int = 1

    @property
    def pads(self) -> bool:
        """Whether some micro-batch needs padding (MicroBatchShape(1) takes every row count as it is)."""
        return self.min_rows > 1 or self.multiple > 1

    def allows(self, n: int) -> bool:
        return n == 0 or (n >= self.min_rows and n % self.multiple == 0)

    def round_up(self, n: int) -> int:
        if n == 0:
            return 0
        n = max(n, self.min_rows)
        return n + (-n) % self.multiple

    def padding(self, n_rows: int, n_outputs: int) -> tuple[int, int]:
        """(pad rows with logits, pad rows without) that bring n_rows rows with n_outputs outputs into the shape."""
        with_logits = self.round_up(n_outputs) - n_outputs
        return with_logits, self.round_up(n_rows + with_logits) - n_rows - with_logits

    @property
    def max_rows(self) -> int:
        """The most real rows per micro-batch whose padded micro-batch stays within N_UBATCH, whatever their outputs."""
        return max(n for n in range(1, N_UBATCH + 1)
                   if all(n + sum(self.padding(n, o)) <= N_UBATCH for o in range(n + 1)))

    @property
    def max_padding(self) -> int:
        return max(sum(self.padding(n, o)) for n in range(1, self.max_rows + 1) for o in range(n + 1))


_log_lines: collections.deque[str] = collections.deque(maxlen=40)
_log_lock = threading.Lock()
_backend_ready = False


@L.llama_log_callback
def _log_callback(level, text, user_data):  # pragma: no cover - called from C
    try:
        line = text.decode("utf-8", "replace") if text else ""
    except Exception:
        return
    if os.environ.get("ROLLOUT_EXPLORER_VERBOSE"):
        os.write(2, line.encode("utf-8", "replace"))
    with _log_lock:
        _log_lines.append(line.rstrip("\n"))


def recent_log(n: int = 6) -> str:
    """The last lines llama.cpp logged: they usually say why a load or a context creation failed."""
    with _log_lock:
        lines = [ln.strip() for ln in list(_log_lines)[-n:] if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower() or "fail" in ln.lower()]
    return " | ".join(errors or lines)


def ensure_backend() -> None:
    global _backend_ready
    if not _backend_ready:
        L.llama_log_set(_log_callback, ctypes.c_void_p(0))
        L.llama_backend_init()
        _backend_ready = True


def system_info() -> str:
    ensure_backend()
    raw = L.llama_print_system_info()
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def gpu_offload_supported() -> bool:
    ensure_backend()
    return bool(L.llama_supports_gpu_offload())


def backend_name(info: str, gpu: bool) -> str:
    """CPU unless the build offloads to a GPU; then the GPU backend's name as the system info reports it."""
    if gpu:
        for name, pattern in (("CUDA", r"CUDA"), ("Metal", r"METAL|Metal"), ("Vulkan", r"Vulkan|VULKAN"),
                              ("ROCm", r"HIP|ROCm"), ("SYCL", r"SYCL"), ("OpenCL", r"OPENCL|OpenCL")):
            if re.search(pattern, info):
                return name
        return "GPU"
    return "CPU"


class LlamaModel:
    """A loaded model and its vocabulary; token pieces are cached lazily (a 262k vocabulary is never walked)."""

    def __init__(self, path: str, n_gpu_layers: int):
        ensure_backend()
        params = L.llama_model_default_params()
        params.n_gpu_layers = n_gpu_layers
        self.model = L.llama_model_load_from_file(path.encode("utf-8"), params)
        if not self.model:
            detail = recent_log()
            raise EngineError(f"{path}: llama.cpp could not load the model" + (f" ({detail})" if detail else ""))
        self.vocab = L.llama_model_get_vocab(self.model)
        self.n_vocab = int(L.llama_vocab_n_tokens(self.vocab))
        self.n_ctx_train = int(L.llama_model_n_ctx_train(self.model))
        self.n_layers = int(L.llama_model_n_layer(self.model))
        self.n_params = int(L.llama_model_n_params(self.model))
        self.n_embd = int(L.llama_model_n_embd(self.model))
        n_head = max(1, int(L.llama_model_n_head(self.model)))
        n_head_kv = max(1, int(L.llama_model_n_head_kv(self.model)))
        # f16 K and V per layer: the KV cache cost of one cell, used to size contexts within memory
        self.kv_bytes_per_cell = 2 * 2 * self.n_layers * max(1, self.n_embd * n_head_kv // n_head)
        self.bos = int(L.llama_vocab_bos(self.vocab))
        self.eos = int(L.llama_vocab_eos(self.vocab))
        self.add_bos = bool(L.llama_vocab_get_add_bos(self.vocab))
        raw_template = L.llama_model_chat_template(self.model, None)
        self.chat_template: Optional[str] = raw_template.decode("utf-8", "replace") if raw_template else None
        self._piece_cache: dict[tuple[int, bool], bytes] = {}
        self._eog_cache: dict[int, bool] = {}

    def close(self) -> None:
        if self.model:
            L.llama_model_free(self.model)
            self.model = None

    def tokenize(self, text: str, add_special: bool, parse_special: bool) -> list[int]:
        data = text.encode("utf-8")
        capacity = len(data) + 8
        buf = (L.llama_token * capacity)()
        n = L.llama_tokenize(self.vocab, data, len(data), buf, capacity, add_special, parse_special)
        if n < 0:
            capacity = -n
            buf = (L.llama_token * capacity)()
            n = L.llama_tokenize(self.vocab, data, len(data), buf, capacity, add_special, parse_special)
        if n < 0:
            raise EngineError(f"tokenizer failed on a text of {len(data)} bytes")
        return list(buf[:n])

    def piece(self, token: int, special: bool = True) -> bytes:
        key = (token, special)
        cached = self._piece_cache.get(key)
        if cached is not None:
            return cached
        buf = ctypes.create_string_buffer(64)
        n = L.llama_token_to_piece(self.vocab, token, buf, 64, 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = L.llama_token_to_piece(self.vocab, token, buf, -n, 0, special)
        out = buf.raw[: max(n, 0)]
        self._piece_cache[key] = out
        return out

    def is_eog(self, token: int) -> bool:
        hit = self._eog_cache.get(token)
        if hit is None:
            hit = self._eog_cache[token] = bool(L.llama_vocab_is_eog(self.vocab, token))
        return hit

    def token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self.piece(token, True).decode("utf-8", "replace")


def default_threads(every_core: bool = False) -> int:
    """Half the logical CPUs (llama-cpp-python's default too) for the window: llama.cpp's threads spin while they
    wait, and with every CPU taken the window's thread and the worker's Python starve (measured: 2 threads on a busy
    2-core machine decoded ~15x slower than 1). every_core: all of them, for the command line, which has no window to
    keep smooth (k = 8 x 64 on a quiet 2-core machine: 65-66 tokens/s on 1 thread, 84-94 on 2).
    ROLLOUT_EXPLORER_THREADS overrides both."""
    env = os.environ.get("ROLLOUT_EXPLORER_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    cpus = os.cpu_count() or 2
    return max(1, cpus if every_core else cpus // 2)


class LlamaContext:
    """A context with a unified KV cache shared by up to n_seq sequences, and one reusable batch.

    With a micro-batch shape (exact_shape) it is batch-invariant: callers split their work by n_batch (then one
    micro-batch), every llama_decode is padded into the shape, and a step of more rows than one micro-batch holds is
    decoded in several, its logits gathered."""

    def __init__(self, model: LlamaModel, n_ctx: int, n_seq: int, n_threads: Optional[int] = None,
                 shape: Optional[MicroBatchShape] = None):
        if not (1 <= n_seq <= MAX_SEQ):
            raise EngineError(f"{n_seq} parallel sequences asked; llama.cpp allows 1..{MAX_SEQ}")
        self.model = model
        self.shape = shape  # None: not exact
        self._padded = shape is not None and shape.pads
        self._pad_seq = n_seq  # the sequence of the padding rows: empty between decodes
        pad = shape.max_padding if self._padded else 0
        capacity = max(N_BATCH, MAX_SEQ)
        params = L.llama_context_default_params()
        params.n_ctx = n_ctx + pad
        params.n_batch = capacity + pad
        params.n_ubatch = N_UBATCH  # llama_decode splits a bigger batch itself
        params.n_seq_max = n_seq + (1 if self._padded else 0)
        params.kv_unified = True  # the prompt's cells are shared by every sequence instead of copied
        threads = n_threads or default_threads()
        params.n_threads = threads
        params.n_threads_batch = threads
        params.no_perf = True
        self.ctx = L.llama_init_from_model(model.model, params)
        if not self.ctx:
            detail = recent_log()
            raise EngineError(f"llama.cpp could not create a context of {n_ctx} tokens"
                              + (f" ({detail})" if detail else ""))
        self.n_ctx = int(L.llama_n_ctx(self.ctx)) - pad
        self.n_seq = n_seq
        self.capacity = capacity  # tokens one decode call takes
        self.n_batch = shape.max_rows if self._padded else capacity  # per decode call, for work split by the caller
        self.memory = L.llama_get_memory(self.ctx)
        rows = capacity + pad
        self.batch = L.llama_batch_init(rows, 0, params.n_seq_max)
        self._tokens = np.ctypeslib.as_array(self.batch.token, shape=(rows,))
        self._pos = np.ctypeslib.as_array(self.batch.pos, shape=(rows,))
        self._n_seq_id = np.ctypeslib.as_array(self.batch.n_seq_id, shape=(rows,))
        self._logits_flag = np.ctypeslib.as_array(self.batch.logits, shape=(rows,))
        self._seq_rows = [np.ctypeslib.as_array(self.batch.seq_id[i], shape=(params.n_seq_max,)) for i in range(rows)]
        self._gathered: Optional[tuple[dict[int, int], np.ndarray]] = None  # a split decode's logits by batch index

    def close(self) -> None:
        if self.ctx:
            L.llama_batch_free(self.batch)
            L.llama_free(self.ctx)
            self.ctx = None

    # -- KV cache ----------------------------------------------------------------------------------------------
    def clear(self) -> None:
        L.llama_memory_clear(self.memory, True)

    def seq_rm(self, seq: int, p0: int, p1: int = -1) -> bool:
        return bool(L.llama_memory_seq_rm(self.memory, seq, p0, p1))

    def seq_cp(self, src: int, dst: int, p0: int = -1, p1: int = -1) -> None:
        L.llama_memory_seq_cp(self.memory, src, dst, p0, p1)

    # -- decoding ----------------------------------------------------------------------------------------------
    def decode(self, tokens: Sequence[int], positions: Sequence[int], seq_ids: Sequence[Sequence[int]],
               want_logits: Sequence[bool]) -> None:
        n = len(tokens)
        if not (0 < n <= self.capacity):
            raise EngineError(f"internal: batch of {n} tokens (limit {self.capacity})")
        for seqs in seq_ids:
            if len(seqs) > self.n_seq or max(seqs) >= self.n_seq:
                raise EngineError(f"internal: sequence ids {seqs} outside 0..{self.n_seq - 1}")
        self._gathered = None
        if not self._padded:
            self._decode(tokens, positions, seq_ids, want_logits, 0, 0)
            return
        if n <= self.n_batch:
            self._decode_padded(tokens, positions, seq_ids, want_logits)
            return
        index: dict[int, int] = {}
        rows = np.empty((sum(map(bool, want_logits)), self.model.n_vocab), dtype=np.float32)
        for start in range(0, n, self.n_batch):
            end = min(n, start + self.n_batch)
            flags = want_logits[start:end]
            self._decode_padded(tokens[start:end], positions[start:end], seq_ids[start:end], flags)
            wanted = [j for j, f in enumerate(flags) if f]
            if wanted:
                first = len(index)
                rows[first: first + len(wanted)] = self.logits_rows(wanted)
                index.update((start + j, first + i) for i, j in enumerate(wanted))
        self._gathered = (index, rows)

    def _decode_padded(self, tokens, positions, seq_ids, want_logits) -> None:
        """One micro-batch, padded into the shape with rows of the padding sequence (removed again after)."""
        with_logits, without = self.shape.padding(len(tokens), sum(map(bool, want_logits)))
        self._decode(tokens, positions, seq_ids, want_logits, with_logits, without)
        if with_logits or without:
            L.llama_memory_seq_rm(self.memory, self._pad_seq, 0, -1)

    def _decode(self, tokens, positions, seq_ids, want_logits, pad_with_logits: int, pad_without: int) -> None:
        n = len(tokens)
        self._tokens[:n] = tokens
        self._pos[:n] = positions
        self._logits_flag[:n] = want_logits
        for i, seqs in enumerate(seq_ids):
            self._n_seq_id[i] = len(seqs)
            self._seq_rows[i][: len(seqs)] = seqs
        n_pad = pad_with_logits + pad_without
        if n_pad:
            # the padding sequence's own positions from 0: its rows see only each other, and no one sees them
            self._tokens[n: n + n_pad] = tokens[-1]
            self._pos[n: n + n_pad] = np.arange(n_pad)
            self._logits_flag[n: n + n_pad] = [True] * pad_with_logits + [False] * pad_without
            self._n_seq_id[n: n + n_pad] = 1
            for i in range(n, n + n_pad):
                self._seq_rows[i][0] = self._pad_seq
        self.batch.n_tokens = n + n_pad
        rc = L.llama_decode(self.ctx, self.batch)
        if rc == 1:
            raise EngineError(f"the context ({self.n_ctx} tokens) is full: lower k or max tokens, or raise n_ctx")
        if rc == 2:
            raise EngineError("decoding was aborted")
        if rc != 0:
            detail = recent_log()
            raise EngineError(f"llama_decode failed with code {rc}" + (f" ({detail})" if detail else ""))

    def logits_rows(self, batch_indices: Sequence[int]) -> np.ndarray:
        """Logits of the given batch positions as an (n, V) float32 array (a view when llama.cpp stores them
        contiguously in that order, which it does for consecutive outputs; a copy otherwise)."""
        if self._gathered is not None:
            index, rows = self._gathered
            picks = [index.get(i, -1) for i in batch_indices]
            if -1 in picks:
                raise EngineError("llama.cpp returned no logits for a decoded token")
            if picks and picks == list(range(picks[0], picks[0] + len(picks))):
                return rows[picks[0]: picks[0] + len(picks)]
            return rows[picks]
        v = self.model.n_vocab
        ptrs = [L.llama_get_logits_ith(self.ctx, i) for i in batch_indices]
        if any(not p for p in ptrs):
            raise EngineError("llama.cpp returned no logits for a decoded token")
        addrs = [ctypes.cast(p, ctypes.c_void_p).value for p in ptrs]
        row_bytes = v * 4
        if all(addrs[j] == addrs[0] + j * row_bytes for j in range(len(addrs))):
            return np.ctypeslib.as_array(ptrs[0], shape=(len(addrs), v))
        return np.stack([np.ctypeslib.as_array(p, shape=(v,)) for p in ptrs])
