"""A reward file runs in a child process: a call past the time limit is stopped and the next call gets a fresh
child; importing is bounded too; the file's own folder is importable, as a user expects."""

from __future__ import annotations

import time

import pytest

from explorer.core.rl import sandbox as reward_sandbox
from explorer.core.errors import RewardError
from explorer.core.rl.rewards import compute_reward, load_reward


def write(tmp_path, body: str, name: str = "reward.py"):
    path = tmp_path / name
    path.write_text(body)
    return str(path)


def test_a_hung_call_is_stopped_and_the_next_call_works(tmp_path):
    fn = load_reward(write(tmp_path, "def reward(q, r, ref):\n    while r == 'hang':\n        pass\n"
                                     "    return float(len(r))\n"), time_limit_s=0.5)
    started = time.monotonic()
    assert compute_reward(fn, "q", "hang", None) == (None, "reward() did not return within 0.5 s "
                                                           "(the limit per rollout)")
    assert time.monotonic() - started < 5
    assert compute_reward(fn, "q", "four", None) == (4.0, None)
    fn.close()


def test_state_lives_in_the_child_between_calls(tmp_path):
    fn = load_reward(write(tmp_path, "calls = []\ndef reward(q, r, ref):\n    calls.append(r)\n"
                                     "    return float(len(calls))\n"))
    assert [fn("q", r, None) for r in "abc"] == [1.0, 2.0, 3.0]


def test_the_files_folder_is_importable(tmp_path):
    write(tmp_path, "WEIGHT = 3.5\n", "helpers.py")
    fn = load_reward(write(tmp_path, "from helpers import WEIGHT\ndef reward(q, r, ref):\n    return WEIGHT\n"))
    assert fn("q", "r", None) == 3.5


def test_an_import_that_never_finishes_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(reward_sandbox, "IMPORT_LIMIT_S", 1.0)
    with pytest.raises(RewardError, match=r"slow\.py: importing it did not finish within 1 s"):
        load_reward(write(tmp_path, "import time\ntime.sleep(60)\ndef reward(q, r, ref):\n    return 1\n",
                          "slow.py"))


def test_a_lone_surrogate_in_a_response_reaches_the_reward(tmp_path):
    fn = load_reward(write(tmp_path, "def reward(q, r, ref):\n    return float(ord(r[1]))\n"))
    assert compute_reward(fn, "q", "a\udc80b", None) == (float(0xDC80), None)
