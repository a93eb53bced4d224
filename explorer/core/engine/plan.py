"""The checks every engine makes on a generate or branch request before anything runs (local.py, remote/remote_engine.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

from explorer.core.errors import ExplorerError
from explorer.core.types import (
    GroupHeader, Messages, Query, QueryGroup, Rollout, RolloutHeader, SamplingParams, TokenInfo, ValueStart,
)


def chat_messages(query: str, system: Optional[str], messages: Messages = ()) -> list[dict]:
    """The messages a chat template gets: a dataset's conversation as it is (its own system message wins; the run's
    system prompt goes first only where it has none), else the system prompt and the query as the user's turn."""
    if messages:
        turns = [{"role": role, "content": content} for role, content in messages]
        if system and not any(role == "system" for role, _ in messages):
            turns.insert(0, {"role": "system", "content": system})
        return turns
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": query}]


def raw_prompt(query: str, system: Optional[str], messages: Messages = ()) -> str:
    """The prompt without a chat template: the messages' contents (a system prompt first) one after the other, a blank
    line between them; for a plain query the system prompt, a blank line, then the query."""
    return "\n\n".join(m["content"] for m in chat_messages(query, system, messages))


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
        prompt, ids = format_prompt(q.text, chat, system, messages=q.messages)
        check_fits(len(ids), params.max_tokens, f"query {qi + 1}'s prompt")
        gid = q.group_id or f"q{qi}"
        plan.append((GroupHeader(gid, q.text, chat, prompt, ids, q.reference_answer, q.columns, q.messages),
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


@dataclass(frozen=True)
class ContinuationUnit:
    """The continuations of one value start: the ids they condition on and their headers (each starts with the kept
    tokens, the estimated one last)."""

    prefix: tuple[int, ...]  # the prompt ids, the prefix's ids, the estimated token's id
    rollouts: tuple[RolloutHeader, ...]
    ends: bool  # the estimated token ends generation: nothing is sampled after it


@dataclass(frozen=True)
class ContinuationPlan:
    params: SamplingParams
    group: GroupHeader
    units: tuple[ContinuationUnit, ...]

    @property
    def rollouts(self) -> tuple[RolloutHeader, ...]:
        return tuple(h for u in self.units for h in u.rollouts)


def token_from_top(parent: Rollout, position: int, token: int) -> Optional[TokenInfo]:
    """The facts of `token` after the parent's first `position` tokens, where the parent's own top-N there holds it
    (the same context, so the same distribution): no model call. None where it does not."""
    if position >= len(parent.tokens):
        return None
    here = parent.tokens[position]
    alt = next((a for a in here.top if a.id == token), None)
    if alt is None:
        return None
    rank = 1 + sum(1 for a in here.top if a.logprob > alt.logprob)
    return TokenInfo(token, alt.token, alt.bytes, alt.logprob, None, here.entropy, rank, here.top)


def plan_continuations(group: QueryGroup, starts: Sequence[ValueStart], m: int, params: Optional[SamplingParams],
                       n_vocab: Optional[int], check_fits: Callable, forced_info: Callable,
                       text_of: Callable[[Sequence[TokenInfo]], str],
                       is_end: Optional[Callable[[int], bool]] = None) -> ContinuationPlan:
    """m continuations of each start's prefix + token (a value run): the token kept where the start's rollout took
    it, forced (its facts from the engine's forced_info(parent, position, prefix ids, token, top_n)) where it did not.
    Every continuation is a value rollout of its start's position; they take the group's next free indices in the
    order of the starts, rollout i seed + i. The checks are a branch's (plan.check_branch, the prefix known to fit)."""
    if m < 1:
        raise ValueError(f"m must be >= 1 (got {m})")
    if not starts:
        raise ExplorerError("nothing to estimate: no prefix + token was given")
    next_index = max((r.index for r in group.rollouts), default=-1) + 1
    units = []
    for start in starts:
        if start.token_id < 0 or (n_vocab is not None and start.token_id >= n_vocab):
            within = f"0..{n_vocab - 1}" if n_vocab is not None else "ids are >= 0"
            raise ExplorerError(f"token id {start.token_id} is outside the vocabulary ({within})")
        params, parent, kept = check_branch(group, start.rollout_id, start.position, m, params)
        if kept and is_end is not None and is_end(kept[-1].id):
            raise ExplorerError(f"rollout {start.rollout_id} has ended at token {start.position - 1}: nothing "
                                "follows it")
        prefix = list(group.prompt_token_ids) + [t.id for t in kept]
        bad = next((t for t in prefix if n_vocab is not None and not 0 <= t < n_vocab), None)
        if bad is not None:
            raise ExplorerError(f"group {group.id}'s prompt and rollout {start.rollout_id} hold token id {bad}, "
                                f"outside this model's vocabulary (0..{n_vocab - 1}); was it made with another model?")
        taken = start.position < len(parent.tokens) and parent.tokens[start.position].id == start.token_id
        check_fits(len(prefix) + 1, params.max_tokens, "the value run's prefix")
        if taken:
            kept = kept + (parent.tokens[start.position],)
        else:
            kept = kept + (forced_info(parent, start.position, list(prefix), start.token_id, params.top_n),)
        prefix.append(start.token_id)
        text = text_of(kept)
        branch_position = start.position + 1 if taken else start.position
        headers = tuple(RolloutHeader(group.id, f"{group.id}.r{i}", i, params.seed + i, parent_id=start.rollout_id,
                                      branch_position=branch_position, prefix=kept, prefix_text=text,
                                      value_position=start.position)
                        for i in range(next_index, next_index + m))
        next_index += m
        units.append(ContinuationUnit(tuple(prefix), headers, is_end is not None and is_end(start.token_id)))
    return ContinuationPlan(params, GroupHeader.of(group), tuple(units))
