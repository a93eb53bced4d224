"""Value rollouts and their estimates in the files: the rollout-set JSON round trip (estimates derived again from the
rollouts, validated by the schema), estimates written by another program tagging their rollouts, and JSONL's
per-token mc_advantage."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from explorer.core.errors import RolloutFileError
from explorer.core.files import export
from explorer.core.files.jsonl import JSONL_KEYS, export_jsonl
from explorer.core.rl.values import value_estimates, wilson
from explorer.core.types import RolloutSet
from tests.core.test_export import make_set, schema_errors, strict_json, tok
from tests.core.test_jsonl import read_lines


def with_value_rollouts() -> RolloutSet:
    """The test set's q0 with Q(prefix (5,), token 9) from 3 continuations of r0 (two rewarded) and Q((5,), 6) from 1
    forced one."""
    rs = make_set()
    g0 = rs.groups[0]
    r0 = g0.rollouts[0]
    conts = tuple(
        replace(r0, id=f"q0.r{3 + i}", index=3 + i, seed=10 + i, tokens=r0.tokens + (tok(11 + i),), text="x",
                parent_id="q0.r0", branch_position=2, value_position=1, reward=reward, advantage=None)
        for i, reward in enumerate([1.0, 0.0, 1.0]))
    forced = replace(r0, id="q0.r6", index=6, seed=20, tokens=(r0.tokens[0], tok(6), tok(12)), text="y",
                     parent_id="q0.r0", branch_position=1, value_position=1, reward=0.0, advantage=None)
    return replace(rs, groups=(replace(g0, rollouts=g0.rollouts + conts + (forced,)),) + rs.groups[1:])


def test_value_rollouts_and_estimates_round_trip_and_validate(tmp_path):
    rs = with_value_rollouts()
    path = tmp_path / "set.json"
    export.save(rs, path)
    d = strict_json(path.read_text(encoding="utf-8"))
    assert schema_errors(d) == []
    group = d["groups"][0]
    assert [r.get("value_position") for r in group["rollouts"]] == [None, None, None, 1, 1, 1, 1]
    first, second = group["value_estimates"]
    assert (first["prefix_token_ids"], first["token_id"], first["n"], first["rollout_ids"]) == \
        ([5], 9, 3, ["q0.r3", "q0.r4", "q0.r5"])
    assert first["mean_reward"] == pytest.approx(2 / 3) and first["interval"] == "wilson"
    low, high = wilson([2], [3])
    assert (first["ci_low"], first["ci_high"]) == pytest.approx((low[0], high[0]))
    assert (second["prefix_token_ids"], second["token_id"], second["n"], second["mean_reward"]) == ([5], 6, 1, 0.0)
    rollouts = {r["id"]: r for r in group["rollouts"]}
    for e in group["value_estimates"]:  # each listed rollout starts with prefix + token
        for rid in e["rollout_ids"]:
            assert rollouts[rid]["token_ids"][:len(e["prefix_token_ids"]) + 1] == e["prefix_token_ids"] + [e["token_id"]]
    assert "value_estimates" not in d["groups"][1]  # a group without value rollouts is written as before
    back = export.load(path)
    assert back.groups[0].rollouts == rs.groups[0].rollouts
    assert value_estimates(back.groups[0]) == value_estimates(rs.groups[0])


def test_estimates_written_elsewhere_tag_their_rollouts_and_wrong_ones_are_refused(tmp_path):
    d = export.to_dict(with_value_rollouts())
    group = d["groups"][0]
    for r in group["rollouts"]:
        r.pop("value_position", None)  # another writer that lists the continuations only in the estimates
    path = tmp_path / "elsewhere.json"
    path.write_text(json.dumps(d), encoding="utf-8")
    back = export.load(path).groups[0]
    assert [r.value_position for r in back.rollouts] == [None, None, None, 1, 1, 1, 1]
    group["value_estimates"][1]["rollout_ids"] = ["q0.r1"]  # "Atlantic": not prefix (5,) + 6
    path.write_text(json.dumps(d), encoding="utf-8")
    with pytest.raises(RolloutFileError, match=r"groups\[0\]\.value_estimates\[1\]\.rollout_ids\[0\]: rollout q0.r1's "
                                               r"tokens do not start with the estimate's prefix \+ token"):
        export.load(path)
    group["value_estimates"][1]["rollout_ids"] = ["q9.r9"]
    path.write_text(json.dumps(d), encoding="utf-8")
    with pytest.raises(RolloutFileError, match="no rollout 'q9.r9' in this group"):
        export.load(path)
    group["value_estimates"][1]["n"] = -1
    path.write_text(json.dumps(d), encoding="utf-8")
    with pytest.raises(RolloutFileError, match=r"schema violation at \$\.groups\[0\]\.value_estimates\[1\]\.n"):
        export.load(path)


def test_a_value_position_past_the_tokens_is_refused(tmp_path):
    d = export.to_dict(with_value_rollouts())
    d["groups"][0]["rollouts"][3]["value_position"] = 9
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(d), encoding="utf-8")
    with pytest.raises(RolloutFileError, match=r"rollouts\[3\].*value_position 9 is past the rollout's 3 tokens"):
        export.load(path)


def test_jsonl_gives_each_token_its_mc_advantage_and_keeps_value_rollouts_out_of_the_baseline(tmp_path):
    path = tmp_path / "out.jsonl"
    export_jsonl(with_value_rollouts(), path)
    records = read_lines(path)
    assert all(tuple(r) == JSONL_KEYS for r in records)
    by_id = {r["rollout_id"]: r for r in records}
    # V(prefix (5,)) = the i.i.d. r0 (reward 1; r1 has none, r2 is a branch): Q((5,), 9) - V = 2/3 - 1
    assert by_id["q0.r0"]["mc_advantage"] == pytest.approx([None, 2 / 3 - 1])
    assert by_id["q0.r1"]["mc_advantage"] == [None]
    assert by_id["q0.r6"]["mc_advantage"] == pytest.approx([None, 0.0 - 1, None])
    for rid in ("q0.r3", "q0.r4", "q0.r5", "q0.r6"):
        assert by_id[rid]["value_position"] == 1 and by_id[rid]["in_baseline"] is False
    assert by_id["q0.r0"]["value_position"] is None and by_id["q0.r0"]["in_baseline"] is True
    export_jsonl(make_set(), path)
    assert {r["mc_advantage"] for r in read_lines(path)} == {None}  # a group without estimates
