"""JSONL export for RL tooling: one flat record per rollout, the same keys and JSON types on every line."""

from __future__ import annotations

import json
import math

from explorer.core.files import export
from explorer.core.files.jsonl import JSONL_KEYS, export_jsonl, jsonl_records
from explorer.core.types import ModelInfo, QueryGroup, Rollout, RolloutSet, SamplingParams, TokenInfo


def tok(i: int, lp: float, sampling: float | None) -> TokenInfo:
    return TokenInfo(id=i, token=f"t{i}", bytes=b"", logprob=lp, sampling_logprob=sampling, entropy=1.0, rank=1)


def make_set() -> RolloutSet:
    model = ModelInfo(path="m.gguf", name="m", architecture="llama", n_params=None, n_vocab=300, n_ctx=512,
                      file_size=1, fingerprint="f", chat_template=True)
    g0 = QueryGroup(
        id="q0", query="Which is the largest ocean?", chat=True, prompt="<user>Which...", prompt_token_ids=(1, 2),
        reference_answer="Pacific Ocean",
        rollouts=(
            Rollout("q0.r0", 0, 10, "Pacific", (tok(7, -0.5, -0.25), tok(8, -1.5, -1.0)), "stop",
                    reward=1.0, advantage=1.0),
            Rollout("q0.r1", 1, 11, "Atl", (tok(9, -math.inf, None),), "length", reward=None,
                    reward_error="reward() raised ValueError: x"),
            Rollout("q0.r2", 2, 12, "", (), None, parent_id="q0.r0", branch_position=1),
        ),
    )
    g1 = QueryGroup(id="q1", query="raw text", chat=False, prompt="raw text", prompt_token_ids=(3,),
                    rollouts=(Rollout("q1.r0", 0, 10, "more", (tok(4, -0.1, -0.1),), "stop", reward=0.0,
                                      advantage=0.0),))
    return RolloutSet(model=model, sampling=SamplingParams(), groups=(g0, g1))


def read_lines(path) -> list[dict]:
    def reject(constant):
        raise AssertionError(f"non-standard JSON constant {constant}")

    return [json.loads(line, parse_constant=reject) for line in path.read_text(encoding="utf-8").splitlines()]


def json_type(value) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object",
            type(None): "null"}[type(value)]


def test_one_line_per_rollout_with_ids_that_round_trip(tmp_path):
    rs = make_set()
    path = tmp_path / "out.jsonl"
    assert export_jsonl(rs, path) == 4
    records = read_lines(path)
    expected = [(g.id, r.id, list(g.prompt_token_ids), list(r.token_ids)) for g in rs.groups for r in g.rollouts]
    got = [(d["group_id"], d["rollout_id"], d["prompt_token_ids"], d["completion_token_ids"]) for d in records]
    assert got == expected


def test_every_line_has_the_same_keys_and_one_json_type_per_key(tmp_path):
    path = tmp_path / "out.jsonl"
    export_jsonl(make_set(), path)
    records = read_lines(path)
    assert all(tuple(d) == JSONL_KEYS for d in records)
    for key in JSONL_KEYS:
        types = {json_type(d[key]) for d in records} - {"null"}
        assert len(types) <= 1, f"{key} has types {types}"
        element_types = {json_type(v) for d in records if isinstance(d[key], list) for v in d[key]} - {"null"}
        assert len(element_types) <= 1, f"{key} elements have types {element_types}"
        # a loader that infers int for some lines and float for others would have to widen: check none does
        assert not (types == {"integer"} and key in ("reward", "advantage", "logprob"))


def test_values_line_up_with_the_rollouts(tmp_path):
    path = tmp_path / "out.jsonl"
    export_jsonl(make_set(), path)
    first, second, branch, other = read_lines(path)
    assert first["prompt"] == "<user>Which..." and first["completion"] == "Pacific"
    assert first["token_logprobs"] == [-0.5, -1.5] and first["sampling_logprobs"] == [-0.25, -1.0]
    assert first["logprob"] == -2.0 and first["reward"] == 1.0 and first["advantage"] == 1.0
    assert first["reference"] == "Pacific Ocean" and first["finish_reason"] == "stop"
    # a zero-probability token: -inf cannot be JSON, so null, like in the rollout-set files
    assert second["token_logprobs"] == [None] and second["sampling_logprobs"] == [None]
    assert second["logprob"] is None and second["reward"] is None
    assert second["reward_error"] == "reward() raised ValueError: x"
    assert (branch["parent_id"], branch["branch_position"], branch["finish_reason"]) == ("q0.r0", 1, "cancelled")
    assert first["in_baseline"] and not branch["in_baseline"]  # which rollouts the advantages were computed over
    assert other["reference"] is None and other["query"] == "raw text"


def test_records_match_what_is_written(tmp_path):
    path = tmp_path / "out.jsonl"
    export_jsonl(make_set(), path)
    assert read_lines(path) == [json.loads(json.dumps(r)) for r in jsonl_records(make_set())]


def test_a_saved_rollout_set_exports_the_same_as_the_original(tmp_path):
    rs = make_set()
    export.save(rs, tmp_path / "set.json")
    export_jsonl(export.load(tmp_path / "set.json"), tmp_path / "a.jsonl")
    export_jsonl(rs, tmp_path / "b.jsonl")
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()


def test_written_atomically_over_an_existing_file(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text("stale\n")
    export_jsonl(make_set(), path)
    assert len(read_lines(path)) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]
