"""The command line's dataset parts: generate's run over N prompts (progress, ETA, Stop, resume), `stats` (the
overview of a set: one row per prompt, the dataset's summary) and `export` (a set as a trainer's dataset).

Every failure a user can cause is an ExplorerError (or cli._UsageError) that main() prints as one line.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import threading
import time
from typing import Optional

SORT_CHOICES = ("id", "query", "mean_reward", "reward_std", "pass_at_1", "pass_at_k", "mean_length",
                "truncation_rate", "mean_entropy", "distinct_responses", "mean_kl")  # rl/overview.SORT_KEYS
PLANNER_SHOWN = (2, 4, 8, 16, 32, 64)


def add_dataset_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prompt-column", default=None, metavar="NAME",
                   help="a dataset's prompt column (default: the first of prompt, query, question, problem; a dotted "
                        "name reaches into an object)")
    p.add_argument("--answer-column", default=None, metavar="NAME",
                   help="a dataset's reference-answer column (default: the first of reference, "
                        "reward_model.ground_truth, answer, solution, ground_truth)")


def add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resume", default=None, metavar="SET.json",
                   help="keep the groups of this set (or of the OUT.partial a crash left) and sample only the prompts "
                        "it lacks; give the same dataset and options (-o defaults to it)")
    p.add_argument("--correct-at", type=float, default=1.0, metavar="R",
                   help="a reward >= R counts as correct for pass@k and the zero-variance outcomes")
    add_threads_arg(p)


def add_threads_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="llama.cpp threads (default: every core, or $ROLLOUT_EXPLORER_THREADS; the window uses half)")


def cli_threads(args) -> Optional[int]:
    """The command line's thread count: --threads, else every core (ROLLOUT_EXPLORER_THREADS overrides that)."""
    if getattr(args, "threads", None) is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1 (got {args.threads})")
        return args.threads
    from explorer.core.engine.llama_backend import default_threads

    return default_threads(every_core=True)


def add_stats_parser(sub) -> None:
    st = sub.add_parser("stats", help="one row per prompt of a rollout set (pass@k, zero-variance groups, lengths) "
                                      "and the dataset's summary (signal share, pass@k curve, group-size planner)")
    st.add_argument("input", help="a rollout-set JSON file (or a run's OUT.partial)")
    st.add_argument("--sort", choices=SORT_CHOICES, default="id", help="the rows' order (default: id)")
    st.add_argument("--desc", action="store_true", help="sort descending")
    st.add_argument("--zero-variance-only", action="store_true",
                    help="only groups whose rewards are all equal (no learning signal)")
    st.add_argument("--signal-only", action="store_true", help="only groups whose rewards differ")
    st.add_argument("--reward-below", type=float, default=None, metavar="X", help="only groups of mean reward < X")
    st.add_argument("--reward-above", type=float, default=None, metavar="X", help="only groups of mean reward > X")
    st.add_argument("--correct-at", type=float, default=None, metavar="R",
                    help="a reward >= R counts as correct (default: the set's, else 1)")
    st.add_argument("--limit", type=int, default=None, metavar="N", help="show at most N rows")
    st.add_argument("--json", action="store_true", help="print JSON (summary and rows) for machines")


def add_export_parser(sub) -> None:
    ex = sub.add_parser("export", help="a rollout set as a trainer's dataset: JSONL or Parquet, one row per rollout "
                                       "(prompt as the dataset gave it, completion, reward, advantage, logprobs)")
    ex.add_argument("input", help="a rollout-set JSON file")
    ex.add_argument("-o", "--output", required=True, help="OUT.jsonl or OUT.parquet ('-': JSONL on stdout)")
    ex.add_argument("--for", dest="trainer", choices=("trl", "verl"), default="trl",
                    help="whose columns: TRL's prompt/completion, or verl's data_source/prompt/ability/reward_model/"
                         "extra_info/response (default: trl)")
    ex.add_argument("--format", choices=("jsonl", "parquet"), default=None,
                    help="default: by the output's suffix (.parquet, else JSONL)")


# -- generate's run ----------------------------------------------------------------------------------------------

def format_stat(value, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def mismatch_line(label: str, mismatch: Optional[dict]) -> str:
    """One line of the mismatch numbers (mismatch.NAME), with each estimator's bias against the exact KL."""
    if not mismatch:
        return f"{label}: no sampled tokens evaluated"
    m = {k.partition(".")[2]: v for k, v in mismatch.items()}
    exact = m["kl_exact"]
    estimators = []
    for name in ("kl_k1", "kl_k2", "kl_k3"):
        value = m[name]
        bias = "" if exact is None or value is None else f" (bias {value - exact:+.3g})"
        estimators.append(f"{name[3:]} {format_stat(value)}{bias}")
    ess = m["ess"]
    return (f"{label}: |pi - pi_ref| max {format_stat(m['prob_diff_max'])} mean {format_stat(m['prob_diff_mean'])}"
            f" std {format_stat(m['prob_diff_std'])}, pearson {format_stat(m['prob_pearson'], 6)}; "
            f"weights min(pi_ref/pi, {m['tis_cap']:g}): clipped {100 * m['tis_clip_fraction']:.2f}%, "
            f"ESS {format_stat(ess, 5)} of {m['n_tokens']:g} tokens; KL estimators per token " + ", ".join(estimators)
            + f", exact {format_stat(exact) if exact is not None else 'unavailable (a server sends no full rows)'}")



def _duration(seconds: Optional[float]) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "--"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class RunProgress:
    """Prompts done of N, tokens, pace and ETA: a bar redrawn on a terminal, a line every tenth otherwise. The share
    done is the larger of the prompts finished and the tokens made of their upper bound (k x max tokens a prompt), so
    a run of a few long prompts moves too."""

    def __init__(self, k: int, max_tokens: int, stream=None):
        self.k = k
        self.max_tokens = max_tokens
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._shown = 0  # the first line at 10 %: something has been made by then
        self._drawn = 0.0

    def __call__(self, p) -> None:
        finished = p.resumed + p.done
        todo = max(1, p.total - p.resumed)
        share = min(1.0, max(finished / max(1, p.total), p.tokens / (todo * self.k * self.max_tokens)))
        rate = p.tokens / p.elapsed_s if p.elapsed_s > 0 else 0.0
        text = (f"{finished}/{p.total} prompts x {self.k}" + (f" ({p.resumed} resumed)" if p.resumed else "")
                + f", {p.tokens} tokens) {rate:.0f} tok/s, ETA {_duration(p.eta_s)}")
        pct = int(100 * share)
        if self.tty:
            now = time.monotonic()
            if now - self._drawn < 0.1 and finished < p.total:
                return
            self._drawn = now
            self.stream.write(f"\r[{'#' * (pct // 4):<25}] {pct:3d}% ({text}\033[K")
            self.stream.flush()
        elif pct // 10 > self._shown:
            self._shown = pct // 10
            self.stream.write(f"{pct}% ({text}\n")

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")


def run_dataset(args, engine, queries, params, reward_fn, reference) -> int:
    """generate's run: every group written as it finishes, Ctrl-C (or SIGTERM) keeps what finished. Returns the
    exit status."""
    from explorer.core.dataset.run import DatasetRun, ResumeError
    from explorer.core.errors import ExplorerError
    from dataclasses import replace

    from explorer.core.numbers import format_implicit_reward, format_kl, plain_minus
    from explorer.core.rl.stats import mismatch_stats, reference_stats, sampled_tokens, token_mismatch

    output = args.output or args.resume
    info = engine.info

    sampled = []  # with a reference: the sampled tokens' facts, for the set's mismatch line at the end

    def on_group(group, summary):
        for r in group.rollouts:
            if r.reward_error:
                sys.stderr.write(f"\n{r.id}: reward is null: {r.reward_error}\n")
        if reference is not None:
            stats = reference_stats(group.rollouts) or {}
            rewards = [r.implicit_reward(args.beta) for r in group.rollouts if r.log_ratio is not None]
            # the window's formats, with an ASCII minus
            mean_reward = plain_minus(format_implicit_reward(sum(rewards) / len(rewards))) if rewards else "-"
            kl = (f"mean KL {format_kl(stats.get('mean_kl'))} nats/token, p99 {format_kl(stats.get('kl_p99'))}"
                  if reference.info.has_kl else "KL unavailable (a server sends no full rows)")
            sys.stderr.write(f"{group.id} vs {reference.info.description}: {kl}, same top token "
                             f"{100 * (stats.get('same_top_share') or 0):.1f}%, mean implicit reward "
                             f"(beta {args.beta:g}) {mean_reward}\n")
            if group.rollouts:
                sys.stderr.write(mismatch_line(f"{group.id} mismatch", mismatch_stats(group.rollouts, args.tis_cap))
                                 + "\n")
            # only what the mismatch numbers read: a rollout's other facts stay on disk
            sampled.extend(replace(t, top=(), ref_top=()) for r in group.rollouts for t in sampled_tokens(r))

    def with_reference(group):
        # what the run did not evaluate while sampling (a policy on a server, a forced token) is evaluated now
        if reference is not None and any(not t.has_reference for r in group.rollouts for t in r.tokens):
            group = reference.annotate_group(group) or group
        return group

    run = DatasetRun(
        engine, queries, args.k, params, output, chat=not args.raw, system=args.system, reward=reward_fn,
        divide_by_std=not args.no_std, correct_at=args.correct_at, resume=args.resume,
        reference_policy=reference.info if reference is not None else None,
        follower=(lambda: reference.lockstep(params.top_n)) if reference is not None and reference.follows_runs
        else None, tis_cap=args.tis_cap,
        finish_group=with_reference if reference is not None else None, on_group=on_group)
    progress = RunProgress(args.k, params.max_tokens)
    cancel = threading.Event()
    stopped = {"signal": None}

    def on_stop(signum, frame):  # the first Ctrl-C stops at the next decode step and writes what finished
        if stopped["signal"] is not None:
            raise KeyboardInterrupt
        stopped["signal"] = signum
        cancel.set()
        sys.stderr.write("\ninterrupted: stopping, writing the groups that finished (Ctrl-C again to leave them in "
                         f"{output}.partial)\n")

    previous = {s: signal.signal(s, on_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    run_error = None
    try:
        run.run(cancel, progress)
    except ExplorerError as exc:
        if not (run.result.done or run.result.resumed or run.result.cut) or isinstance(exc, ResumeError):
            raise
        run_error = exc  # a server failing mid-run: what finished is written, then exit 2
    except KeyboardInterrupt:
        progress.close()
        sys.stderr.write(f"abandoned: the finished groups are in {output}.partial (resume with --resume "
                         f"{output}.partial)\n")
        return 130
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    progress.close()
    result = run.result
    if reference is not None and len(run.summaries) > 1:
        sys.stderr.write(mismatch_line("all groups mismatch", token_mismatch(sampled, args.tis_cap)) + "\n")
    t = result.timings
    sys.stderr.write(f"{result.tokens} tokens in {t.generation_s:.1f} s ({t.tokens_per_s:.1f} tokens/s) on "
                     f"{info.backend}" + (f", {cli_threads(args)} threads" if not getattr(args, "server", None)
                                         else "") + "\n")
    from explorer.core.rl.overview import summarize_dataset

    summary = summarize_dataset(run.summaries, args.correct_at)
    if summary.n_rewarded_groups:
        sys.stderr.write(f"groups with a learning signal: {summary.with_signal}/{summary.n_rewarded_groups} "
                         f"({100 * summary.signal_share:.0f}%); all correct {summary.all_correct}, all wrong "
                         f"{summary.all_wrong}; `rollout-explorer stats {output}` for each prompt\n")
    if output != "-":
        parts = [f"{result.done} groups"] + ([f"{result.resumed} resumed"] if result.resumed else []) \
            + ([f"{result.cut} cut short by the stop (--resume {output} samples them again)"] if result.cut else [])
        sys.stderr.write(f"wrote {output}: " + ", ".join(parts) + (" (partial)" if run_error else "") + "\n")
    if run_error is not None:
        sys.stderr.write(f"rollout-explorer generate: {run_error}\n")
        return 2
    if stopped["signal"] is not None:
        return 128 + stopped["signal"]
    return 0


# -- stats -------------------------------------------------------------------------------------------------------

def cmd_stats(args) -> int:
    from explorer.core.dataset.writer import read_groups
    from explorer.core.rl.outcomes import CORRECT_AT
    from explorer.core.rl.overview import select, summarize, summarize_dataset

    correct_at = args.correct_at
    summaries = []
    walk = read_groups(args.input)
    for group in walk:  # a group at a time: the rows are numbers, the set stays on disk
        if correct_at is None:
            correct_at = dict(group.stats or ()).get("correct_at")
        summaries.append(summarize(group, CORRECT_AT if correct_at is None else correct_at))
    correct_at = CORRECT_AT if correct_at is None else correct_at
    if args.correct_at is None:  # the set's threshold was found only on a later group: all use it
        summaries = [s if s.correct_at == correct_at else _with_threshold(s, correct_at) for s in summaries]
    summary = summarize_dataset(summaries, correct_at)
    rows = select(summaries, args.sort, args.desc, args.zero_variance_only, args.signal_only, args.reward_below,
                  args.reward_above)
    shown = rows if args.limit is None else rows[: max(0, args.limit)]
    if args.json:
        print(json.dumps({"summary": summary.as_dict(), "rows": [s.row() for s in shown],
                          "n_rows": len(rows)}, ensure_ascii=False, allow_nan=False))
        return 0
    print(format_summary(summary))
    print()
    print(format_table(shown))
    if len(shown) < len(rows):
        print(f"({len(rows) - len(shown)} more rows; --limit to show them)")
    return 0


def _with_threshold(s, correct_at):
    from dataclasses import replace

    return replace(s, correct_at=correct_at)


def _pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def _num(x: Optional[float], digits: int = 2) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def format_summary(s) -> str:
    lines = [f"{s.n_groups} groups, {s.n_rewarded_groups} rewarded (correct: reward >= {s.correct_at:g})"]
    if s.n_rewarded_groups:
        lines.append(f"with a learning signal: {s.with_signal} ({_pct(s.signal_share)}); zero variance: "
                     f"{s.all_correct} all correct, {s.all_wrong} all wrong")
        lines.append("pass@k: " + "  ".join(f"@{k} {v:.3f}" + (f" ({n} groups)" if n != s.n_rewarded_groups else "")
                                            for k, v, n in s.pass_at_k))
        planner = dict(s.planner)
        lines.append("planner, expected share of groups with a signal at group size G: "
                     + "  ".join(f"G={g} {_pct(planner[g])}" for g in PLANNER_SHOWN if g in planner))
        hist = s.reward_histogram
        if hist["counts"]:
            lines.append(f"rewards {hist['edges'][0]:.3g}..{hist['edges'][-1]:.3g}: "
                         + " ".join(str(c) for c in hist["counts"]))
    hist = s.length_histogram
    if hist["counts"]:
        lines.append(f"lengths {hist['edges'][0]:.0f}..{hist['edges'][-1]:.0f} tokens: "
                     + " ".join(str(c) for c in hist["counts"]))
    return "\n".join(lines)


def format_table(rows) -> str:
    head = (f"{'id':<8} {'n':>3} {'reward':>7} {'std':>6} {'pass@1':>6} {'pass@n':>6} {'outcome':<11} {'length':>6} "
            f"{'trunc':>5} {'entropy':>7} {'distinct':>8} {'KL':>6}  query")
    out = [head]
    for s in rows:
        pass_n = s.pass_at_k[-1][1] if s.pass_at_k else None
        pass_1 = s.pass_at_k[0][1] if s.pass_at_k else None
        query = " ".join(s.query.split())
        query = query if len(query) <= 48 else query[:47] + "…"
        out.append(f"{s.group_id:<8} {s.n_rollouts:>3} {_num(s.mean_reward, 3):>7} {_num(s.reward_std, 3):>6} "
                   f"{_num(pass_1, 3):>6} {_num(pass_n, 3):>6} {s.outcome or '-':<11} {_num(s.mean_length, 1):>6} "
                   f"{_pct(s.truncation_rate):>5} {_num(s.mean_entropy):>7} {s.distinct_responses:>8} "
                   f"{_num(s.mean_kl, 3):>6}  {query}")
    return "\n".join(out)


# -- export ------------------------------------------------------------------------------------------------------

def cmd_export(args) -> int:
    from explorer.core.files.trainer_export import export_file

    n = export_file(args.input, args.output, args.trainer, args.format,
                    warn=lambda line: sys.stderr.write(f"warning: {line}\n"))
    if args.output != "-":
        sys.stderr.write(f"wrote {n} rollouts to {args.output} ({args.trainer}'s columns)\n")
    return 0
