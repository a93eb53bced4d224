"""Table rows: identical finished responses merged with their count and share; streaming ones never merged."""

from explorer.core.responses import merge_responses
from explorer.core.types import Rollout, TokenInfo


def rollout(i, ids, finish="stop", **extra):
    tokens = tuple(TokenInfo(t, str(t), b"x", -0.5, None, 1.0, 1, ()) for t in ids)
    return Rollout(f"q0.r{i}", i, i, "".join(map(str, ids)), tokens, finish, **extra)


def test_identical_responses_share_a_row_with_count_share_and_mean_reward():
    rows = merge_responses([rollout(0, [1, 2], reward=1.0), rollout(1, [1, 3], reward=0.0),
                            rollout(2, [1, 2], reward=0.0), rollout(3, [1, 2], None), rollout(4, [1, 2], None)])
    assert [row.ids for row in rows] == [["q0.r0", "q0.r2"], ["q0.r1"], ["q0.r3"], ["q0.r4"]]
    assert rows[0].count == 2 and rows[0].share == 2 / 5 and rows[0].mean("reward") == 0.5
    assert rows[2].mean("reward") is None


def test_a_branch_row_names_its_origin():
    row = merge_responses([rollout(5, [4], parent_id="q0.r2", branch_position=3)])[0]
    assert row.branch == "r2 @3"
    assert merge_responses([rollout(0, [4])])[0].branch is None
