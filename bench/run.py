"""`make bench`: engine throughput on the default model and on a synthetic 262k-vocabulary model, then the token-tree
benchmark (and a GUI stall benchmark when bench/gui_bench.py provides one). See BENCHMARKS.md for what it measures.

Usage: python bench/run.py [--repeats N] [--rounds N] [--threads N] [--budget SECONDS] [--skip-262k] [--skip-naive] [--skip-tree]
       [--skip-remote] [--skip-exact] [--skip-dataset] [--dataset-prompts N]
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.engine_bench import N_TOKENS, TOP_N, run_engine_bench  # noqa: E402

BIG_VOCAB = 262144
TARGET_VS_NAIVE = 10.0  # at k=8
TARGET_OVER_BARE = 1.10


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _fmt_rss(*values) -> str:
    return "/".join("-" if v is None else f"{v:.0f}" for v in values)


def print_engine_table(rows: list[dict], title: str) -> None:
    print(f"\n{title}")
    naive = any("naive_tok_s" in r for r in rows)
    head = f"{'k':>3} {'tokens':>6} {'engine tok/s':>12} {'bare tok/s':>10}"
    head += f" {'naive tok/s':>12} {'engine/naive':>12}" if naive else ""
    head += f" {'engine/bare time':>16} {'non-decode':>10}  peak RSS MiB (engine/bare" + ("/naive)" if naive else ")")
    print(head)
    for r in rows:
        line = f"{r['k']:>3} {r['tokens']:>6} {r['engine_tok_s']:>12.1f} {r['bare_tok_s']:>10.1f}"
        if naive:
            mark = "*" if r.get("naive_extrapolated") else " "
            line += f" {r['naive_tok_s']:>11.1f}{mark} {r['engine_vs_naive']:>11.1f}x"
        line += f" {r['engine_over_bare']:>16.3f} {100 * r['non_decode_share']:>9.1f}%"
        line += "  " + _fmt_rss(r["engine_rss_mb"], r["bare_rss_mb"], *([r.get("naive_rss_mb")] if naive else []))
        print(line)
    if any(r.get("naive_extrapolated") for r in rows):
        calls = next(r["naive_calls"] for r in rows if r.get("naive_extrapolated"))
        print(f"  * naive timed over {calls} sequential calls and taken per token (its calls are independent)")


def print_targets(rows: list[dict], big_rows: list[dict]) -> bool:
    print("\nTargets")
    ok_all = True
    k8 = [r for r in rows if r["k"] == 8 and "engine_vs_naive" in r]
    if k8:
        met = k8[0]["engine_vs_naive"] >= TARGET_VS_NAIVE
        ok_all &= met
        print(f"  k=8: engine >= {TARGET_VS_NAIVE:.0f}x naive: {k8[0]['engine_vs_naive']:.1f}x  "
              + ("MET" if met else "NOT MET"))
    for label, group in (("default model", rows), ("262k vocabulary", big_rows)):
        for r in group:
            met = r["engine_over_bare"] <= TARGET_OVER_BARE
            ok_all &= met
            print(f"  {label}, k={r['k']}: engine time within {100 * (TARGET_OVER_BARE - 1):.0f}% of bare decode: "
                  f"{100 * (r['engine_over_bare'] - 1):+.1f}%  " + ("MET" if met else "NOT MET")
                  + f"  (engine's own non-decode share {100 * r['non_decode_share']:.1f}%)")
    return ok_all


def print_dict_table(rows: list[dict], title: str) -> None:
    print(f"\n{title}")
    if not rows:
        print("  (no rows)")
        return
    keys = list(dict.fromkeys(k for r in rows for k in r))
    cells = [[(f"{r[k]:.2f}" if isinstance(r.get(k), float) else str(r.get(k, ""))) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    print("  " + "  ".join(k.ljust(w) for k, w in zip(keys, widths)))
    for c in cells:
        print("  " + "  ".join(v.ljust(w) for v, w in zip(c, widths)))


def _optional_bench(module: str, function: str):
    """bench/<module>.py's <function>, or None when that benchmark is not there (or cannot be imported here)."""
    try:
        return getattr(importlib.import_module(f"bench.{module}"), function)
    except (ImportError, AttributeError) as exc:
        log(f"{module}: skipped ({type(exc).__name__}: {exc})")
        return None


def print_remote_tables() -> None:
    bench = _optional_bench("remote_bench", "run_remote_bench")
    if bench is None:
        return
    overhead, throughput = bench(log)
    print_dict_table(overhead, "Remote client (llama_cpp.server on 127.0.0.1) against a bare httpx client replaying "
                               "the same requests (target: client/bare <= 1.05)")
    for r in overhead:
        print(f"  k={r['k']}: client within 5% of the bare client: {100 * (r['client/bare'] - 1):+.1f}%  "
              + ("MET" if r["client/bare"] <= 1.05 else "NOT MET"))
    print_dict_table(throughput, "Remote (llama_cpp.server, one request at a time) against the local engine, same "
                                 "model, same run")


def print_dataset_tables(prompts: int, threads) -> None:
    speed = _optional_bench("dataset_bench", "run_dataset_bench")
    memory = _optional_bench("dataset_bench", "run_dataset_memory")
    if speed is None or memory is None:
        return
    rows = speed(log, prompts, threads=threads)
    print_dict_table(rows, f"Dataset run end to end (generate over a dataset: rewards, summaries, each group written "
                           f"as it finishes) against plain generation of the same tokens, {rows[0]['threads']} "
                           "threads (the command line's: every core)")
    ratio = next(r["vs plain"] for r in rows if r["method"] == "dataset run")
    print(f"  dataset run >= 0.9x plain generation: {ratio:.2f}x  " + ("MET" if ratio >= 0.9 else "NOT MET"))
    print_dict_table(memory(log), "Memory of a dataset run against the dataset's size (scripted engine, every "
                                  "rollout to max tokens, top-5), and one Session holding the whole set")


def write_big_vocab_model(directory: str) -> str:
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_gguf import write_tiny_gguf

    # SmolLM2-135M's body (576 wide, 30 layers, 9 heads / 3 KV heads) with a 262k vocabulary: the per-token softmax,
    # top-N and sampling over the vocabulary are what this row stresses
    path = Path(directory) / "synthetic-262k.gguf"
    write_tiny_gguf(path, n_vocab=BIG_VOCAB, n_embd=576, n_layer=30, n_head=9, n_head_kv=3, n_ff=1536, dtype="f16")
    return str(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per worker process (best kept)")
    ap.add_argument("--rounds", type=int, default=1, help="engine/bare worker processes, alternated, per k")
    ap.add_argument("--budget", type=float, default=float(os.environ.get("BENCH_BUDGET_S", 540)),
                    help="seconds; optional parts (262k vocabulary at k=32) are skipped past it")
    ap.add_argument("--threads", type=int, default=None,
                    help="llama.cpp threads for all three methods (default: the engine's own default)")
    ap.add_argument("--skip-262k", action="store_true")
    ap.add_argument("--skip-naive", action="store_true")
    ap.add_argument("--skip-tree", action="store_true")
    ap.add_argument("--skip-remote", action="store_true", help="skip the llama_cpp.server client benchmark")
    ap.add_argument("--skip-exact", action="store_true", help="skip the exact-decoding cost per quantization type")
    ap.add_argument("--skip-dataset", action="store_true", help="skip the dataset-run benchmarks")
    ap.add_argument("--dataset-prompts", type=int, default=200, help="prompts of the dataset-run speed benchmark")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()

    from explorer.core.engine.llama_backend import default_threads
    from explorer.core.models.discovery import default_model_path

    from importlib import metadata

    from explorer.core.errors import ExplorerError

    try:
        model = default_model_path()
    except ExplorerError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"Engine benchmark: {N_TOKENS} new tokens per rollout, top-{TOP_N} logprobs, temperature 1, top-k 40, "
          f"top-p 0.95, min-p 0.05, fixed seed; llama-cpp-python {metadata.version('llama_cpp_python')}, "
          f"{args.threads or default_threads()} llama.cpp threads of {os.cpu_count()} CPUs")
    log("default model ...")
    rows = run_engine_bench(str(model), (1, 8, 32), naive=not args.skip_naive, repeats=args.repeats,
                            rounds=args.rounds, label="default", log=log,
                            threads=args.threads)
    print_engine_table(rows, f"Default model ({Path(model).name}, vocabulary {rows[0]['n_vocab']})")

    big_rows: list[dict] = []
    if not args.skip_262k:
        with tempfile.TemporaryDirectory(prefix="bench-262k-") as tmp:
            log("writing the synthetic 262k-vocabulary model ...")
            big = write_big_vocab_model(tmp)
            big_rows = run_engine_bench(big, (8,), naive=False, repeats=args.repeats, rounds=args.rounds,
                                        label="262k", log=log, threads=args.threads)
            elapsed = time.perf_counter() - t_start
            # k=32 on the big vocabulary takes about as long as everything before it; run it when time allows
            if elapsed < args.budget * 0.55:
                big_rows += run_engine_bench(big, (32,), naive=False, repeats=args.repeats, rounds=1,
                                             label="262k", log=log, threads=args.threads)
            else:
                log(f"262k k=32 skipped: {elapsed:.0f} s spent of a {args.budget:.0f} s budget")
        print_engine_table(big_rows, f"Synthetic model, vocabulary {BIG_VOCAB} (SmolLM2-135M-sized body, random f16 "
                                     "weights; no naive baseline)")
    print_targets(rows, big_rows)
    if not args.skip_exact:
        from bench.exact_bench import print_exact_table, run_exact_bench

        log("exact decoding per quantization type ...")
        print_exact_table(run_exact_bench(threads=args.threads, log=log))
    if not args.skip_remote:
        print_remote_tables()
    if not args.skip_dataset:
        print_dataset_tables(args.dataset_prompts, args.threads)

    if not args.skip_tree:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        for module, function, title in (
                ("tree_bench", "run_tree_bench", "Token tree icicle (64 rollouts x 512 tokens, top-5 ghosts; target <= 33 ms "
                                                 "per repaint)"),
                ("gui_bench", "run_gui_bench", "GUI event-loop stalls"),
                ("gui_bench", "run_cpu_share", "The window's CPU time against the engine's while k = 64 streams "
                                               "(target: gui/engine <= 0.10)"),
                ("reliability_bench", "run_reliability_bench", "Memory with large inputs (peak RSS of a fresh "
                                                               "process per case; target load <= 3x the file)"),
                ("reliability_bench", "run_window_soak", "Memory over time: consecutive runs in one window"),
                ("reliability_bench", "run_signal_exit_bench", "Signals to the window: time to exit")):
            bench = _optional_bench(module, function)
            if bench is not None:
                log(f"{module} ...")
                print_dict_table(bench(), title)
    bench = _optional_bench("reference_bench", "run_reference_bench")
    if bench is not None:
        log("reference_bench ...")
        print_dict_table(bench(), "Reference policy pass per token, k=8 x 32 tokens, after the run and while "
                                  "sampling (target: at most one more scoring of the same tokens)")
    bench = _optional_bench("value_bench", "run_value_bench")
    if bench is not None:
        log("value_bench ...")
        print_dict_table(bench(log), "Value run (K=10 forks x N=3 alternatives x M=8 continuations, 48 tokens) against "
                                     "plain generation of as many rollouts (target: <= 1.10x per token)")
    print(f"\nTotal benchmark time: {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
