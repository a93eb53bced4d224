"""Reward functions and GRPO-style group-relative advantages.

A reward function is called as fn(query, response, reference) -> float. Built-ins (picked by name):
  exact     1.0 when the response equals the reference, else 0.0
  contains  1.0 when the response contains the reference, else 0.0
            (both compare case-insensitively after collapsing runs of whitespace to one space and trimming)
  regex     1.0 when re.search(reference, response, re.IGNORECASE) matches, else 0.0 (the reference is the pattern)
  length    -len(response) / 100: minus one hundredth per character of the stripped response, so a shorter answer
            scores higher (characters, not tokens, so values compare across tokenizers)
A path ending in .py names a user file defining reward(query, response, reference) -> float; it is imported when
picked, in a child process that gives each call a time limit and has a memory cap (sandbox.py). exact, contains and regex need a reference: without one that rollout's reward is None, with a message.

Advantages: A_i = (r_i - mean(r)) / (std(r) + eps) over the group's rollouts that have a reward (population std,
eps = 1e-6), or r_i - mean(r) without the division. A group whose rewards are all equal gets zeros.
"""

from __future__ import annotations

import re
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Callable, Optional, Sequence

from explorer.core.errors import RewardError
from explorer.core.numbers import mean_std
from explorer.core.rl.sandbox import TIME_LIMIT_S, Sandbox, SandboxError, checked_value, one_line
from explorer.core.rl.stats import group_stats, in_baseline
from explorer.core.types import QueryGroup

EPS = 1e-6
BUILTIN_REWARDS = ("exact", "contains", "regex", "length")


def normalize_text(text: str) -> str:
    """Case-folded, whitespace runs collapsed to one space, trimmed."""
    return " ".join(text.split()).casefold()


def _need_reference(name: str, reference: Optional[str]) -> str:
    if reference is None or not reference.strip():
        raise RewardError(f"the {name} reward needs a reference answer and this query has none")
    return reference


def exact_reward(query: str, response: str, reference: Optional[str]) -> float:
    return float(normalize_text(response) == normalize_text(_need_reference("exact", reference)))


def contains_reward(query: str, response: str, reference: Optional[str]) -> float:
    return float(normalize_text(_need_reference("contains", reference)) in normalize_text(response))


@lru_cache(maxsize=256)
def _compile(pattern: str) -> re.Pattern:
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as e:
        raise RewardError(f"the reference {pattern!r} is not a valid regular expression: {e}") from None


def regex_reward(query: str, response: str, reference: Optional[str]) -> float:
    return float(_compile(_need_reference("regex", reference)).search(response) is not None)


def length_reward(query: str, response: str, reference: Optional[str]) -> float:
    return -len(response.strip()) / 100.0


class RewardFn:
    """A named reward function. needs_reference tells a caller to check the queries carry references.

    A user file's function runs in a Sandbox (sandbox.py): each call has a time limit and the child a memory
    cap, so a reward that hangs or allocates without limit costs that rollout its reward, not the run.
    """

    def __init__(self, name: str, fn: Optional[Callable[[str, str, Optional[str]], object]] = None,
                 needs_reference: bool = False, sandbox: Optional[Sandbox] = None):
        self.name = name
        self.fn = fn
        self.needs_reference = needs_reference
        self.sandbox = sandbox

    def __call__(self, query: str, response: str, reference: Optional[str]) -> object:
        if self.sandbox is None:
            return self.fn(query, response, reference)
        value, error = self.sandbox.call(query, response, reference)
        if error is not None:
            raise RewardError(error)
        return value

    def close(self) -> None:
        """Stop a user file's process now (it also stops when this object is freed or the app exits)."""
        if self.sandbox is not None:
            self.sandbox.close()

    def __repr__(self) -> str:
        return f"RewardFn({self.name!r})"


_BUILTINS = {
    "exact": (exact_reward, True),
    "contains": (contains_reward, True),
    "regex": (regex_reward, True),
    "length": (length_reward, False),
}


def _load_user_file(path: Path, time_limit_s: float) -> RewardFn:
    if not path.is_file():
        raise RewardError(f"reward file {path} does not exist" if not path.exists()
                          else f"reward file {path} is not a file")
    try:
        sandbox = Sandbox(path.resolve(), time_limit_s)
    except SandboxError as e:
        raise RewardError(f"reward file {path}: {e}") from None
    except OSError as e:
        raise RewardError(f"reward file {path}: cannot start a process to run it ({e.strerror or e})") from None
    return RewardFn(path.name, sandbox=sandbox)


def load_reward(spec: str, time_limit_s: float = TIME_LIMIT_S) -> RewardFn:
    """'exact', 'contains', 'regex', 'length' or a path ending in .py (its reward() gets time_limit_s seconds per
    rollout). Raises RewardError."""
    key = spec.strip()
    if key.lower() in _BUILTINS:
        fn, needs_reference = _BUILTINS[key.lower()]
        return RewardFn(key.lower(), fn, needs_reference)
    if key.lower().endswith(".py"):
        return _load_user_file(Path(key).expanduser(), time_limit_s)
    raise RewardError(f"unknown reward {spec!r}: choose exact, contains, regex, length or a Python file (.py)")


def compute_reward(fn: Callable, query: str, response: str, reference: Optional[str]) -> tuple[Optional[float],
                                                                                                Optional[str]]:
    """(reward, None) or (None, why): a reward that raises, times out or is not a finite real number gives none."""
    if isinstance(fn, RewardFn) and fn.sandbox is not None:
        return fn.sandbox.call(query, response, reference)  # the child checks the value the same way
    try:
        value = fn(query, response, reference)
    except RewardError as e:
        return None, str(e)
    except (Exception, SystemExit) as e:  # a user file that calls sys.exit() must not end the run
        return None, f"reward() raised {one_line(e)}"
    return checked_value(value)


def group_advantages(rewards: Sequence[Optional[float]], normalize_std: bool = True,
                     eps: float = EPS) -> list[Optional[float]]:
    """GRPO advantages over the non-None rewards; None stays None. All-equal rewards give exact zeros."""
    present = [r for r in rewards if r is not None]
    if not present:
        return [None] * len(rewards)
    if all(r == present[0] for r in present):
        return [None if r is None else 0.0 for r in rewards]
    mean, std = mean_std(present)
    scale = 1.0
    if normalize_std:
        scale = std + eps
    return [None if r is None else (r - mean) / scale for r in rewards]


def apply_rewards(group: QueryGroup, fn: Callable, normalize_std: bool = True) -> QueryGroup:
    """The group with reward, reward_error and advantage set on each finished rollout, and stats filled in.

    Rollouts still streaming (finish_reason None) are left without a reward. The advantages, like the reward mean and
    std of the stats, are over the i.i.d. rollouts only (in_baseline): a branched or cancelled rollout keeps its
    reward and gets no advantage.
    """
    rollouts = []
    for r in group.rollouts:
        if r.finish_reason is None:
            rollouts.append(replace(r, reward=None, advantage=None, reward_error=None))
            continue
        reward, error = compute_reward(fn, group.query, r.text, group.reference_answer)
        rollouts.append(replace(r, reward=reward, reward_error=error))
    advantages = group_advantages([r.reward if in_baseline(r) else None for r in rollouts], normalize_std)
    rollouts = [replace(r, advantage=a) for r, a in zip(rollouts, advantages)]
    rewarded = replace(group, rollouts=tuple(rollouts))
    return replace(rewarded, stats=group_stats(rewarded))
