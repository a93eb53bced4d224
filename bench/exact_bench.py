"""What batch-invariant ("exact") decoding costs, per quantization type: tokens/s with it against without it.

One synthetic model with SmolLM2-like proportions (6 layers) but a width of 512 (a multiple of 256, so every K-quant
tensor takes the real super-block kernels; SmolLM2's 576 makes llama.cpp fall back to Q5_0 / Q8_0 on most of them) is
written in float32 by tests/tiny_gguf.py and quantized by llama.cpp itself to each type. Per type and k, generation
with exact decoding on and off alternates in one engine (Engine.set_exact) for `rounds` rounds; a round's ratio
compares the two runs next to each other, and the table gives the median ratio and its spread over the rounds. On one llama.cpp thread
the clock is the process's CPU time, which other jobs on a shared machine disturb far less than the wall clock (with
more threads it is the wall clock: spinning threads would count as work).

Also per type: whether exact decoding held (rollout 0 the same tokens and logprobs bit for bit at k = 1 and at k = 8
beside another query, and every sampled logprob equal to its teacher-forced score), and the band without it (the
engine's probe, ModelInfo.logprob_band).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional, Sequence

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
TYPES = ("Q4_0", "Q4_1", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "F16", "BF16")
KS = (1, 5, 8, 32)
N_LAYER = 6  # SmolLM2-135M has 30 layers of width 576: 6 of width 512 keep the benchmark to a few minutes
QUERY = "Explain in detail how a steam engine works"


def write_models(directory: str, types: Sequence[str]) -> dict[str, Path]:
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_gguf import write_quantized, write_tiny_gguf

    src = write_tiny_gguf(Path(directory) / "synthetic-512.f32.gguf", n_vocab=32000, n_embd=512, n_layer=N_LAYER,
                          n_head=8, n_head_kv=4, n_ff=1536, seed=3, tie_embeddings=False)
    models = {t: write_quantized(src, Path(directory) / f"synthetic-512.{t}.gguf", t) for t in types}
    src.unlink()
    return models


def _rollouts(engine, queries, k, params):
    from explorer.core.types import RolloutFinished

    return {e.rollout.id: e.rollout for e in engine.generate(queries, k, params, chat=False)
            if isinstance(e, RolloutFinished)}


def _holds(engine, params) -> bool:
    """Exact decoding's three promises on this engine: across k and company, sampled = teacher-forced."""
    alone = _rollouts(engine, [QUERY], 1, params)["q0.r0"]
    together = _rollouts(engine, [QUERY, "Hello world"], 8, params)
    same = alone.tokens == together["q0.r0"].tokens
    group = [together[f"q0.r{i}"] for i in range(8)]
    _, prompt = engine.format_prompt(QUERY, chat=False)
    scored = engine.score_token_ids(list(prompt), [list(r.token_ids) for r in group])
    return same and all([t.logprob for t in s] == [t.logprob for t in r.tokens] for s, r in zip(scored, group))


def measure_type(path: Path, ks: Sequence[int], n_tokens: int, rounds: int, threads: Optional[int]) -> dict:
    from explorer.core.engine.local import Engine
    from explorer.core.engine.llama_backend import default_threads
    from explorer.core.types import SamplingParams

    cpu_clock = (threads or default_threads()) == 1
    clock = time.process_time if cpu_clock else time.perf_counter
    params = SamplingParams(max_tokens=n_tokens, seed=7, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)
    engine = Engine(str(path), n_threads=threads, exact=False)
    try:
        band = engine.info.logprob_band
        engine.set_exact(True)
        row = {"shape": engine.exact_shape, "band": band, "holds": _holds(engine, replace(params, max_tokens=24))}

        def rate(k: int, exact: bool) -> float:
            engine.set_exact(exact)
            _rollouts(engine, ["."], 1, SamplingParams(max_tokens=1))  # sizes the context, evicts the prompt
            t0 = clock()
            n = sum(len(r.tokens) for r in _rollouts(engine, [QUERY], k, params).values())
            return n / (clock() - t0)

        for k in ks:
            ratios, on, off = [], [], []
            for r in range(rounds):
                order = (True, False) if r % 2 == 0 else (False, True)
                got = {mode: rate(k, mode) for mode in order}
                on.append(got[True])
                off.append(got[False])
                ratios.append(got[True] / got[False])
            row[k] = {"exact_tok_s": statistics.median(on), "today_tok_s": statistics.median(off),
                      "ratio": statistics.median(ratios), "low": min(ratios), "high": max(ratios)}
    finally:
        engine.close()
    row["clock"] = "cpu" if cpu_clock else "wall"
    return row


def run_exact_bench(types: Sequence[str] = TYPES, ks: Sequence[int] = KS, n_tokens: int = 12, rounds: int = 2,
                    threads: Optional[int] = None, log=None) -> list[dict]:
    """One row per type: the micro-batch shape, whether exactness held, the band without it, and per k tokens/s
    with and without it and their ratio (median and spread over the rounds)."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-exact-") as tmp:
        if log:
            log("writing the synthetic width-512 model and quantizing it ...")
        models = write_models(tmp, types)
        for t in types:
            result = measure_type(models[t], ks, n_tokens, rounds, threads)
            result["type"] = t
            rows.append(result)
            if log:
                log(f"  {t}: " + ", ".join(f"k={k} {result[k]['ratio']:.2f}" for k in ks))
    return rows


def print_exact_table(rows: list[dict], ks: Sequence[int] = KS) -> None:
    clock = rows[0]["clock"] if rows else "cpu"
    print(f"\nExact decoding against today, per quantization type (synthetic width-512 model; tokens/s exact / "
          f"today, {clock} clock: median ratio [spread over the rounds])")
    head = f"{'type':7} {'shape':>9} {'exact':>5} {'band off':>9}"
    for k in ks:
        head += f" {'k=' + str(k):>24}"
    print(head)
    for r in rows:
        shape = r["shape"]
        line = f"{r['type']:7} {f'{shape.min_rows}/{shape.multiple}':>9} {'yes' if r['holds'] else 'NO':>5} "
        line += f"{r['band']:>9.2g}" if r["band"] is not None else f"{'-':>9}"
        for k in ks:
            c = r[k]
            line += (f" {c['exact_tok_s']:6.0f}/{c['today_tok_s']:<6.0f} {c['ratio']:.2f}"
                     f" [{c['low']:.2f}-{c['high']:.2f}]")
        print(line)
    print("  shape: rows per micro-batch at least / a multiple of (1/1: no padding); band off: the largest logprob "
          "difference between a one-row decode and a batched pass without exact decoding (nats, on a 64-token probe)")


if __name__ == "__main__":
    def _log(msg):
        print(msg, file=sys.stderr, flush=True)

    print_exact_table(run_exact_bench(log=_log))
