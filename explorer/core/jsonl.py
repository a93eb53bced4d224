"""One rollout per line, flat, for RL tooling (Hugging Face `datasets` JSONL loader, TRL-style trainers).

Every line has the same keys with the same JSON types (a value may be null), so a columnar loader infers one type
per column. `prompt` is the text after the chat template and `completion` the rollout text, the prompt/completion
shape TRL reads; token ids and per-token logprobs line up with `completion_token_ids`. A raw log-probability of
-inf (probability zero) is written as null, like in the rollout-set JSON.
"""

from __future__ import annotations

import json
import math
from typing import Iterator, Optional

from .export import PathLike, atomic_write
from .types import RolloutSet

JSONL_KEYS = (
    "group_id", "rollout_id", "index", "seed", "query", "reference", "prompt", "completion", "prompt_token_ids",
    "completion_token_ids", "token_logprobs", "sampling_logprobs", "logprob", "reward", "advantage", "reward_error",
    "finish_reason", "parent_id", "branch_position",
)


def _num(x: Optional[float]) -> Optional[float]:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def jsonl_records(rs: RolloutSet) -> Iterator[dict]:
    """The records export_jsonl writes, one per rollout, keys in JSONL_KEYS order."""
    for g in rs.groups:
        prompt_ids = [int(i) for i in g.prompt_token_ids]
        for r in g.rollouts:
            tokens = r.tokens
            yield {
                "group_id": g.id,
                "rollout_id": r.id,
                "index": int(r.index),
                "seed": int(r.seed),
                "query": g.query,
                "reference": g.reference,
                "prompt": g.prompt,
                "completion": r.text,
                "prompt_token_ids": prompt_ids,
                "completion_token_ids": [int(t.id) for t in tokens],
                "token_logprobs": [_num(t.logprob) for t in tokens],
                "sampling_logprobs": [_num(t.sampling_logprob) for t in tokens],
                "logprob": _num(math.fsum(t.logprob for t in tokens)) if tokens else 0.0,
                "reward": _num(r.reward),
                "advantage": _num(r.advantage),
                "reward_error": r.reward_error,
                "finish_reason": r.finish_reason if r.finish_reason is not None else "cancelled",
                "parent_id": r.parent_id,
                "branch_position": r.branch_position,
            }


def _lines(rs: RolloutSet) -> Iterator[str]:
    for record in jsonl_records(rs):
        yield json.dumps(record, ensure_ascii=False, allow_nan=False, separators=(",", ":")) + "\n"


def export_jsonl(rs: RolloutSet, path: PathLike) -> int:
    """Write rs as JSONL, atomically ('-' means stdout); returns the number of lines written."""
    n = sum(len(g.rollouts) for g in rs.groups)
    atomic_write(path, _lines(rs))
    return n
