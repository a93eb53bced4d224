"""The checks every engine makes on a generate or branch request before anything runs (engine.py, remote.py)."""

from __future__ import annotations

from typing import Optional, Sequence, Union

from .errors import ExplorerError
from .types import Query, QueryGroup, Rollout, SamplingParams, TokenInfo


def check_generate(queries: Sequence[Union[Query, str]], k: int, params: SamplingParams) -> list[Query]:
    """The queries as Query objects, once params, k and the query list are known to be usable."""
    params.validate()
    if k < 1:
        raise ValueError(f"k must be >= 1 (got {k})")
    if not queries:
        raise ExplorerError("no queries to run")
    return [q if isinstance(q, Query) else Query(str(q)) for q in queries]


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
