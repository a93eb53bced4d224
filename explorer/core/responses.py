"""A group's rollouts as table rows: identical responses merged into one row with their count and share.

Two finished rollouts are identical when they drew the same token ids (the same response, the same pi(y|x)). A rollout
still streaming is never merged: its tokens are not final. Rows keep the group's order (the first rollout of each
response decides where its row stands).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from explorer.core.types import Rollout


@dataclass(frozen=True)
class ResponseRow:
    rollouts: tuple[Rollout, ...]  # every rollout with this response, in group order; the first stands for them
    share: float  # count / the group's rollouts

    @property
    def first(self) -> Rollout:
        return self.rollouts[0]

    @property
    def count(self) -> int:
        return len(self.rollouts)

    @property
    def ids(self) -> list[str]:
        return [r.id for r in self.rollouts]

    @property
    def branch(self) -> Optional[str]:
        """"r3 @12" for a branched rollout (its parent's short id and the branch position), else None."""
        r = self.first
        if r.parent_id is None:
            return None
        return f"{r.parent_id.rsplit('.', 1)[-1]} @{r.branch_position}"

    def mean(self, name: str) -> Optional[float]:
        """The mean of a per-rollout number (reward, advantage) over the row's rollouts; None when none has it."""
        values = [getattr(r, name) for r in self.rollouts if getattr(r, name) is not None]
        return sum(values) / len(values) if values else None


def merge_responses(rollouts: Sequence[Rollout]) -> list[ResponseRow]:
    total = len(rollouts)
    groups: dict[object, list[Rollout]] = {}
    for r in rollouts:
        key = tuple(t.id for t in r.tokens) if r.finish_reason is not None else ("streaming", r.id)
        groups.setdefault(key, []).append(r)
    return [ResponseRow(tuple(members), len(members) / total) for members in groups.values()]


def shared_prefix_length(rows: Sequence[ResponseRow]) -> int:
    """How many tokens every row's response starts with (the group's shared prefix, the tree's trunk); 0 when there
    are fewer than two rows (nothing is shared with another response)."""
    if len(rows) < 2:
        return 0
    sequences = [[t.id for t in row.first.tokens] for row in rows]
    shortest = min(len(s) for s in sequences)
    n = 0
    while n < shortest and all(s[n] == sequences[0][n] for s in sequences):
        n += 1
    return n
