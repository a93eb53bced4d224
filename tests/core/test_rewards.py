"""Reward functions (built-in and user files) and GRPO group advantages."""

from __future__ import annotations

import math
import statistics
import textwrap

import pytest

from explorer.core.errors import RewardError
from explorer.core.rl.rewards import apply_rewards, group_advantages, load_reward
from explorer.core.types import QueryGroup, Rollout, TokenInfo


def rollout(i: int, text: str, finish_reason: str | None = "stop") -> Rollout:
    token = TokenInfo(id=i, token=text, bytes=text.encode(), logprob=-1.0, sampling_logprob=-0.5, entropy=1.0,
                      rank=1)
    return Rollout(id=f"q0.r{i}", index=i, seed=i, text=text, tokens=(token,), finish_reason=finish_reason)


def group(texts, reference: str | None = "Pacific Ocean") -> QueryGroup:
    return QueryGroup(id="q0", query="Which is the largest ocean?", chat=True, prompt="p", prompt_token_ids=(1,),
                      rollouts=tuple(rollout(i, t) for i, t in enumerate(texts)), reference_answer=reference)


def user_reward(tmp_path, body: str, name: str = "my_reward.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return load_reward(str(path))


# -- built-ins -------------------------------------------------------------------------------------------------------


def test_exact_ignores_case_and_whitespace_runs_but_nothing_else():
    exact = load_reward("exact")
    assert exact("q", "  pacific \n  OCEAN ", "Pacific Ocean") == 1.0
    assert exact("q", "Pacific Ocean.", "Pacific Ocean") == 0.0
    assert exact("q", "The Pacific Ocean", "Pacific Ocean") == 0.0


def test_contains_finds_the_normalised_reference_inside():
    contains = load_reward("contains")
    assert contains("q", "It is the\tPACIFIC   ocean, by far.", "Pacific Ocean") == 1.0
    assert contains("q", "The Atlantic Ocean", "Pacific Ocean") == 0.0


def test_regex_searches_case_insensitively_with_the_reference_as_pattern():
    regex = load_reward("regex")
    assert regex("q", "Surely the PACIFIC.", r"\bpacific\b") == 1.0
    assert regex("q", "Transpacific", r"\bpacific\b") == 0.0


def test_length_penalty_is_minus_a_hundredth_per_character():
    length = load_reward("length")
    assert length("q", "  abcde  ", None) == pytest.approx(-0.05)
    assert length("q", "x" * 250, "ignored") == pytest.approx(-2.5)


def test_reference_rewards_without_a_reference_give_null_and_say_why():
    g = apply_rewards(group(["Pacific Ocean"], reference=None), load_reward("contains"))
    r = g.rollouts[0]
    assert (r.reward, r.advantage) == (None, None)
    assert r.reward_error == "the contains reward needs a reference answer and this query has none"
    assert load_reward("contains").needs_reference and not load_reward("length").needs_reference


def test_a_bad_regex_reference_gives_null_rewards_with_the_reason():
    g = apply_rewards(group(["a", "b"], reference="(unclosed"), load_reward("regex"))
    assert all(r.reward is None for r in g.rollouts)
    assert g.rollouts[0].reward_error.startswith("the reference '(unclosed' is not a valid regular expression")


def test_unknown_reward_name():
    with pytest.raises(RewardError, match=r"unknown reward 'fuzzy': choose exact, contains, regex, length or a "):
        load_reward("fuzzy")


# -- user files ------------------------------------------------------------------------------------------------------


def test_user_file_reward_is_called_with_query_response_reference(tmp_path):
    fn = user_reward(tmp_path, """
        def reward(query, response, reference):
            return len(query) + 10 * len(response) + (100 if reference is None else 1000)
    """)
    assert fn("ab", "xyz", None) == 132
    g = apply_rewards(group(["a", "bb"]), fn)
    assert [r.reward for r in g.rollouts] == [float(len(g.query) + 10 + 1000), float(len(g.query) + 20 + 1000)]


def test_two_user_files_with_the_same_name_stay_apart(tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    first = user_reward(tmp_path / "one", "def reward(q, r, ref):\n    return 1.0\n", "reward.py")
    second = user_reward(tmp_path / "two", "def reward(q, r, ref):\n    return 2.0\n", "reward.py")
    assert (first("q", "r", None), second("q", "r", None)) == (1.0, 2.0)


@pytest.mark.parametrize("body,message", [
    ("def reward(q, r, ref):\n    raise ValueError('bad response')\n", "reward() raised ValueError: bad response"),
    ("def reward(q, r, ref):\n    return float('nan')\n", "reward() returned nan, not a finite number"),
    ("def reward(q, r, ref):\n    return float('-inf')\n", "reward() returned -inf, not a finite number"),
    ("def reward(q, r, ref):\n    return '1.0'\n", "reward() returned str, not a number"),
    ("def reward(q, r, ref):\n    return None\n", "reward() returned NoneType, not a number"),
])
def test_a_failing_user_reward_gives_that_rollout_null_and_a_message(tmp_path, body, message):
    fn = user_reward(tmp_path, body)
    g = apply_rewards(group(["a", "b"]), fn)
    for r in g.rollouts:
        assert (r.reward, r.advantage, r.reward_error) == (None, None, message)
    assert "mean_reward" not in dict(g.stats)


def test_one_failing_rollout_does_not_spoil_the_others(tmp_path):
    fn = user_reward(tmp_path, """
        def reward(query, response, reference):
            if response == "boom":
                raise RuntimeError("boom")
            return float(len(response))
    """)
    g = apply_rewards(group(["a", "boom", "abc"]), fn, normalize_std=False)
    assert [r.reward for r in g.rollouts] == [1.0, None, 3.0]
    assert [r.advantage for r in g.rollouts] == [-1.0, None, 1.0]
    assert g.rollouts[1].reward_error == "reward() raised RuntimeError: boom"


@pytest.mark.parametrize("body,message", [
    ("x = 1\n", "does not define reward(query, response, reference)"),
    ("reward = 3\n", "'reward' is a int, not a function"),
    ("def reward(query):\n    return 1.0\n", "reward() must accept (query, response, reference)"),
    ("def reward(q, r, ref)\n    return 1.0\n", "syntax error at line 1"),
    ("import no_such_module_for_rewards\n", "importing it failed: ModuleNotFoundError"),
    ("raise SystemExit(3)\n", "importing it failed: SystemExit: 3"),
])
def test_a_reward_file_that_cannot_be_used(tmp_path, body, message):
    with pytest.raises(RewardError) as info:
        user_reward(tmp_path, body)
    assert message in str(info.value)
    assert "my_reward.py" in str(info.value)


def test_a_missing_reward_file(tmp_path):
    with pytest.raises(RewardError, match=r"reward file .*absent\.py does not exist"):
        load_reward(str(tmp_path / "absent.py"))


# -- advantages ------------------------------------------------------------------------------------------------------


def test_advantages_have_mean_zero_and_unit_population_std():
    adv = group_advantages([1.0, 0.0, 0.0, 1.0, 1.0, 0.5])
    assert math.fsum(adv) == pytest.approx(0.0, abs=1e-12)
    assert statistics.pstdev(adv) == pytest.approx(1.0, rel=1e-5)


def test_advantages_without_std_are_reward_minus_mean():
    assert group_advantages([3.0, 1.0, 2.0], normalize_std=False) == pytest.approx([1.0, -1.0, 0.0])


def test_equal_rewards_give_exact_zeros():
    assert group_advantages([0.1, 0.1, 0.1]) == [0.0, 0.0, 0.0]
    assert group_advantages([0.7]) == [0.0]


def test_null_rewards_take_no_part_and_keep_null_advantages():
    assert group_advantages([None, 2.0, None, 4.0], normalize_std=False) == [None, -1.0, None, 1.0]
    assert group_advantages([None, None]) == [None, None]


def test_apply_rewards_fills_rewards_advantages_and_stats():
    g = apply_rewards(group(["Pacific Ocean", "Atlantic", "the pacific ocean", "pacific  OCEAN"]),
                      load_reward("exact"))
    assert [r.reward for r in g.rollouts] == [1.0, 0.0, 0.0, 1.0]
    advantages = [r.advantage for r in g.rollouts]
    assert math.fsum(advantages) == pytest.approx(0.0, abs=1e-12)
    assert advantages[0] == pytest.approx(1.0, rel=1e-5) and advantages[1] == pytest.approx(-1.0, rel=1e-5)
    stats = dict(g.stats)
    assert (stats["mean_reward"], stats["reward_std"]) == (0.5, 0.5)
    assert stats["n_rollouts"] == 4


def test_apply_rewards_leaves_streaming_rollouts_alone():
    g = group(["Pacific Ocean", "Atlantic"])
    g = QueryGroup(**{**g.__dict__, "rollouts": g.rollouts + (rollout(2, "Pacific Ocean", finish_reason=None),)})
    out = apply_rewards(g, load_reward("exact"))
    assert [r.reward for r in out.rollouts] == [1.0, 0.0, None]
    assert out.rollouts[2].advantage is None and out.rollouts[2].reward_error is None
    assert [r.advantage for r in out.rollouts[:2]] == pytest.approx([1.0, -1.0], rel=1e-5)


@pytest.mark.parametrize("body, why", [
    ("def reward(q, r, ref):\n    return 10 ** 400\n", "not a float"),
    ("import sys\ndef reward(q, r, ref):\n    sys.exit(0)\n", "SystemExit"),
])
def test_a_reward_that_overflows_or_exits_gives_null_not_the_end_of_the_run(tmp_path, body, why):
    fn = user_reward(tmp_path, body)
    scored = apply_rewards(group(["Pacific Ocean", "Atlantic"]), fn)
    assert [r.reward for r in scored.rollouts] == [None, None]
    assert all(why in r.reward_error for r in scored.rollouts)


def test_advantages_and_reward_stats_are_over_the_iid_rollouts_only():
    def rollout(i, text, finish="stop", parent=None):
        return Rollout(f"q0.r{i}", i, i, text, (), finish, parent_id=parent, branch_position=None if parent is None
                       else 1)

    group = QueryGroup("q0", "q", True, "p", (1,), rollouts=(
        rollout(0, "a"), rollout(1, "aaa"), rollout(2, "aaaaaaaaaa", parent="q0.r0"),
        rollout(3, "aaaaaaaaaaaaaaaaaaaa", finish="cancelled")))
    rewarded = apply_rewards(group, load_reward("length"), normalize_std=False)
    rewards = [r.reward for r in rewarded.rollouts]
    assert rewards == [-0.01, -0.03, -0.10, -0.20]  # every finished rollout is scored, branched and cancelled too
    assert [r.advantage for r in rewarded.rollouts] == pytest.approx([0.01, -0.01, None, None])
    stats = dict(rewarded.stats)
    assert stats["mean_reward"] == pytest.approx(-0.02) and stats["reward_std"] == pytest.approx(0.01)
