"""Engine throughput against the naive llama-cpp-python baseline and the bare batched decode loop (the ceiling).

`run_engine_bench(model_path, ks)` returns one dict per k. Every method runs in a worker process of its own (this file,
run as `engine_bench.py worker '<json>'`), so each gets its own peak RSS; each worker times `repeats` runs, the engine
and bare workers alternate for `rounds` rounds (the machine may be shared: alternating keeps a burst of load from
favouring one side), and the best time is kept.

Fairness: the engine generates first and writes its token ids; the bare loop replays exactly those ids, step by step,
in the same batch shapes, so both decode the very same tokens. The naive baseline samples with the same settings and
is compared per generated token (it may stop early at an end-of-generation token).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

QUERY = "Explain in detail how a steam engine works, step by step."
FLUSH_TEXT = "."  # a raw prompt that shares no token with the chat prompt: the next run decodes its prompt in full
SEED = 1234
TOP_N = 5
N_TOKENS = 64
NAIVE_MAX_CALLS = 8  # naive calls timed per k; a larger k is extrapolated per token (calls are independent)
WORKER_TIMEOUT_S = 400


def _peak_rss_mb() -> float:
    """This process's peak resident set. VmHWM belongs to the address space exec created; ru_maxrss would also
    count the parent's size at fork, which Linux carries over into the child."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0  # bytes on macOS, KiB on Linux


def _drain(events):
    from explorer.core.types import RolloutFinished, RunFinished

    rollouts, timings = [], None
    for ev in events:
        if isinstance(ev, RolloutFinished):
            rollouts.append(ev.rollout)
        elif isinstance(ev, RunFinished):
            timings = ev.timings
    return sorted(rollouts, key=lambda r: r.index), timings


class _Clock:
    """Wraps functions the engine calls (llama_decode + logits access, the sampler) to add up their time: where the
    engine's time goes, measured inside the same run, so a burst of load on a shared machine cannot skew the split."""

    def __init__(self):
        self.spent: dict[str, float] = {}
        self._undo = []

    def wrap(self, owner, name: str, bucket: str) -> None:
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.spent[bucket] = self.spent.get(bucket, 0.0) + time.perf_counter() - t0

        setattr(owner, name, timed)
        self._undo.append((owner, name, original))

    def reset(self) -> None:
        self.spent = {}


def measure_engine(model_path: str, k: int, n_tokens: int, repeats: int, ids_out: Optional[str],
                   threads: Optional[int] = None, ubatch: Optional[int] = None) -> dict:
    from explorer.core.engine import local as engine_module
    from explorer.core.engine import llama_backend
    from explorer.core.engine.local import Engine
    from explorer.core.types import SamplingParams

    if ubatch:  # only for comparing micro-batch sizes (run_ubatch_comparison)
        llama_backend.N_UBATCH = ubatch

    clock = _Clock()
    clock.wrap(llama_backend.LlamaContext, "decode", "decode_s")
    clock.wrap(llama_backend.LlamaContext, "logits_rows", "decode_s")
    clock.wrap(engine_module, "sample_step", "sample_s")
    splits = []
    engine = Engine(model_path, n_threads=threads)
    params = SamplingParams(max_tokens=n_tokens, seed=SEED, top_n=TOP_N)
    flush = SamplingParams(max_tokens=1, seed=SEED, top_n=TOP_N)
    times, prompt_times, score_times = [], [], []
    rollouts = []
    try:
        for _ in range(repeats):
            # untimed: sizes the context for k sequences and evicts the query's prompt from the KV cache, so every
            # timed run decodes its prompt in full, as the bare loop does
            _drain(engine.generate([FLUSH_TEXT], k, flush, chat=False))
            clock.reset()
            t0 = time.perf_counter()
            rollouts, timings = _drain(engine.generate([QUERY], k, params))
            times.append(time.perf_counter() - t0)
            prompt_times.append(timings.prompt_s)
            splits.append(dict(clock.spent, total_s=times[-1]))
        _, prompt_ids = engine.format_prompt(QUERY)
        for _ in range(repeats):  # teacher-forced scoring of what was sampled, one pass (prompt reused)
            t0 = time.perf_counter()
            engine.score_token_ids(list(prompt_ids), [[t.id for t in r.tokens] for r in rollouts], TOP_N)
            score_times.append(time.perf_counter() - t0)
        n_ctx = engine.info.n_ctx
        n_vocab = engine.info.n_vocab
    finally:
        engine.close()
    ids = [[t.id for t in r.tokens] for r in rollouts]
    if ids_out:
        Path(ids_out).write_text(json.dumps({"prompt_ids": list(prompt_ids), "rollouts": ids, "n_ctx": n_ctx}))
    best = splits[times.index(min(times))]
    return {"times": times, "tokens": sum(map(len, ids)), "prompt_s": min(prompt_times), "n_vocab": n_vocab,
            "score_s": min(score_times),
            "finish": sorted({r.finish_reason for r in rollouts}), "split": best,
            "overheads": [(sp["total_s"] - sp.get("decode_s", 0.0)) / sp["total_s"] for sp in splits]}


def _worker(spec: dict) -> dict:
    method = spec["method"]
    if method == "engine":
        out = measure_engine(spec["model"], spec["k"], spec["n_tokens"], spec["repeats"], spec.get("ids_out"),
                             spec.get("threads"), spec.get("ubatch"))
    elif method == "bare":
        from bench.baselines import measure_bare

        data = json.loads(Path(spec["ids_in"]).read_text())
        out = measure_bare(spec["model"], data["prompt_ids"], data["rollouts"], data["n_ctx"], spec["repeats"],
                           spec.get("threads"))
    elif method == "naive":
        from bench.baselines import measure_naive

        out = measure_naive(spec["model"], QUERY, spec["calls"], spec["n_tokens"], TOP_N, SEED, spec["repeats"],
                            spec.get("threads"))
    else:
        raise SystemExit(f"unknown method {method!r}")
    out["peak_rss_mb"] = _peak_rss_mb()
    return out


def _spawn(spec: dict) -> dict:
    """Run one measurement in a fresh interpreter; its last stdout line is the JSON result."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "worker", json.dumps(spec)]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S, env=env)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"{spec['method']} worker (k={spec.get('k')}) failed: " + " | ".join(tail))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _merge(results: list[dict]) -> dict:
    merged = dict(results[0])
    merged["times"] = [t for r in results for t in r["times"]]
    merged["best_s"] = min(merged["times"])
    merged["peak_rss_mb"] = max(r["peak_rss_mb"] for r in results)
    return merged


def run_engine_bench(model_path: str, ks: Sequence[int] = (1, 8, 32), n_tokens: int = N_TOKENS, naive: bool = True,
                     repeats: int = 2, rounds: int = 2, label: str = "", log=None,
                     threads: Optional[int] = None) -> list[dict]:
    """One row per k: tokens/s of engine, bare decode and (optionally) naive; ratios; peak RSS per method."""
    rows = []
    naive_cache: dict[int, dict] = {}
    with tempfile.TemporaryDirectory(prefix="engine-bench-") as tmp:
        for k in ks:
            ids_path = str(Path(tmp) / f"ids-k{k}.json")
            engine_runs, bare_runs = [], []
            for _ in range(rounds):
                engine_runs.append(_spawn({"method": "engine", "model": model_path, "k": k, "n_tokens": n_tokens,
                                           "repeats": repeats, "ids_out": ids_path, "threads": threads}))
                bare_runs.append(_spawn({"method": "bare", "model": model_path, "k": k, "repeats": repeats,
                                         "ids_in": ids_path, "threads": threads}))
            eng, bare = _merge(engine_runs), _merge(bare_runs)
            row = {"model": label, "n_vocab": eng["n_vocab"], "k": k, "tokens": eng["tokens"],
                   "engine_tok_s": eng["tokens"] / eng["best_s"], "engine_s": eng["best_s"],
                   "engine_prompt_s": eng["prompt_s"], "engine_rss_mb": eng["peak_rss_mb"],
                   "bare_tok_s": bare["tokens"] / bare["best_s"], "bare_s": bare["best_s"],
                   "bare_prompt_s": bare["prompt_s"], "bare_rss_mb": bare["peak_rss_mb"],
                   "engine_over_bare": eng["best_s"] / bare["best_s"], "finish": eng["finish"],
                   "non_decode_share": min(o for r in engine_runs for o in r["overheads"]),
                   "engine_split": min((r["split"] for r in engine_runs), key=lambda sp: sp["total_s"])}
            if naive:
                calls = min(k, NAIVE_MAX_CALLS)
                if calls not in naive_cache:
                    naive_cache[calls] = _spawn({"method": "naive", "model": model_path, "calls": calls,
                                                 "n_tokens": n_tokens, "repeats": repeats, "threads": threads})
                nv = naive_cache[calls]
                row.update(naive_tok_s=nv["tokens"] / nv["times"][0], naive_tokens=nv["tokens"], naive_calls=calls,
                           naive_extrapolated=calls < k, naive_rss_mb=nv["peak_rss_mb"])
                row["engine_vs_naive"] = row["engine_tok_s"] / row["naive_tok_s"]
            rows.append(row)
            if log:
                log(f"  {label} k={k}: engine {row['engine_tok_s']:.0f} tok/s, bare {row['bare_tok_s']:.0f} tok/s"
                    + (f", naive {row['naive_tok_s']:.1f} tok/s" if naive else ""))
    return rows


def run_ubatch_comparison(model_path: str, ks: Sequence[int] = (8, 70), n_tokens: int = N_TOKENS,
                          ubatches: Sequence[int] = (512, 63), repeats: int = 2, rounds: int = 2,
                          log=None) -> list[dict]:
    """Generation and scoring time per micro-batch size (n_ubatch), the sizes alternating in each round; ratios
    against the first size. The engine decodes in micro-batches below 64 so that sampling and scoring share kernels."""
    rows = []
    for k in ks:
        runs: dict[int, list[dict]] = {u: [] for u in ubatches}
        for _ in range(rounds):
            for u in ubatches:
                runs[u].append(_spawn({"method": "engine", "model": model_path, "k": k, "n_tokens": n_tokens,
                                       "repeats": repeats, "ubatch": u}))
        base = None
        for u in ubatches:
            gen_s = min(t for r in runs[u] for t in r["times"])
            score_s = min(r["score_s"] for r in runs[u])
            tokens = runs[u][0]["tokens"]
            base = base or (gen_s, score_s)
            rows.append({"k": k, "n_ubatch": u, "tokens": tokens, "generate_tok_s": tokens / gen_s,
                         "score_tok_s": tokens / score_s, "generate_vs_first": base[0] / gen_s,
                         "score_vs_first": base[1] / score_s})
            if log:
                log(f"  k={k} n_ubatch={u}: generate {tokens / gen_s:.0f} tok/s ({base[0] / gen_s:.2f}x), "
                    f"score {tokens / score_s:.0f} tok/s ({base[1] / score_s:.2f}x)")
    return rows


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "worker":
        print(json.dumps(_worker(json.loads(sys.argv[2]))))
    elif sys.argv[1:] == ["ubatch"]:
        from explorer.core.models.discovery import default_model_path

        run_ubatch_comparison(str(default_model_path()), log=print)
    else:
        from explorer.core.models.discovery import default_model_path

        for r in run_engine_bench(str(default_model_path()), label="default", log=print):
            print(r)
