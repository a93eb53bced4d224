"""One rollout per line, flat, for RL tooling (Hugging Face `datasets` JSONL loader, TRL-style trainers).

Every line has the same keys with the same JSON types (a value may be null), so a columnar loader infers one type
per column. `prompt` is the text after the chat template and `completion` the rollout text, the prompt/completion
shape TRL reads; token ids and per-token logprobs line up with `completion_token_ids`. A raw log-probability of
-inf (probability zero) is written as null, like in the rollout-set JSON.

A group with value rollouts (`value_position` set: Monte-Carlo continuations estimating Q(prefix, token), never in
the baseline) gives each of its records `mc_advantage`, per token Q(prefix, token) - V(prefix) where the token was
estimated and null elsewhere (rl.values.token_credit); in a group without them it is null.
"""

from __future__ import annotations

import json
from typing import Callable, Iterable, Iterator, Optional

from explorer.core.files.export import PathLike, atomic_write, iter_groups
from explorer.core.files.integrity import group_text_problems
from explorer.core.numbers import json_number
from explorer.core.rl.stats import in_baseline
from explorer.core.rl.values import token_credit
from explorer.core.types import QueryGroup, RolloutSet

JSONL_KEYS = (
    "group_id", "rollout_id", "index", "seed", "query", "reference", "prompt", "completion", "prompt_token_ids",
    "completion_token_ids", "token_logprobs", "sampling_logprobs", "logprob", "reward", "advantage", "reward_error",
    "finish_reason", "parent_id", "branch_position", "in_baseline", "value_position", "mc_advantage",
)


def group_records(g: QueryGroup) -> Iterator[dict]:
    """The records of one group's rollouts, keys in JSONL_KEYS order (then ref_logprobs, with a reference policy)."""
    prompt_ids = [int(i) for i in g.prompt_token_ids]
    credit = token_credit(g) if any(r.value_position is not None for r in g.rollouts) else {}
    for r in g.rollouts:
        tokens = r.tokens
        record = {
            "group_id": g.id,
            "rollout_id": r.id,
            "index": int(r.index),
            "seed": int(r.seed),
            "query": g.query,
            "reference": g.reference_answer,
            "prompt": g.prompt,
            "completion": r.text,
            "prompt_token_ids": prompt_ids,
            "completion_token_ids": [int(t.id) for t in tokens],
            "token_logprobs": [json_number(t.logprob) for t in tokens],
            "sampling_logprobs": [json_number(t.sampling_logprob) for t in tokens],
            "logprob": json_number(r.logprob),
            "reward": json_number(r.reward),
            "advantage": json_number(r.advantage),
            "reward_error": r.reward_error,
            "finish_reason": r.finish_reason if r.finish_reason is not None else "cancelled",
            "parent_id": r.parent_id,
            "branch_position": r.branch_position,
            # the group's advantages and reward mean/std are over the rollouts where this is true (i.i.d. samples)
            "in_baseline": in_baseline(r),
            "value_position": r.value_position,
            "mc_advantage": [json_number(a) for a in credit[r.id]] if credit else None,
        }
        if any(t.ref_logprob is not None for t in tokens):  # with a reference policy: what trainers read for KL
            record["ref_logprobs"] = [json_number(t.ref_logprob) for t in tokens]
        yield record


def jsonl_records(rs: RolloutSet) -> Iterator[dict]:
    """The records export_jsonl writes, one per rollout, keys in JSONL_KEYS order."""
    for g in rs.groups:
        yield from group_records(g)


def _lines(groups: Iterable[QueryGroup], counter: list) -> Iterator[str]:
    for g in groups:
        for record in group_records(g):
            counter[0] += 1
            yield json.dumps(record, ensure_ascii=False, allow_nan=False, separators=(",", ":")) + "\n"


def export_jsonl(rs: RolloutSet, path: PathLike) -> int:
    """Write rs as JSONL, atomically ('-' means stdout); returns the number of lines written."""
    counter = [0]
    atomic_write(path, _lines(rs.groups, counter))
    return counter[0]


def convert_file(source: PathLike, path: PathLike, progress: Optional[Callable[[int, int], None]] = None,
                 warn: Optional[Callable[[str], None]] = None) -> int:
    """A rollout-set file to JSONL, a group at a time (memory: one group, whatever the file's size); the output
    appears only if the whole input is valid. warn gets each rollout whose text disagrees with its tokens."""
    counter = [0]

    def checked(groups: Iterable[QueryGroup]) -> Iterator[QueryGroup]:
        for i, g in enumerate(groups):
            if warn is not None:
                for line in group_text_problems(g, i):
                    warn(line)
            yield g

    atomic_write(path, _lines(checked(iter_groups(source, progress)), counter))
    return counter[0]
