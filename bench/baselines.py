"""The two references the engine is measured against, each run inside its own benchmark worker process.

- bare decode: the ceiling. The same context setup as the engine (llama_backend.LlamaContext: unified KV cache, the
  same batch and thread settings), the prompt decoded once for all k sequences, then the engine's own token ids replayed
  one step at a time with logits requested for every row, exactly the batches the engine decoded, and no logprob, top-N
  or sampling work at all.
- naive: what one would write without this project: llama-cpp-python's high-level
  `Llama.create_chat_completion(logprobs=True, top_logprobs=N)` called once per rollout, in sequence.
"""

from __future__ import annotations

import time
from typing import Optional

from explorer.core.engine import llama_backend as lb


def default_gpu_layers() -> int:
    """What the engine picks when the user does not choose: every layer when the build can offload, else none."""
    return 999 if lb.gpu_offload_supported() else 0


def measure_bare(model_path: str, prompt_ids: list[int], rollouts: list[list[int]], n_ctx: int,
                 repeats: int, threads: Optional[int] = None) -> dict:
    """Replay `rollouts` (token ids per sequence, as the engine produced them) through a bare batched decode loop."""
    k = len(rollouts)
    model = lb.LlamaModel(model_path, default_gpu_layers())
    ctx = lb.LlamaContext(model, n_ctx, k, threads)
    n_prompt = len(prompt_ids)
    all_seqs = list(range(k))
    longest = max(len(ids) for ids in rollouts)
    times, prompt_times = [], []
    try:
        for _ in range(repeats):
            t0 = time.perf_counter()
            ctx.clear()
            for start in range(0, n_prompt, ctx.n_batch):
                chunk = prompt_ids[start: start + ctx.n_batch]
                last = start + len(chunk) == n_prompt
                ctx.decode(chunk, range(start, start + len(chunk)), [all_seqs] * len(chunk),
                           [last and j == len(chunk) - 1 for j in range(len(chunk))])
            ctx.logits_rows([len(chunk) - 1])
            t1 = time.perf_counter()
            # step s decodes token s-1 of every rollout that has a token s, as the engine does: the last token a
            # rollout samples is never decoded
            for step in range(1, longest):
                active = [r for r in range(k) if len(rollouts[r]) > step]
                ctx.decode([rollouts[r][step - 1] for r in active], [n_prompt + step - 1] * len(active),
                           [[r] for r in active], [True] * len(active))
                ctx.logits_rows(range(len(active)))
            times.append(time.perf_counter() - t0)
            prompt_times.append(t1 - t0)
    finally:
        ctx.close()
        model.close()
    return {"times": times, "tokens": sum(len(ids) for ids in rollouts), "prompt_s": min(prompt_times)}


def measure_naive(model_path: str, query: str, n_calls: int, n_tokens: int, top_n: int, seed: int,
                  repeats: int, threads: Optional[int] = None) -> dict:
    """n_calls sequential create_chat_completion calls with logprobs; tokens = completion tokens actually produced."""
    from llama_cpp import Llama

    threads = threads or lb.default_threads()  # the engine's thread count, for a like-for-like decode
    llm = Llama(model_path=model_path, n_ctx=512, logits_all=True, n_threads=threads, n_threads_batch=threads,
                n_gpu_layers=-1 if default_gpu_layers() else 0, seed=seed, verbose=False)
    messages = [{"role": "user", "content": query}]
    times, token_counts = [], []
    try:
        for _ in range(repeats):
            t0 = time.perf_counter()
            produced = 0
            for i in range(n_calls):
                out = llm.create_chat_completion(
                    messages, logprobs=True, top_logprobs=top_n, max_tokens=n_tokens, seed=seed + i,
                    temperature=1.0, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.0)
                produced += int(out["usage"]["completion_tokens"])
            times.append(time.perf_counter() - t0)
            token_counts.append(produced)
    finally:
        llm.close()
    # per-token rates: the sampled lengths may differ between repeats only if the seed were ignored
    best = min(range(repeats), key=lambda j: times[j] / max(1, token_counts[j]))
    return {"times": [times[best]], "tokens": token_counts[best], "calls": n_calls}
