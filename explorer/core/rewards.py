"""Reward functions and GRPO-style group-relative advantages.

A reward function is called as fn(query, response, reference) -> float. Built-ins (picked by name):
  exact     1.0 when the response equals the reference, else 0.0
  contains  1.0 when the response contains the reference, else 0.0
            (both compare case-insensitively after collapsing runs of whitespace to one space and trimming)
  regex     1.0 when re.search(reference, response, re.IGNORECASE) matches, else 0.0 (the reference is the pattern)
  length    -len(response) / 100: minus one hundredth per character of the stripped response, so a shorter answer
            scores higher (characters, not tokens, so values compare across tokenizers)
A path ending in .py names a user file defining reward(query, response, reference) -> float; it is imported only
when picked. exact, contains and regex need a reference: without one that rollout's reward is None, with a message.

Advantages: A_i = (r_i - mean(r)) / (std(r) + eps) over the group's rollouts that have a reward (population std,
eps = 1e-6), or r_i - mean(r) without the division. A group whose rewards are all equal gets zeros.
"""

from __future__ import annotations

import importlib.util
import inspect
import math
import numbers
import re
import sys
from dataclasses import replace
from functools import lru_cache
from itertools import count
from pathlib import Path
from typing import Callable, Optional, Sequence

from .errors import RewardError
from .stats import group_stats
from .types import QueryGroup

EPS = 1e-6
BUILTIN_REWARDS = ("exact", "contains", "regex", "length")

_module_serial = count()


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
    """A named reward function. needs_reference tells a caller to check the queries carry references."""

    def __init__(self, name: str, fn: Callable[[str, str, Optional[str]], object], needs_reference: bool = False):
        self.name = name
        self.fn = fn
        self.needs_reference = needs_reference

    def __call__(self, query: str, response: str, reference: Optional[str]) -> object:
        return self.fn(query, response, reference)

    def __repr__(self) -> str:
        return f"RewardFn({self.name!r})"


_BUILTINS = {
    "exact": (exact_reward, True),
    "contains": (contains_reward, True),
    "regex": (regex_reward, True),
    "length": (length_reward, False),
}


def _load_user_file(path: Path) -> RewardFn:
    if not path.is_file():
        raise RewardError(f"reward file {path} does not exist" if not path.exists()
                          else f"reward file {path} is not a file")
    # A unique module name per load keeps user files apart from each other and from real modules; it sits in
    # sys.modules because dataclasses and pickling in the user's file look their module up there.
    name = f"_rollout_explorer_reward_{next(_module_serial)}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise RewardError(f"reward file {path} cannot be imported as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        sys.modules.pop(name, None)
        raise RewardError(f"reward file {path}: syntax error at line {e.lineno}: {e.msg}") from None
    except BaseException as e:  # the user's module code may raise anything, SystemExit included
        sys.modules.pop(name, None)
        raise RewardError(f"reward file {path}: importing it failed: {_one_line(e)}") from None
    fn = getattr(module, "reward", None)
    if fn is None:
        sys.modules.pop(name, None)
        raise RewardError(f"reward file {path} does not define reward(query, response, reference)")
    if not callable(fn):
        sys.modules.pop(name, None)
        raise RewardError(f"reward file {path}: 'reward' is a {type(fn).__name__}, not a function")
    try:
        inspect.signature(fn).bind("query", "response", "reference")
    except TypeError:
        sys.modules.pop(name, None)
        raise RewardError(f"reward file {path}: reward() must accept (query, response, reference)") from None
    except ValueError:
        pass  # no signature to inspect (some builtins): find out when it is called
    return RewardFn(path.name, fn)


def load_reward(spec: str) -> RewardFn:
    """'exact', 'contains', 'regex', 'length' or a path ending in .py. Raises RewardError."""
    key = spec.strip()
    if key.lower() in _BUILTINS:
        fn, needs_reference = _BUILTINS[key.lower()]
        return RewardFn(key.lower(), fn, needs_reference)
    if key.lower().endswith(".py"):
        return _load_user_file(Path(key).expanduser())
    raise RewardError(f"unknown reward {spec!r}: choose exact, contains, regex, length or a Python file (.py)")


def _one_line(e: BaseException, limit: int = 200) -> str:
    text = " ".join(f"{type(e).__name__}: {e}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def compute_reward(fn: Callable, query: str, response: str, reference: Optional[str]) -> tuple[Optional[float],
                                                                                                Optional[str]]:
    """(reward, None) or (None, why): a reward that raises or is not a finite real number gives no reward."""
    try:
        value = fn(query, response, reference)
    except RewardError as e:
        return None, str(e)
    except (Exception, SystemExit) as e:  # a user file that calls sys.exit() must not end the run
        return None, f"reward() raised {_one_line(e)}"
    if not isinstance(value, numbers.Real):  # bool counts: True is 1.0
        return None, f"reward() returned {type(value).__name__}, not a number"
    try:
        value = float(value)
    except (OverflowError, ValueError) as e:
        return None, f"reward() returned a number that is not a float ({_one_line(e)})"
    if not math.isfinite(value):
        return None, f"reward() returned {value}, not a finite number"
    return value, None


def group_advantages(rewards: Sequence[Optional[float]], normalize_std: bool = True,
                     eps: float = EPS) -> list[Optional[float]]:
    """GRPO advantages over the non-None rewards; None stays None. All-equal rewards give exact zeros."""
    present = [r for r in rewards if r is not None]
    if not present:
        return [None] * len(rewards)
    if all(r == present[0] for r in present):
        return [None if r is None else 0.0 for r in rewards]
    mean = math.fsum(present) / len(present)
    scale = 1.0
    if normalize_std:
        scale = math.sqrt(math.fsum((r - mean) ** 2 for r in present) / len(present)) + eps
    return [None if r is None else (r - mean) / scale for r in rewards]


def apply_rewards(group: QueryGroup, fn: Callable, normalize_std: bool = True) -> QueryGroup:
    """The group with reward, reward_error and advantage set on each finished rollout, and stats filled in.

    Rollouts still streaming (finish_reason None) are left without a reward and take no part in the advantages.
    """
    rollouts = []
    for r in group.rollouts:
        if r.finish_reason is None:
            rollouts.append(replace(r, reward=None, advantage=None, reward_error=None))
            continue
        reward, error = compute_reward(fn, group.query, r.text, group.reference)
        rollouts.append(replace(r, reward=reward, reward_error=error))
    advantages = group_advantages([r.reward for r in rollouts], normalize_std)
    rollouts = [replace(r, advantage=a) for r, a in zip(rollouts, advantages)]
    rewarded = replace(group, rollouts=tuple(rollouts))
    return replace(rewarded, stats=group_stats(rewarded))
