"""Rollout-set JSON v1: what save writes validates against the shipped schema, reads back exactly, and every kind of
bad file gets its own one-line message."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from datetime import datetime

import jsonschema
import numpy as np
import pytest

from explorer.core.files import export
from explorer.core.errors import RolloutFileError
from explorer.core.types import (
    ModelInfo, QueryGroup, Rollout, RolloutSet, SamplingParams, Score, Timings, TokenInfo, TopLogprob,
)


def tok(i: int, lp: float = -0.5, sampling: float | None = -0.25, text: str | None = None) -> TokenInfo:
    text = f"t{i}" if text is None else text
    top = (TopLogprob(i, text, text.encode(), lp), TopLogprob(i + 1, "alt", b"\xe2\x82", lp - 1.0))
    return TokenInfo(id=i, token=text, bytes=text.encode(), logprob=lp, sampling_logprob=sampling, entropy=1.25,
                     rank=1, top=top)


def make_set(created_at: str = "2026-01-02T03:04:05Z") -> RolloutSet:
    model = ModelInfo(path="models/m.gguf", name="m", architecture="llama", n_params=135_000_000, n_vocab=300,
                      n_ctx=2048, file_size=1234, fingerprint="abc123", chat_template=True, n_gpu_layers=0,
                      gpu_offload=False, llama_cpp_python="0.3.36", quantization="Q8_0", backend="CPU")
    r0 = Rollout(id="q0.r0", index=0, seed=7, text="Pacific Ocean ✓", finish_reason="stop",
                 tokens=(tok(5, -0.1), tok(9, -2.718281828459045, text="✓")), reward=1.0, advantage=0.9999995)
    r1 = Rollout(id="q0.r1", index=1, seed=8, text="Atlantic", finish_reason="length", tokens=(tok(6, -1.5),),
                 reward=None, advantage=None, reward_error="reward() raised ValueError: no")
    r2 = Rollout(id="q0.r2", index=2, seed=9, text="Pac", finish_reason="cancelled", tokens=(tok(5, -0.1),),
                 parent_id="q0.r0", branch_position=1)
    score = Score("Atlantic Ocean", (tok(6, -1.5, sampling=None), tok(7, -0.3, sampling=None)))
    g0 = QueryGroup(id="q0", query="Which is the largest ocean?", chat=True, prompt="<|user|>Which...", 
                    prompt_token_ids=(1, 2, 3), rollouts=(r0, r1, r2), scores=(score,), reference_answer="Pacific Ocean",
                    stats=(("n_rollouts", 3.0), ("branch_mass_coverage", None)))
    g1 = QueryGroup(id="q1", query="raw", chat=False, prompt="raw", prompt_token_ids=(4,))
    sampling = SamplingParams(temperature=0.7, top_k=0, top_p=1.0, min_p=0.0, seed=7, stop=("\n\n",))
    return RolloutSet(model=model, sampling=sampling, groups=(g0, g1), timings=Timings(1.5, 0.25, 2.0, 123.5),
                      created_at=created_at)


def strict_json(text: str):
    def reject(constant):
        raise AssertionError(f"non-standard JSON constant {constant} written")

    return json.loads(text, parse_constant=reject)


def schema_errors(d) -> list:
    schema = json.loads(export.SCHEMA_PATH.read_text(encoding="utf-8"))
    return list(jsonschema.Draft202012Validator(schema).iter_errors(d))


# -- writing ---------------------------------------------------------------------------------------------------------


def test_schema_file_is_a_valid_json_schema():
    jsonschema.Draft202012Validator.check_schema(json.loads(export.SCHEMA_PATH.read_text(encoding="utf-8")))


def test_saved_file_validates_against_the_schema_and_names_the_format(tmp_path):
    path = tmp_path / "set.json"
    export.save(make_set(), path)
    d = strict_json(path.read_text(encoding="utf-8"))
    assert schema_errors(d) == []
    assert (d["format"], d["version"]) == ("rollout-explorer/rollout-set", 1)
    rollout = d["groups"][0]["rollouts"][0]
    assert rollout["token_ids"] == [5, 9]
    assert rollout["logprob"] == pytest.approx(-0.1 - math.e)
    assert rollout["perplexity"] == pytest.approx(math.exp((0.1 + math.e) / 2))
    assert rollout["tokens"][1]["bytes"] == list("✓".encode())
    assert rollout["tokens"][0]["top_logprobs"][1] == {"id": 6, "token": "alt", "bytes": [0xE2, 0x82],
                                                       "logprob": -1.1}
    assert d["groups"][0]["stats"] == {"n_rollouts": 3.0, "branch_mass_coverage": None}


def test_round_trip_is_exact(tmp_path):
    rs = make_set()
    path = tmp_path / "set.json"
    export.save(rs, path)
    assert export.load(path) == rs


def test_created_at_is_filled_with_utc_time_when_empty(tmp_path):
    path = tmp_path / "set.json"
    export.save(make_set(created_at=""), path)
    loaded = export.load(path)
    stamp = datetime.fromisoformat(loaded.created_at.replace("Z", "+00:00"))
    assert stamp.utcoffset().total_seconds() == 0
    assert abs((datetime.now(stamp.tzinfo) - stamp).total_seconds()) < 60


def test_non_finite_numbers_are_written_as_null_and_read_back_sensibly(tmp_path):
    rs = make_set()
    g = rs.groups[0]
    bad_token = TokenInfo(id=3, token="z", bytes=b"z", logprob=-math.inf, sampling_logprob=math.nan,
                          entropy=math.inf, rank=300, top=(TopLogprob(3, "z", b"z", -math.inf),))
    r = replace(g.rollouts[0], tokens=(bad_token,), reward=math.nan, advantage=math.inf)
    rs = replace(rs, groups=(replace(g, rollouts=(r,), stats=(("x", math.nan),)),),
                 timings=Timings(math.inf, 0.0, 0.0, math.nan))
    path = tmp_path / "set.json"
    export.save(rs, path)
    d = strict_json(path.read_text(encoding="utf-8"))
    written = d["groups"][0]["rollouts"][0]
    token = written["tokens"][0]
    assert (token["logprob"], token["sampling_logprob"], token["entropy"]) == (None, None, None)
    assert token["top_logprobs"][0]["logprob"] is None
    assert (written["logprob"], written["mean_logprob"], written["perplexity"]) == (None, None, None)
    assert (written["reward"], written["advantage"]) == (None, None)
    assert d["timings"]["load_s"] is None and d["groups"][0]["stats"] == {"x": None}

    back = export.load(path)
    t = back.groups[0].rollouts[0].tokens[0]
    assert t.logprob == -math.inf and t.top[0].logprob == -math.inf
    assert t.sampling_logprob is None and math.isnan(t.entropy)
    assert back.timings.load_s == 0.0 and back.timings.tokens_per_s == 0.0


def test_numpy_scalars_are_written_as_plain_numbers():
    rs = make_set()
    g = rs.groups[0]
    t = replace(tok(5), id=np.int64(5), logprob=np.float32(-0.5), entropy=np.float64(2.0))
    rs = replace(rs, groups=(replace(g, rollouts=(replace(g.rollouts[0], tokens=(t,)),)),))
    d = strict_json(export.dumps(rs))
    assert d["groups"][0]["rollouts"][0]["tokens"][0]["logprob"] == -0.5
    assert d["groups"][0]["rollouts"][0]["token_ids"] == [5]


def test_a_rollout_still_streaming_is_written_as_cancelled():
    rs = make_set()
    g = rs.groups[0]
    rs = replace(rs, groups=(replace(g, rollouts=(replace(g.rollouts[0], finish_reason=None),)),))
    d = export.to_dict(rs)
    assert d["groups"][0]["rollouts"][0]["finish_reason"] == "cancelled"
    assert schema_errors(d) == []


def test_save_replaces_atomically_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "set.json"
    path.write_text("old contents")
    export.save(make_set(), path)
    assert export.load(path) == make_set()
    assert [p.name for p in tmp_path.iterdir()] == ["set.json"]


def test_a_write_that_fails_midway_keeps_the_old_file(tmp_path):
    path = tmp_path / "set.json"
    path.write_text("old contents")

    def chunks():
        yield "{partial"
        raise RuntimeError("serialiser broke")

    with pytest.raises(RuntimeError):
        export.atomic_write(path, chunks())
    assert path.read_text() == "old contents"
    assert [p.name for p in tmp_path.iterdir()] == ["set.json"]


def test_save_into_a_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(RolloutFileError, match=r"^cannot write .*set\.json: No such file or directory$"):
        export.save(make_set(), tmp_path / "nowhere" / "set.json")


def test_save_to_dash_writes_stdout(capsys):
    export.save(make_set(), "-")
    assert export.loads(capsys.readouterr().out) == make_set()


def test_fields_of_an_older_v1_file_and_unknown_extras_are_tolerated(tmp_path):
    d = export.to_dict(make_set())
    for group in d["groups"]:
        del group["reference"], group["stats"]
        for r in group["rollouts"]:
            del r["reward"], r["advantage"], r["reward_error"]
    d["model"]["some_future_field"] = "x"
    path = tmp_path / "old.json"
    path.write_text(json.dumps(d))
    back = export.load(path)
    assert back.groups[0].reference_answer is None and back.groups[0].stats is None
    assert all(r.reward is None and r.advantage is None for r in back.groups[0].rollouts)
    assert back.model == make_set().model


# -- reading bad files -----------------------------------------------------------------------------------------------


def write_dict(tmp_path, d, name="bad.json"):
    path = tmp_path / name
    path.write_text(json.dumps(d), encoding="utf-8")
    return path


def load_error(path) -> str:
    with pytest.raises(RolloutFileError) as info:
        export.load(path)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_file(tmp_path):
    assert load_error(tmp_path / "absent.json").endswith("absent.json: No such file or directory")


def test_directory_instead_of_file(tmp_path):
    assert load_error(tmp_path).startswith(f"cannot read {tmp_path}")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.json"
    path.write_text("  \n")
    assert load_error(path) == f"{path} is empty, expected a rollout-set JSON object"


def test_not_utf8(tmp_path):
    path = tmp_path / "bin.json"
    path.write_bytes(b'{"format": "\xff"}')
    assert load_error(path) == f"{path}: not UTF-8 text (byte 0xff at offset 12)"


def test_malformed_json_names_line_and_column(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{\n  "format": "rollout-explorer/rollout-set",\n  "version": 1,,\n}')
    assert load_error(path) == f"{path}: malformed JSON at line 3 column 16: Expecting property name enclosed " \
                               "in double quotes"


def test_top_level_not_an_object(tmp_path):
    message = load_error(write_dict(tmp_path, [1, 2]))
    assert message.endswith("not a rollout set: the top level is a JSON array, expected an object")


def test_no_format_field(tmp_path):
    assert load_error(write_dict(tmp_path, {"version": 1})).endswith('it has no "format" field')


def test_another_format(tmp_path):
    message = load_error(write_dict(tmp_path, {"format": "openai/chat", "version": 1}))
    assert message.endswith("its format is 'openai/chat', expected 'rollout-explorer/rollout-set'")


def test_newer_version(tmp_path):
    d = export.to_dict(make_set())
    d["version"] = 2
    message = load_error(write_dict(tmp_path, d))
    assert "made by a newer Rollout Explorer (rollout-set version 2)" in message


@pytest.mark.parametrize("version", [0, "1", None, True, 1.5])
def test_unsupported_version(tmp_path, version):
    d = export.to_dict(make_set())
    d["version"] = version
    assert f"unsupported rollout-set version {version!r}" in load_error(write_dict(tmp_path, d))


def test_missing_field_names_its_place(tmp_path):
    d = export.to_dict(make_set())
    del d["groups"][0]["rollouts"][1]["seed"]
    assert load_error(write_dict(tmp_path, d)).endswith(
        "schema violation at $.groups[0].rollouts[1]: 'seed' is a required property")


def test_bad_value_deep_in_a_token_names_its_place(tmp_path):
    d = export.to_dict(make_set())
    d["groups"][0]["rollouts"][0]["tokens"][1]["top_logprobs"][0]["logprob"] = "high"
    assert load_error(write_dict(tmp_path, d)).endswith(
        "schema violation at $.groups[0].rollouts[0].tokens[1].top_logprobs[0].logprob: "
        "'high' is not of type 'number', 'null'")


def test_bad_finish_reason(tmp_path):
    d = export.to_dict(make_set())
    d["groups"][0]["rollouts"][0]["finish_reason"] = "eos"
    assert "at $.groups[0].rollouts[0].finish_reason: 'eos' is not one of" in load_error(write_dict(tmp_path, d))


def test_token_ids_disagreeing_with_tokens(tmp_path):
    d = export.to_dict(make_set())
    d["groups"][0]["scores"][0]["token_ids"] = [6, 8]
    assert load_error(write_dict(tmp_path, d)).endswith(
        "at $.groups[0].scores[0]: token_ids do not match the ids in tokens")


def test_duplicate_rollout_id(tmp_path):
    d = export.to_dict(make_set())
    d["groups"][0]["rollouts"][1]["id"] = "q0.r0"
    assert load_error(write_dict(tmp_path, d)).endswith("rollout id 'q0.r0' appears twice")


def test_sampling_values_the_engine_would_refuse(tmp_path):
    d = export.to_dict(make_set())
    d["sampling"]["top_n"] = 500
    assert load_error(write_dict(tmp_path, d)).endswith("at $.sampling.top_n: 500 is greater than the maximum of 100")


TOKEN_MUTATIONS = [
    ("id", -1), ("id", 1.5), ("id", True), ("token", 5), ("bytes", [256]), ("bytes", [True]), ("bytes", "ab"),
    ("logprob", "x"), ("logprob", False), ("sampling_logprob", []), ("entropy", {}), ("rank", 0), ("rank", 1.5),
    ("top_logprobs", {}), ("top_logprobs", [{"id": 1}]), ("top_logprobs", [[1]]), ("id", None),
]


@pytest.mark.parametrize("field,value", TOKEN_MUTATIONS)
def test_fast_token_screen_agrees_with_the_full_schema(field, value):
    d = export.to_dict(make_set())
    d["groups"][0]["rollouts"][0]["tokens"][0][field] = value
    assert schema_errors(d), "the mutation should break the schema"
    with pytest.raises(RolloutFileError, match=r"schema violation at \$\.groups\[0\]\.rollouts\[0\]\.tokens\[0\]"):
        export.validate(d)


def test_fast_token_screen_accepts_a_token_missing_a_field_only_via_the_schema():
    d = export.to_dict(make_set())
    del d["groups"][0]["rollouts"][0]["tokens"][0]["entropy"]
    with pytest.raises(RolloutFileError, match="'entropy' is a required property"):
        export.validate(d)


def test_integral_floats_the_schema_accepts_are_read_as_ints(tmp_path):
    d = export.to_dict(make_set())
    rollout = d["groups"][0]["rollouts"][0]
    rollout["tokens"][0]["id"] = 5.0
    rollout["token_ids"][0] = 5.0
    rollout["seed"] = 7.0
    back = export.load(write_dict(tmp_path, d))
    first = back.groups[0].rollouts[0]
    assert type(first.tokens[0].id) is int and type(first.seed) is int
    assert back == make_set()
