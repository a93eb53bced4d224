"""Command line: `rollout-explorer` (the window), `gui`, `generate`, `score`, `values`, `models`, `export-jsonl`,
`stats`, `export` (the dataset commands are in cli_dataset.py).

Every failure a user can cause prints one line on stderr and exits 2; no traceback, whatever the input.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import threading
from typing import TYPE_CHECKING, Optional, Sequence

from explorer import cli_dataset

if TYPE_CHECKING:  # the CLI imports the engine lazily: --help must not load llama.cpp
    from explorer.core.engine.protocol import EngineLike

EXIT_USAGE = 2
QUERIES_HELP = ("a query list or a dataset: text (one query a line), JSON (a list of strings or of rows), JSONL or "
                "Parquet rows with TRL's or verl's columns (a prompt string or messages, an answer)")
TIME_LIMIT_S = 10.0  # a reward file's time per rollout (reward_sandbox.TIME_LIMIT_S; not imported: --help stays fast)
MAX_K = 4096  # rollouts per query; the engine runs more than fit in one batch in waves, but this many is a typo


class _DefaultsFormatter(argparse.HelpFormatter):
    """Shows an option's default in --help when it has a real one (not None, not an empty list, not a flag)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default not in (None, [], False, argparse.SUPPRESS) and "%(default)" not in text \
                and action.option_strings:
            text += " (default: %(default)s)"
        return text


def _add_model_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    """required False (the window): the model, and exact decoding, default to what the window last used."""
    p.add_argument("--model", "-m", default="default" if required else None,
                   help="a .gguf path, or 'default' for the embedded SmolLM2-135M-Instruct")
    p.add_argument("--n-gpu-layers", type=int, default=None,
                   help="layers to offload to the GPU (default: all when the build supports it, else 0; -1 = all)")
    p.add_argument("--n-ctx", type=int, default=None,
                   help="context size in tokens (default: sized automatically for k x (prompt + max tokens))")
    p.add_argument("--exact", action=argparse.BooleanOptionalAction, default=True if required else None,
                   help="exact decoding: a token's logprob is the same sampled or scored, whatever k or the batch "
                        "(small decode steps are padded; --no-exact is faster below k = 8 on K-quant models and "
                        "measures how far sampled and scored logprobs may then part)")
    _add_server_args(p)


def _add_server_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", default=None, metavar="URL",
                   help="explore the policy a vLLM / SGLang / llama-server / llama_cpp.server serves (its base URL) "
                        "instead of a local model")
    p.add_argument("--api-key", default=None, metavar="KEY",
                   help="the server's API key (default: $ROLLOUT_EXPLORER_API_KEY); never saved or exported")
    p.add_argument("--server-model", default=None, metavar="NAME",
                   help="which of the server's models (default: the first it lists)")


def _add_prompt_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--system", default=None, help="system prompt for the chat template")
    p.add_argument("--raw", action="store_true", help="raw completion: no chat template")


def _add_reference_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reference", default=None,
                   metavar="PATH|exact|exact:PATH|system:TEXT|temperature:T|top_p:P",
                   help="a reference policy pi_ref: per token log pi_ref, log-ratio and KL(pi||pi_ref) are recorded "
                        "(PATH: a GGUF with the same vocabulary; exact: a float32 copy of the quantized model, "
                        "written once into the app's data folder; exact:PATH: that of another GGUF). With --server, "
                        "PATH or exact:PATH, a local GGUF of the served weights (the KL is then unavailable)")
    p.add_argument("--beta", type=float, default=0.1, help="beta of the implicit reward beta * log(pi/pi_ref)")
    p.add_argument("--tis-cap", type=float, default=2.0, metavar="C",
                   help="C of the truncated importance weights min(pi_ref/pi, C) in the mismatch numbers (TRL's "
                        "vllm_importance_sampling_cap)")


def _reference_spec(args):
    """--reference parsed (before any model is loaded: a typo costs nothing), or None; --tis-cap checked."""
    from explorer.core.reference.policy import ReferenceSpec

    if not (args.tis_cap > 0 and math.isfinite(args.tis_cap)):
        raise _UsageError(f"--tis-cap must be a positive number (got {args.tis_cap})")
    return ReferenceSpec.parse(args.reference) if args.reference else None


def _open_reference(spec, args, engine):
    """The reference policy for engine, or None; the exact copy is written (once) with progress on stderr."""
    if spec is None:
        return None
    from explorer.core.engine.local import Engine
    from explorer.core.reference.exact_copy import cached_exact_copy
    from explorer.core.reference.policy import ReferencePolicy

    def progress(done, total):
        sys.stderr.write(f"\rwriting the exact copy: {done}/{total} tensors" + ("\n" if done == total else ""))

    return ReferencePolicy(spec, engine, lambda path: Engine(path, n_ctx=args.n_ctx, exact=args.exact,
                                                             n_threads=cli_dataset.cli_threads(args)),
                           cached_exact_copy, progress)


def _window_size(text: str) -> tuple[int, int]:
    """'1024x700' -> (1024, 700)."""
    width, sep, height = text.lower().partition("x")
    try:
        size = (int(width), int(height)) if sep else None
    except ValueError:
        size = None
    if size is None or not (320 <= size[0] <= 16384 and 240 <= size[1] <= 16384):
        raise argparse.ArgumentTypeError(f"{text!r}: a size is WIDTHxHEIGHT in pixels, e.g. 1024x700 "
                                         "(320x240 to 16384x16384)")
    return size


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rollout-explorer", description="See a language model as a policy.")
    sub = parser.add_subparsers(dest="command")

    gui = sub.add_parser("gui", help="open the window (the default command)")
    _add_model_args(gui, required=False)
    gui.add_argument("-q", "--query", dest="queries", action="append", default=[], help="a query (repeatable)")
    gui.add_argument("--queries", dest="queries_file", default=None, help=QUERIES_HELP)
    cli_dataset.add_dataset_args(gui)
    gui.add_argument("--reward", default=None, help="exact | contains | regex | length | PATH.py")
    gui.add_argument("--no-std", action="store_true", help="advantages as r - mean, not divided by the std")
    _add_reference_args(gui)
    gui.add_argument("-k", type=int, default=None, help="rollouts per query")
    gui.add_argument("--max-tokens", type=int, default=None)
    gui.add_argument("--seed", type=int, default=None)
    gui.add_argument("--run", action="store_true", help="start a run once the model is loaded")
    gui.add_argument("--score", action="append", default=[], metavar="RESPONSE",
                     help="after the run, score this response to the shown query (repeatable)")
    gui.add_argument("--screenshot", default=None, help="save a PNG of the whole window when the run ends")
    gui.add_argument("--tree-screenshot", default=None, metavar="PATH",
                     help="save the shown query's token tree (PNG or SVG) when the run ends")
    gui.add_argument("--shading", choices=("prob", "entropy", "log_ratio"), default=None,
                     help="what shades the panes' tokens (the window's choice else; log_ratio needs --reference)")
    gui.add_argument("--tree-colour", choices=("prob", "entropy", "log_ratio", "kl"), default=None,
                     help="what colours the tree's boxes (the window's choice else; log_ratio and kl need --reference)")
    gui.add_argument("--tree-heights", choices=("empirical", "model"), default=None,
                     help="the tree's box heights: the sampled share or the model's pi (the window's choice else)")
    gui.add_argument("--export", default=None, help="save the rollout set (JSON) when the run ends")
    gui.add_argument("--size", type=_window_size, default=None, metavar="WxH",
                     help="the window's size (for a screenshot; 1440x900 else)")
    gui.add_argument("--quit", action="store_true", help="exit when done (0 on success)")

    gen = sub.add_parser("generate", help="sample k rollouts per query and write a rollout set (JSON)",
                         formatter_class=_DefaultsFormatter)
    _add_model_args(gen)
    gen.add_argument("-q", "--query", dest="queries", action="append", default=[], help="a query (repeatable)")
    gen.add_argument("--queries", dest="queries_file", default=None, help=QUERIES_HELP)
    cli_dataset.add_dataset_args(gen)
    gen.add_argument("-k", type=int, default=5, help="rollouts per query")
    gen.add_argument("--max-tokens", type=int, default=128, help="new tokens per rollout at most")
    gen.add_argument("--temperature", type=float, default=1.0, help="0 is greedy")
    gen.add_argument("--top-k", type=int, default=40, help="0 switches it off")
    gen.add_argument("--top-p", type=float, default=0.95, help="1 switches it off")
    gen.add_argument("--min-p", type=float, default=0.05, help="0 switches it off")
    gen.add_argument("--repeat-penalty", type=float, default=1.0, help="1 switches it off")
    gen.add_argument("--seed", type=int, default=0, help="rollout i uses seed + i")
    gen.add_argument("--top-n", type=int, default=5, help="raw alternatives recorded per token")
    gen.add_argument("--stop", action="append", default=[], help="a stop string (repeatable)")
    gen.add_argument("--reward", default=None,
                     help="exact | contains | regex | length | PATH.py (uses the references from --queries)")
    gen.add_argument("--no-std", action="store_true", help="advantages as r - mean, not divided by the std")
    gen.add_argument("--reward-time-limit", type=float, default=TIME_LIMIT_S, metavar="SECONDS",
                     help="a reward file's reward() gets this long per rollout; past it that reward is null")
    _add_prompt_args(gen)
    _add_reference_args(gen)
    cli_dataset.add_run_args(gen)
    gen.add_argument("-o", "--output", default=None,
                     help="the JSON file to write ('-' for stdout); groups go to OUT.partial as they finish")

    score = sub.add_parser("score", help="the probability the model gives responses you type",
                           formatter_class=_DefaultsFormatter)
    _add_model_args(score)
    score.add_argument("-q", "--query", required=True)
    score.add_argument("-r", "--response", dest="responses", action="append", required=True,
                       help="a candidate response (repeatable)")
    score.add_argument("--top-n", type=int, default=5, help="raw alternatives recorded per token")
    _add_prompt_args(score)
    _add_reference_args(score)
    cli_dataset.add_threads_arg(score)
    score.add_argument("-o", "--output", default=None, help="also write a rollout set whose group carries the scores")

    values = sub.add_parser("values", help="estimate values from a rollout set: Monte-Carlo continuations at its "
                                           "forks, rewarded, with Q(prefix, token) per group", formatter_class=_DefaultsFormatter)
    values.add_argument("input", help="a rollout-set JSON file")
    _add_model_args(values, required=False)
    values.add_argument("--forks", type=int, default=10, metavar="K",
                        help="estimate at the K positions of most entropy x share of the group's rollouts")
    values.add_argument("--alternatives", type=int, default=3, metavar="N",
                        help="the N most probable next tokens at each fork (taken or not)")
    values.add_argument("--m", type=int, default=8, metavar="M", help="continuations of each prefix + token")
    values.add_argument("--reward", required=True,
                        help="exact | contains | regex | length | PATH.py: rewards the continuations, and the set's "
                             "rollouts again (V needs their rewards)")
    values.add_argument("--no-std", action="store_true", help="advantages as r - mean, not divided by the std")
    values.add_argument("--reward-time-limit", type=float, default=TIME_LIMIT_S, metavar="SECONDS",
                        help="a reward file's reward() gets this long per rollout; past it that reward is null")
    values.add_argument("--max-tokens", type=int, default=None,
                        help="new tokens per continuation at most (default: the set's; fewer cut the responses "
                             "the rewards judge)")
    values.add_argument("--seed", type=int, default=None, help="continuation i uses seed + i (default: the set's)")
    values.add_argument("-o", "--output", required=True, help="the JSON file to write ('-' for stdout)")

    sub.add_parser("models", help="list the GGUF models found on this machine")

    jl = sub.add_parser("export-jsonl", help="turn a rollout set into JSONL, one rollout a line (for RL tooling)")
    jl.add_argument("input", help="a rollout-set JSON file")
    jl.add_argument("-o", "--output", required=True, help="the JSONL file to write ('-' for stdout)")
    cli_dataset.add_stats_parser(sub)
    cli_dataset.add_export_parser(sub)
    return parser


class _Progress:
    """A progress bar on a terminal, a line now and then otherwise; always on stderr."""

    def __init__(self, total: int):
        self.total = max(1, total)
        self.done = 0
        self.tty = sys.stderr.isatty()
        self._last_pct = -1

    def update(self, n: int) -> None:
        self.done += n
        pct = min(100, int(100 * self.done / self.total))
        if self.tty:
            bar = "#" * (pct // 4)
            sys.stderr.write(f"\r[{bar:<25}] {pct:3d}%  {self.done}/{self.total} tokens")
            sys.stderr.flush()
        elif pct // 25 > self._last_pct // 25:
            sys.stderr.write(f"{pct}% ({self.done}/{self.total} tokens)\n")
        self._last_pct = pct

    def close(self, note: str) -> None:
        if self.tty:
            sys.stderr.write("\n")
        sys.stderr.write(note + "\n")


def _load_engine(args) -> EngineLike:
    if getattr(args, "server", None):
        return _connect(args)
    from explorer.core.engine.local import Engine
    from explorer.core.models.discovery import resolve_model

    return Engine(resolve_model(args.model), n_gpu_layers=args.n_gpu_layers, n_ctx=args.n_ctx, exact=args.exact,
                  n_threads=cli_dataset.cli_threads(args))


def _connect(args) -> EngineLike:
    import os

    from explorer.core.remote.remote_engine import RemoteEngine
    from explorer.core.remote.servers import API_KEY_ENV

    return RemoteEngine(args.server, api_key=args.api_key or os.environ.get(API_KEY_ENV) or None,
                        model=args.server_model)


def cmd_generate(args) -> int:
    from explorer.core.files.queries import check_text, read_query_file
    from explorer.core.rl.rewards import load_reward
    from explorer.core.types import Query, SamplingParams

    for i, text in enumerate(args.queries):
        check_text(text, f"query {i + 1}")
    queries = [Query(q) for q in args.queries]
    if args.queries_file:
        queries += read_query_file(args.queries_file, args.prompt_column, args.answer_column)
    elif args.prompt_column or args.answer_column:
        raise _UsageError("--prompt-column and --answer-column choose columns of a dataset: give it with --queries")
    if not queries:
        raise _UsageError("give at least one query (-q QUERY or --queries FILE)")
    if not args.output and not args.resume:
        raise _UsageError("give the file to write (-o OUT.json)")
    if not 1 <= args.k <= MAX_K:
        raise _UsageError(f"-k must be in 1..{MAX_K} (got {args.k})")
    if not math.isfinite(args.correct_at):
        raise _UsageError(f"--correct-at must be a finite number (got {args.correct_at})")
    if args.threads is not None and args.threads < 1:
        raise _UsageError(f"--threads must be >= 1 (got {args.threads})")
    params = SamplingParams(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                            repeat_penalty=args.repeat_penalty, max_tokens=args.max_tokens, seed=args.seed,
                            top_n=args.top_n, stop=tuple(args.stop))
    params.validate()  # a SamplingParamsError (an ExplorerError) names each bad value
    if args.system is not None:
        check_text(args.system, "the system prompt")
    if args.reward_time_limit is not None and not (0 < args.reward_time_limit <= 86400):
        raise _UsageError(f"--reward-time-limit must be in (0, 86400] seconds (got {args.reward_time_limit})")
    # before the model: fail fast on a bad file
    reward_fn = load_reward(args.reward, args.reward_time_limit) if args.reward else None
    reference_spec = _reference_spec(args)
    engine = _load_engine(args)
    reference = None
    try:
        reference = _open_reference(reference_spec, args, engine)  # before the run: a refused one costs no run
        # the reference follows the run: the policy's rows are at hand while sampling, so only pi_ref decodes again
        if engine.info.exact is False:
            sys.stderr.write(engine.info.exactness() + "\n")
        return cli_dataset.run_dataset(args, engine, queries, params, reward_fn, reference)
    finally:
        if reference is not None:
            reference.close()
        engine.close()


class _Interrupt:
    """The first Ctrl-C stops a run at its next decode step and keeps what was made; a second one abandons it."""

    def __init__(self, what: str):
        self.what = what
        self.cancel = threading.Event()
        self.interrupted = False

    def on_sigint(self, signum, frame) -> None:
        if self.interrupted:
            raise KeyboardInterrupt
        self.interrupted = True
        self.cancel.set()
        sys.stderr.write(f"\ninterrupted: stopping, writing what was {self.what} (Ctrl-C again to abandon)\n")


def cmd_score(args) -> int:
    from explorer.core.files import export
    from explorer.core.numbers import (format_implicit_reward, format_kl, format_logprob, format_perplexity,
                                       format_probability, plain_minus)
    from explorer.core.rl.stats import token_mismatch
    from explorer.core.files.queries import check_text
    from explorer.core.session import Session
    from explorer.core.types import QueryGroup, SamplingParams

    check_text(args.query, "the query")
    for i, response in enumerate(args.responses):
        check_text(response, f"response {i + 1}")
    if args.system is not None:
        check_text(args.system, "the system prompt")

    reference_spec = _reference_spec(args)
    engine = _load_engine(args)
    reference = None
    try:
        reference = _open_reference(reference_spec, args, engine)
        chat = engine.uses_chat(not args.raw)
        prompt, prompt_ids = engine.format_prompt(args.query, chat, args.system)
        scores = engine.score(args.query, args.responses, chat=chat, system=args.system, top_n=args.top_n)
        if reference is not None:
            scores = reference.annotate_scores(args.query, chat, prompt_ids, scores)
        info = engine.info
    finally:
        if reference is not None:
            reference.close()
        engine.close()
    out = sys.stderr if args.output == "-" else sys.stdout  # stdout carries the JSON then
    width = max(8, min(48, max(len(s.response) for s in scores)))
    print(f"{'response':<{width}}  {'log pi(y|x)':>12}  {'pi(y|x)':>11}  {'perplexity':>10}  tokens", file=out)
    for s in scores:  # the window's formats, with an ASCII minus
        cells = [plain_minus(text) for text in (format_logprob(s.logprob), format_probability(s.logprob),
                                                format_perplexity(s.perplexity))]
        resp = s.response if len(s.response) <= width else s.response[: width - 1] + "…"
        print(f"{resp:<{width}}  {cells[0]:>12}  {cells[1]:>11}  {cells[2]:>10}  {len(s.tokens)}", file=out)
    if info.exact is False:
        print(f"({info.exactness()})", file=out)
    if reference is not None:
        print(f"reference: {reference.info.description}", file=out)
        print(f"{'response':<{width}}  {'log pi_ref':>12}  {'log ratio':>11}  {'mean KL':>10}  implicit reward "
              f"(beta {args.beta:g})", file=out)
        for s in scores:
            resp = s.response if len(s.response) <= width else s.response[: width - 1] + "…"
            cells = [plain_minus(text) for text in (
                format_logprob(s.ref_logprob), format_logprob(s.log_ratio), format_kl(s.mean_kl),
                format_implicit_reward(s.implicit_reward(args.beta)))]
            print(f"{resp:<{width}}  {cells[0]:>12}  {cells[1]:>11}  {cells[2]:>10}  {cells[3]}", file=out)
        print(cli_dataset.mismatch_line("mismatch over the scored tokens",
                             token_mismatch([t for s in scores for t in s.tokens], args.tis_cap)), file=out)
    if args.output:
        session = Session(info, SamplingParams(top_n=args.top_n))
        session.set_tis_cap(args.tis_cap)
        group = QueryGroup(id="q0", query=args.query, chat=chat, prompt=prompt, prompt_token_ids=prompt_ids,
                           scores=scores)
        session.add_group(group)
        if reference is not None:
            session.annotate(group, reference.info)
        export.save(session.rollout_set(), args.output)
    return 0


def cmd_values(args) -> int:
    from dataclasses import replace

    from explorer.core.errors import ExplorerError
    from explorer.core.files import export
    from explorer.core.rl.rewards import load_reward
    from explorer.core.session import LOCAL_RUN, Session
    from explorer.core.types import TokenBatch
    from explorer.core.values.value_run import plan_value_run

    for name, value, low in (("--forks", args.forks, 1), ("--alternatives", args.alternatives, 1), ("--m", args.m, 1)):
        if not low <= value <= MAX_K:
            raise _UsageError(f"{name} must be in {low}..{MAX_K} (got {value})")
    if args.reward_time_limit is not None and not (0 < args.reward_time_limit <= 86400):
        raise _UsageError(f"--reward-time-limit must be in (0, 86400] seconds (got {args.reward_time_limit})")
    reward_fn = load_reward(args.reward, args.reward_time_limit)
    rs = export.load(args.input)
    params = rs.sampling
    if args.max_tokens is not None:
        params = replace(params, max_tokens=args.max_tokens)
    if args.seed is not None:
        params = replace(params, seed=args.seed)
    params.validate()
    session = Session.from_set(rs, source=args.input)
    session.set_reward(reward_fn, divide_by_std=not args.no_std)  # V of the boxes: the set's rollouts' rewards
    plans = {}
    for gid in session.group_ids:
        values, tree = session.tree_values(gid), session.trees.get(gid)
        if values is not None and session.group(gid).rollouts:
            plans[gid] = plan_value_run(tree, values, args.forks, args.alternatives)
    if not any(plans.values()):
        raise _UsageError(f"{args.input}: no rollouts to continue (no group has a position with alternatives)")
    if not getattr(args, "server", None) and args.model is None:
        args.model = rs.model.path  # the model that made the set
    engine = _load_engine(args)
    if not session.same_model(engine.info):
        engine.close()
        raise _UsageError(f"{args.input} was made with another model ({rs.model.name}, fingerprint "
                          f"{rs.model.fingerprint}); give it with --model")
    progress = _Progress(sum(len(s) for s in plans.values()) * args.m * params.max_tokens)
    stop = _Interrupt("estimated")
    cancel = stop.cancel
    previous = signal.signal(signal.SIGINT, stop.on_sigint)
    run_error = None
    try:
        for gid, starts in plans.items():
            if cancel.is_set():
                break
            for event in engine.continuations(session.group(gid), starts, args.m, params, cancel=cancel):
                session.feed(LOCAL_RUN, (event,))
                if isinstance(event, TokenBatch):
                    progress.update(len(event.events))
    except ExplorerError as exc:  # a server failing mid-run: what arrived is still written, then exit 2
        run_error = exc
    finally:
        signal.signal(signal.SIGINT, previous)
        engine.close()
    progress.close(f"{session.tokens_done} continuation tokens")
    session.set_reward(reward_fn, divide_by_std=not args.no_std)
    for rollout_id, why in session.reward_errors():
        sys.stderr.write(f"{rollout_id}: reward is null: {why}\n")
    out = sys.stderr if args.output == "-" else sys.stdout
    for gid in plans:
        tree = session.trees.get(gid)
        for e in session.value_estimates(gid):
            prefix = _prefix_text(tree, e.prefix_token_ids)
            token = _prefix_text(tree, e.prefix_token_ids + (e.token_id,))[len(prefix):]
            q = "-" if e.mean_reward is None else f"{e.mean_reward:.3f}"
            ci = "" if e.ci_low is None else f" [{e.ci_low:.3f}, {e.ci_high:.3f}] ({e.interval})"
            print(f"{gid}  Q({_short_text(prefix)!r}, {token!r}) = {q}{ci}  n {e.n}", file=out)
    export.save(session.rollout_set("cancelled"), args.output)
    if args.output != "-":
        sys.stderr.write(f"wrote {args.output}" + (" (partial)" if run_error or stop.interrupted else "") + "\n")
    if run_error is not None:
        sys.stderr.write(f"rollout-explorer values: {run_error}\n")
        return EXIT_USAGE
    return 130 if stop.interrupted else 0


def _prefix_text(tree, ids) -> str:
    """The text of the response tokens `ids`, as the group's tree holds them ("" where it does not)."""
    try:
        return tree.prefix_text(tree.node_for(ids))
    except KeyError:
        return ""


def _short_text(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else "…" + text[-(limit - 1):]


def cmd_models(args) -> int:
    from explorer.core.models.discovery import discover_models, format_model_table

    print(format_model_table(discover_models()))
    return 0


def cmd_export_jsonl(args) -> int:
    from explorer.core.files.jsonl import convert_file

    # streamed a group at a time: a 200 MB set converts in the memory of its largest group
    n = convert_file(args.input, args.output, warn=lambda line: sys.stderr.write(f"warning: {line}\n"))
    if args.output != "-":
        sys.stderr.write(f"wrote {n} rollouts to {args.output}\n")
    return 0


def cmd_gui(args) -> int:
    from explorer.gui.app import run_gui

    if getattr(args, "server", None) and args.api_key:
        import os

        from explorer.core.remote.servers import API_KEY_ENV

        os.environ[API_KEY_ENV] = args.api_key  # this process only: the window's engine factory reads it there

    return run_gui(args)


class _UsageError(Exception):
    pass


COMMANDS = {"generate": cmd_generate, "score": cmd_score, "values": cmd_values, "models": cmd_models,
            "export-jsonl": cmd_export_jsonl, "gui": cmd_gui, "stats": cli_dataset.cmd_stats,
            "export": cli_dataset.cmd_export}


def main(argv: Optional[Sequence[str]] = None) -> int:
    from explorer.core.errors import ExplorerError

    parser = build_parser()
    argv = list(argv if argv is not None else sys.argv[1:])
    if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["gui", *argv]  # `rollout-explorer --model M ...` is the window with options
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["gui"])
    try:
        return COMMANDS[args.command](args)
    except (ExplorerError, _UsageError) as exc:  # the user's input; anything else is a bug and shows its traceback
        sys.stderr.write(f"rollout-explorer {args.command}: {exc}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except BrokenPipeError:
        return 0
