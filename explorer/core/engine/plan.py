"""The checks every engine makes on a generate or branch request before anything runs (local.py, remote/remote_engine.py)."""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

from explorer.core.errors import ExplorerError
from explorer.core.types import GroupHeader, Query, QueryGroup, Rollout, RolloutHeader, SamplingParams, TokenInfo


def check_generate(queries: Sequence[Union[Query, str]], k: int, params: SamplingParams) -> list[Query]:
    """The queries as Query objects, once params, k and the query list are known to be usable."""
    params.validate()
    if k < 1:
        raise ValueError(f"k must be >= 1 (got {k})")
    if not queries:
        raise ExplorerError("no queries to run")
    return [q if isinstance(q, Query) else Query(str(q)) for q in queries]


def plan_generate(queries: Sequence[Union[Query, str]], k: int, params: SamplingParams, chat: bool,
                  system: Optional[str], format_prompt: Callable, check_fits: Callable,
                  ) -> list[tuple[GroupHeader, list[RolloutHeader]]]:
    """check_generate, then per query its group (the prompt formatted with the engine's format_prompt and known to
    fit by its check_fits) and its k rollouts' headers; rollout i of a query uses seed + i."""
    plan = []
    for qi, q in enumerate(check_generate(queries, k, params)):
        prompt, ids = format_prompt(q.text, chat, system)
        check_fits(len(ids), params.max_tokens, f"query {qi + 1}'s prompt")
        gid = f"q{qi}"
        plan.append((GroupHeader(gid, q.text, chat, prompt, ids, q.reference_answer, q.columns),
                     [RolloutHeader(gid, f"{gid}.r{i}", i, params.seed + i) for i in range(k)]))
    return plan


def check_branch(group: QueryGroup, rollout_id: str, position: int, k: int,
                 params: Optional[SamplingParams]) -> tuple[SamplingParams, Rollout, tuple[TokenInfo, ...]]:
    """(params, the parent rollout, the tokens the branch keeps) for a branch of rollout_id at position."""
    params = params or SamplingParams()
    params.validate()
    if k < 1:
        raise ValueError(f"k must be >= 1 (got {k})")
    parent = next((r for r in group.rollouts if r.id == rollout_id), None)
    if parent is None:
        raise ExplorerError(f"no rollout {rollout_id} in group {group.id}")
    if not 0 <= position <= len(parent.tokens):
        raise ExplorerError(f"position {position} is outside rollout {rollout_id} (0..{len(parent.tokens)})")
    return params, parent, tuple(parent.tokens[:position])
