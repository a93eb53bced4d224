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
from typing import Optional, Sequence

import numpy as np

import llama_cpp as L

from explorer.core.errors import EngineError

MAX_SEQ = 256  # llama.cpp's LLAMA_MAX_SEQ: sequence ids must stay below it
N_BATCH = 512  # tokens per llama_decode call; prompts are split into chunks of this size
# Tokens per micro-batch, the unit llama.cpp's kernels work on. On CPU, micro-batches of 64 tokens or more take other
# matmul / attention kernels, whose different rounding of 8-bit activations moves logprobs by up to ~0.4 nats
# (measured on SmolLM2-135M Q4_1). Below 64, one decode step of any number of rollouts, a prompt and a long
# teacher-forced pass all run the same kernels, so a sampled token's logprob equals its teacher-forced score exactly.
N_UBATCH = 63

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


def default_threads() -> int:
    """Half the logical CPUs (llama-cpp-python's default too): llama.cpp's threads spin while they wait, and with
    every CPU taken the window's thread and the worker's Python starve (measured: 2 threads on a busy 2-core machine
    decoded ~15x slower than 1). ROLLOUT_EXPLORER_THREADS overrides it."""
    env = os.environ.get("ROLLOUT_EXPLORER_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, (os.cpu_count() or 2) // 2)


class LlamaContext:
    """A context with a unified KV cache shared by up to n_seq sequences, and one reusable batch."""

    def __init__(self, model: LlamaModel, n_ctx: int, n_seq: int, n_threads: Optional[int] = None):
        if not (1 <= n_seq <= MAX_SEQ):
            raise EngineError(f"{n_seq} parallel sequences asked; llama.cpp allows 1..{MAX_SEQ}")
        self.model = model
        params = L.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = max(N_BATCH, MAX_SEQ)
        params.n_ubatch = N_UBATCH  # llama_decode splits a bigger batch itself
        params.n_seq_max = n_seq
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
        self.n_ctx = int(L.llama_n_ctx(self.ctx))
        self.n_seq = n_seq
        self.n_batch = max(N_BATCH, MAX_SEQ)
        self.memory = L.llama_get_memory(self.ctx)
        self.batch = L.llama_batch_init(self.n_batch, 0, n_seq)
        self._tokens = np.ctypeslib.as_array(self.batch.token, shape=(self.n_batch,))
        self._pos = np.ctypeslib.as_array(self.batch.pos, shape=(self.n_batch,))
        self._n_seq_id = np.ctypeslib.as_array(self.batch.n_seq_id, shape=(self.n_batch,))
        self._logits_flag = np.ctypeslib.as_array(self.batch.logits, shape=(self.n_batch,))
        self._seq_rows = [np.ctypeslib.as_array(self.batch.seq_id[i], shape=(n_seq,)) for i in range(self.n_batch)]

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
        if not (0 < n <= self.n_batch):
            raise EngineError(f"internal: batch of {n} tokens (limit {self.n_batch})")
        self._tokens[:n] = tokens
        self._pos[:n] = positions
        self._logits_flag[:n] = want_logits
        for i, seqs in enumerate(seq_ids):
            if len(seqs) > self.n_seq or max(seqs) >= self.n_seq:
                raise EngineError(f"internal: sequence ids {seqs} outside 0..{self.n_seq - 1}")
            self._n_seq_id[i] = len(seqs)
            self._seq_rows[i][: len(seqs)] = seqs
        self.batch.n_tokens = n
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
        v = self.model.n_vocab
        ptrs = [L.llama_get_logits_ith(self.ctx, i) for i in batch_indices]
        if any(not p for p in ptrs):
            raise EngineError("llama.cpp returned no logits for a decoded token")
        addrs = [ctypes.cast(p, ctypes.c_void_p).value for p in ptrs]
        row_bytes = v * 4
        if all(addrs[j] == addrs[0] + j * row_bytes for j in range(len(addrs))):
            return np.ctypeslib.as_array(ptrs[0], shape=(len(addrs), v))
        return np.stack([np.ctypeslib.as_array(p, shape=(v,)) for p in ptrs])
