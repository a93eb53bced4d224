"""Dataset runs: end to end against plain generation of the same tokens, and memory against the dataset's size.

`run_dataset_bench(log, prompts, k, tokens, threads, rounds)`: the default model, `prompts` prompts x k x `tokens`,
run two ways in worker processes of their own (this file, run as `dataset_bench.py worker '<json>'`), alternated for
`rounds` rounds (the machine may be shared), best time kept: `plain`, engine.generate over the same prompts in the
same calls with its events drained (nothing kept, nothing written), and `dataset run`, the command line's DatasetRun
(every group rewarded with `contains`, summarized, written to disk as it finishes, the set written at the end). Both
decode the very same tokens (same prompts, same calls, same seeds).

`run_dataset_memory(log, sizes, k, tokens)`: the scripted engine (tests/fake_engine.py, made to run every rollout to
max tokens) through a DatasetRun of each size, and, for contrast, through one Session that holds the whole set (as
generate did before dataset runs), each in a fresh process: its peak RSS and the file written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.engine_bench import _peak_rss_mb  # noqa: E402

WORKER_TIMEOUT_S = 3600


def _queries(n: int):
    from explorer.core.types import Query

    subjects = ("the sea", "a river", "the moon", "a forest", "the desert", "a city", "the wind", "a mountain")
    return [Query(f"In two sentences, describe {subjects[i % len(subjects)]} (number {i}).", "the")
            for i in range(n)]


def _speed_worker(spec: dict) -> dict:
    from explorer.core.dataset.run import DatasetRun, calls, numbered
    from explorer.core.engine.local import Engine
    from explorer.core.models.discovery import default_model_path
    from explorer.core.rl.rewards import load_reward
    from explorer.core.types import SamplingParams, TokenBatch

    engine = Engine(default_model_path(), n_threads=spec["threads"])
    params = SamplingParams(max_tokens=spec["tokens"], seed=1234)
    queries = numbered(_queries(spec["prompts"]))
    try:
        t0 = time.perf_counter()
        n_tokens = 0
        if spec["method"] == "plain":
            for batch in calls(queries, spec["k"]):
                for event in engine.generate(batch, spec["k"], params):
                    if isinstance(event, TokenBatch):
                        n_tokens += len(event.events)
        else:
            with tempfile.TemporaryDirectory(prefix="bench-dataset-") as tmp:
                run = DatasetRun(engine, queries, spec["k"], params, str(Path(tmp) / "set.json"),
                                 reward=load_reward("contains"))
                n_tokens = run.run().tokens
        elapsed = time.perf_counter() - t0
    finally:
        engine.close()
    return {"seconds": elapsed, "tokens": n_tokens, "peak_rss_mb": _peak_rss_mb()}


def _memory_worker(spec: dict) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import fake_engine
    from fake_engine import FakeEngine

    from explorer.core.dataset.run import DatasetRun, calls, numbered
    from explorer.core.files import export
    from explorer.core.rl.rewards import load_reward
    from explorer.core.session import Session
    from explorer.core.types import SamplingParams

    scripted = fake_engine.raw_logprobs
    fake_engine.raw_logprobs = lambda context, generated=0: scripted(context, 0)  # end of text stays rare
    engine = FakeEngine("fake:bench")
    params = SamplingParams(max_tokens=spec["tokens"], seed=7)
    queries = numbered(_queries(spec["prompts"]))
    with tempfile.TemporaryDirectory(prefix="bench-dataset-") as tmp:
        out = Path(tmp) / "set.json"
        t0 = time.perf_counter()
        if spec["method"] == "dataset run":
            result = DatasetRun(engine, queries, spec["k"], params, str(out), reward=load_reward("contains")).run()
            n_tokens = result.tokens
        else:
            session = Session(engine.info, params)
            for batch in calls(queries, spec["k"]):
                session.extend(engine.generate(batch, spec["k"], params))
            session.set_reward(load_reward("contains"))
            export.save(session.rollout_set(), out)
            n_tokens = sum(len(r.tokens) for g in session.groups() for r in g.rollouts)
        elapsed = time.perf_counter() - t0
        size = out.stat().st_size
    return {"seconds": elapsed, "tokens": n_tokens, "peak_rss_mb": _peak_rss_mb(), "file_mb": size / 2**20}


def _run_worker(spec: dict, log: Callable[[str], None]) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "worker", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S,
                          env=dict(os.environ, ROLLOUT_EXPLORER_VERBOSE=""))
    if proc.returncode != 0:
        log(proc.stderr[-2000:])
        raise RuntimeError(f"dataset bench worker failed: {spec}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_dataset_bench(log: Callable[[str], None], prompts: int = 200, k: int = 8, tokens: int = 64,
                      threads: Optional[int] = None, rounds: int = 1) -> list[dict]:
    from explorer.core.engine.llama_backend import default_threads

    threads = threads or default_threads(every_core=True)  # the command line's own
    best: dict[str, dict] = {}
    for r in range(rounds):
        for method in ("plain", "dataset run"):
            log(f"dataset bench, round {r + 1}: {method}, {prompts} prompts x {k} x {tokens} tokens, {threads} threads")
            got = _run_worker({"kind": "speed", "method": method, "prompts": prompts, "k": k, "tokens": tokens,
                               "threads": threads}, log)
            if method not in best or got["seconds"] < best[method]["seconds"]:
                best[method] = got
    rows = []
    for method, got in best.items():
        rows.append({"method": method, "prompts x k x tokens": f"{prompts} x {k} x {tokens}", "threads": threads,
                     "tokens": got["tokens"], "seconds": got["seconds"], "tok/s": got["tokens"] / got["seconds"],
                     "vs plain": (best["plain"]["seconds"] / got["seconds"]), "peak RSS MiB": got["peak_rss_mb"]})
    return rows


def run_dataset_memory(log: Callable[[str], None], sizes=(100, 1000), k: int = 8, tokens: int = 128,
                       session_sizes=(100, 250)) -> list[dict]:
    rows = []
    cases = [("dataset run", n) for n in sizes] + [("one Session", n) for n in session_sizes]
    for method, n in cases:
        log(f"dataset memory: {method}, {n} prompts x {k} x {tokens} tokens (scripted engine)")
        got = _run_worker({"kind": "memory", "method": method, "prompts": n, "k": k, "tokens": tokens}, log)
        rows.append({"method": method, "prompts x k x tokens": f"{n} x {k} x {tokens}", "tokens": got["tokens"],
                     "seconds": got["seconds"], "peak RSS MiB": got["peak_rss_mb"], "set file MiB": got["file_mb"]})
    return rows


def main(argv=None) -> int:
    import argparse

    from bench.run import print_dict_table

    ap = argparse.ArgumentParser(description="dataset runs: speed against plain generation, memory against size")
    ap.add_argument("--prompts", type=int, default=200)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--memory-sizes", default="100,1000")
    args = ap.parse_args(argv)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    if not args.skip_speed:
        print_dict_table(run_dataset_bench(log, args.prompts, threads=args.threads, rounds=args.rounds),
                         "Dataset run end to end against plain generation of the same tokens (default model; "
                         "target: vs plain >= 0.9)")
    if not args.skip_memory:
        sizes = tuple(int(x) for x in args.memory_sizes.split(","))
        print_dict_table(run_dataset_memory(log, sizes), "Memory of a dataset run against the dataset's size "
                                                        "(scripted engine, every rollout to max tokens, top-5)")
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "worker":
        spec = json.loads(sys.argv[2])
        result = _speed_worker(spec) if spec["kind"] == "speed" else _memory_worker(spec)
        print(json.dumps(result))
        sys.exit(0)
    sys.exit(main())
