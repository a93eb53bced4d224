"""A value run on the default model against plain generation of as many tokens.

The group: k = 32 rollouts of the ocean query at 48 tokens, rewarded by `contains` "Pacific". The value run: the
K = 10 positions of most entropy x share, N = 3 alternatives each, M = 8 continuations of each prefix + token at
48 tokens, as the window's and the CLI's action runs it (one batched run, the prefixes prefilled as a prefix tree).
The baseline: one generate of K x N x M rollouts of the same query at 48 tokens, the same batch width. Both are timed
in the same process, alternated `rounds` times, best kept; the cost compared is seconds per generated token (the
continuations' own tokens, the copied prefixes not counted).

Usage: python bench/value_bench.py [--rounds N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

QUERY = "Which is the largest ocean?"
ANSWER = "Pacific"
K_GROUP, MAX_TOKENS, SEED = 32, 48, 7
FORKS, ALTERNATIVES, M = 10, 3, 8
TARGET = 1.10  # value run's cost per token over plain generation's


def _timed(events) -> tuple[list, float, int]:
    from explorer.core.types import RolloutFinished, TokenBatch

    t0 = time.perf_counter()
    rollouts, n = [], 0
    for ev in events:
        if isinstance(ev, TokenBatch):
            n += len(ev.events)
        elif isinstance(ev, RolloutFinished):
            rollouts.append(ev.rollout)
    return rollouts, time.perf_counter() - t0, n


def run_value_bench(log=lambda msg: None, rounds: int = 1) -> list[dict]:
    from explorer.core.engine.kv_cache import Prefix, _shared_entries
    from explorer.core.engine.local import Engine
    from explorer.core.models.discovery import default_model_path
    from explorer.core.rl.rewards import load_reward
    from explorer.core.session import Session
    from explorer.core.types import Query, SamplingParams
    from explorer.core.values.value_run import plan_value_run

    engine = Engine(default_model_path())
    try:
        params = SamplingParams(max_tokens=MAX_TOKENS, seed=SEED)
        session = Session(engine.info, params)
        log(f"value bench: the group (k = {K_GROUP}) ...")
        session.extend(engine.generate([Query(QUERY, ANSWER)], K_GROUP, params))
        session.set_reward(load_reward("contains"))
        group = session.group("q0")
        starts = plan_value_run(session.trees["q0"], session.tree_values("q0"), FORKS, ALTERNATIVES)
        n_rollouts = len(starts) * M
        prefixes = []
        for s in starts:
            parent = next(r for r in group.rollouts if r.id == s.rollout_id)
            prefixes.append(Prefix(list(group.prompt_token_ids) + list(parent.token_ids[:s.position]) + [s.token_id],
                                   [0]))
        shared_tokens = len(_shared_entries(prefixes))
        all_tokens = sum(len(p.tokens) for p in prefixes)
        best_value = best_plain = None
        for r in range(rounds):
            log(f"value bench round {r + 1}/{rounds}: value run ({len(starts)} starts x {M}) ...")
            _, value_s, value_n = _timed(engine.continuations(group, starts, M, params))
            log(f"value bench round {r + 1}/{rounds}: plain generate (k = {n_rollouts}) ...")
            _, plain_s, plain_n = _timed(engine.generate([QUERY], n_rollouts, params))
            if best_value is None or value_s / value_n < best_value[0] / best_value[1]:
                best_value = (value_s, value_n)
            if best_plain is None or plain_s / plain_n < best_plain[0] / best_plain[1]:
                best_plain = (plain_s, plain_n)
    finally:
        engine.close()
    (value_s, value_n), (plain_s, plain_n) = best_value, best_plain
    ratio = (value_s / value_n) / (plain_s / plain_n)
    return [
        {"run": f"value run K={FORKS} N={ALTERNATIVES} M={M}", "rollouts": n_rollouts, "tokens": value_n,
         "wall s": value_s, "ms/token": 1000 * value_s / value_n,
         "prefix tokens decoded": f"{shared_tokens} of {all_tokens}"},
        {"run": f"plain generate k={n_rollouts}", "rollouts": n_rollouts, "tokens": plain_n, "wall s": plain_s,
         "ms/token": 1000 * plain_s / plain_n, "prefix tokens decoded": "the prompt once"},
        {"run": "value / plain, per token", "rollouts": "", "tokens": "", "wall s": "", "ms/token": ratio,
         "prefix tokens decoded": f"target <= {TARGET:.2f}: " + ("MET" if ratio <= TARGET else "NOT MET")},
    ]


def main(argv=None) -> int:
    from bench.run import print_dict_table

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args(argv)
    print_dict_table(run_value_bench(lambda m: print(m, file=sys.stderr, flush=True), args.rounds),
                     "Value run against plain generation (default model, 48 tokens)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
