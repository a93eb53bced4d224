"""The command line as a user runs it: a real process, real files, the tiny GGUF and the default model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from explorer.core.files import export
from explorer.core.numbers import format_logprob, plain_minus


def run_cli(*args: str, cwd: Path | None = None, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "explorer", *args], capture_output=True, text=True, timeout=240,
                          cwd=cwd, env=env)


def test_generate_writes_a_valid_rollout_set(tiny_gguf, tmp_path):
    out = tmp_path / "set.json"
    proc = run_cli("generate", "--model", str(tiny_gguf), "-q", "the ocean", "-q", "a sea", "-k", "3",
                   "--max-tokens", "6", "--seed", "7", "--top-n", "4", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    rs = export.load(out)  # validates against the schema
    assert [g.query for g in rs.groups] == ["the ocean", "a sea"]
    for g in rs.groups:
        assert [r.seed for r in g.rollouts] == [7, 8, 9]
        for r in g.rollouts:
            assert 1 <= len(r.tokens) <= 6
            assert all(len(t.top) == 4 for t in r.tokens)
    assert rs.sampling.top_n == 4 and rs.model.n_vocab > 0
    assert "tokens/s" in proc.stderr


def test_generate_same_seed_same_file_content(tiny_gguf, tmp_path):
    runs = []
    for name in ("a.json", "b.json"):
        out = tmp_path / name
        proc = run_cli("generate", "--model", str(tiny_gguf), "-q", "x", "-k", "2", "--max-tokens", "5",
                       "--seed", "3", "-o", str(out))
        assert proc.returncode == 0, proc.stderr
        runs.append([[r.token_ids for r in g.rollouts] for g in export.load(out).groups])
    assert runs[0] == runs[1]


def test_generate_to_stdout_with_queries_file_and_reward(tiny_gguf, tmp_path):
    qfile = tmp_path / "q.json"
    qfile.write_text(json.dumps([{"query": "the ocean", "reference": "the"}, "plain"]))
    proc = run_cli("generate", "--model", str(tiny_gguf), "--queries", str(qfile), "-k", "2", "--max-tokens", "4",
                   "--reward", "length", "-o", "-")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["format"] == "rollout-explorer/rollout-set" and data["version"] == 1
    assert data["groups"][0]["reference"] == "the"
    rewards = [r["reward"] for g in data["groups"] for r in g["rollouts"]]
    assert all(isinstance(x, float) for x in rewards)


@pytest.mark.parametrize("args, needle", [
    (["generate", "-o", "x.json"], "at least one query"),
    (["generate", "-q", "x", "--top-p", "0", "-o", "x.json"], "top-p"),
    (["generate", "-q", "x", "-k", "0", "-o", "x.json"], "-k"),
    (["generate", "--model", "missing.gguf", "-q", "x", "-o", "x.json"], "missing.gguf"),
    (["generate", "-q", "x", "--queries", "nope.txt", "-o", "x.json"], "nope.txt"),
    (["generate", "-q", "x", "--reward", "nope.py", "-o", "x.json"], "nope.py"),
    (["export-jsonl", "nope.json", "-o", "x.jsonl"], "nope.json"),
])
def test_bad_input_is_one_line_and_exit_2(args, needle, tmp_path):
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_corrupt_model_file_is_refused_with_reason(tmp_path, tiny_gguf):
    bad = tmp_path / "half.gguf"
    bad.write_bytes(Path(tiny_gguf).read_bytes()[:5000])
    proc = run_cli("generate", "--model", str(bad), "-q", "x", "-o", str(tmp_path / "o.json"))
    assert proc.returncode == 2
    assert "half.gguf" in proc.stderr and "truncated" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_prompt_longer_than_context_is_a_clear_error(tiny_gguf, tmp_path):
    proc = run_cli("generate", "--model", str(tiny_gguf), "--n-ctx", "64", "-q", "word " * 200, "-o",
                   str(tmp_path / "o.json"))
    assert proc.returncode == 2
    assert "context" in proc.stderr and "tokens" in proc.stderr
    assert not (tmp_path / "o.json").exists()


def test_export_jsonl_round_trips_ids(tiny_gguf, tmp_path):
    out = tmp_path / "set.json"
    assert run_cli("generate", "--model", str(tiny_gguf), "-q", "x", "-k", "2", "--max-tokens", "4",
                   "-o", str(out)).returncode == 0
    proc = run_cli("export-jsonl", str(out), "-o", str(tmp_path / "set.jsonl"))
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(x) for x in (tmp_path / "set.jsonl").read_text().splitlines()]
    rs = export.load(out)
    assert [tuple(x["completion_token_ids"]) for x in lines] == [r.token_ids for r in rs.groups[0].rollouts]


@pytest.mark.model
def test_score_prints_the_seed_example(default_model_path, tmp_path):
    out = tmp_path / "scores.json"
    proc = run_cli("score", "-q", "Which is the largest ocean?", "-r", "Atlantic Ocean", "-r", "Pacific Ocean",
                   "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    rows = [ln for ln in proc.stdout.splitlines() if ln.startswith(("Atlantic", "Pacific"))]
    assert len(rows) == 2
    scores = export.load(out).groups[0].scores
    assert [s.response for s in scores] == ["Atlantic Ocean", "Pacific Ocean"]
    for row, s in zip(rows, scores):
        assert plain_minus(format_logprob(s.logprob)) in row  # as the window prints it, with an ASCII minus


@pytest.mark.model
def test_models_lists_the_default_model(default_model_path):
    proc = run_cli("models")
    assert proc.returncode == 0, proc.stderr
    assert "SmolLM2-135M-Instruct" in proc.stdout and "default" in proc.stdout and "llama" in proc.stdout


def test_ctrl_c_keeps_what_was_made_with_its_timings(tiny_gguf, tmp_path):
    import signal

    out = tmp_path / "int.json"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    proc = subprocess.Popen([sys.executable, "-m", "explorer", "generate", "--model", str(tiny_gguf), "-q", "x",
                             "-k", "4", "--max-tokens", "900", "--temperature", "0", "-o", str(out)],
                            stderr=subprocess.PIPE, text=True, env=env)
    # wait until tokens stream (the progress lines), then interrupt
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "tokens)" in line:
            break
    assert "tokens)" in seen[-1], seen
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) == 130, rest
    rs = export.load(out)
    rollouts = rs.groups[0].rollouts
    assert any(r.finish_reason == "cancelled" for r in rollouts) and all(r.tokens for r in rollouts)
    assert rs.timings.generation_s > 0 and rs.timings.load_s > 0
    assert "Traceback" not in rest


def test_stats_are_written_without_a_reward(tiny_gguf, tmp_path):
    out = tmp_path / "s.json"
    assert run_cli("generate", "--model", str(tiny_gguf), "-q", "x", "-k", "3", "--max-tokens", "5",
                   "-o", str(out)).returncode == 0
    stats = dict(export.load(out).groups[0].stats)
    assert stats["n_rollouts"] == 3 and 1 <= stats["distinct_responses"] <= 3


def test_score_to_stdout_keeps_the_table_off_it(tiny_gguf):
    proc = run_cli("score", "--model", str(tiny_gguf), "-q", "x", "-r", "the ocean", "-o", "-")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["groups"][0]["scores"][0]["response"] == "the ocean"
    assert "log pi(y|x)" in proc.stderr


def test_no_exact_says_how_far_sampled_and_scored_may_part_and_the_file_records_it(tiny_gguf, tmp_path):
    out = tmp_path / "set.json"
    proc = run_cli("generate", "--model", str(tiny_gguf), "-q", "the ocean", "-k", "2", "--max-tokens", "4",
                   "--no-exact", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "not exact: sampled and scored logprobs may differ" in proc.stderr
    model = json.loads(out.read_text())["model"]
    assert model["exact"] is False and model["logprob_band"] >= 0
    assert export.load(out).model.logprob_band == model["logprob_band"]  # validated by the schema, read back
    scored = run_cli("score", "--model", str(tiny_gguf), "-q", "x", "-r", "the ocean", "--no-exact")
    assert scored.returncode == 0 and "(not exact: " in scored.stdout
    exact = run_cli("generate", "--model", str(tiny_gguf), "-q", "the ocean", "-k", "2", "--max-tokens", "4",
                    "-o", str(out))
    assert exact.returncode == 0 and "not exact" not in exact.stderr
    model = json.loads(out.read_text())["model"]
    assert model["exact"] is True and model["logprob_band"] is None


# -- reference policies ---------------------------------------------------------------------------------------------


def test_generate_with_a_reference_records_log_ratios_and_kl(tiny_gguf, tmp_path):
    copy = tmp_path / "copy.gguf"
    copy.write_bytes(tiny_gguf.read_bytes())  # another file, same weights: KL ~0 but measured by a second engine
    out = tmp_path / "set.json"
    for reference, near_zero in ((str(copy), True), ("system:Answer in one word.", False)):
        proc = run_cli("generate", "--model", str(tiny_gguf), "-q", "Hello", "-k", "2", "--max-tokens", "6",
                       "--reference", reference, "--beta", "0.5", "-o", str(out))
        assert proc.returncode == 0, proc.stderr
        assert "mean KL" in proc.stderr and "implicit reward (beta 0.5)" in proc.stderr
        rs = export.load(out)
        assert rs.reference_policy is not None and rs.reference_policy.kind == ("model" if near_zero else "system")
        group = rs.groups[0]
        assert dict(group.stats)["mean_kl"] is not None
        for r in group.rollouts:
            assert 1 <= len(r.tokens) <= 6 and all(t.kl is not None and t.ref_logprob is not None for t in r.tokens)
            if near_zero:
                assert r.mean_kl < 1e-9 and abs(r.log_ratio) < 1e-5
            else:
                assert r.mean_kl > 0


def test_score_with_a_reference_prints_and_writes_the_ratio(tiny_gguf, tmp_path):
    out = tmp_path / "scores.json"
    proc = run_cli("score", "--model", str(tiny_gguf), "-q", "Hello", "-r", "Atlantic Ocean",
                   "--reference", "temperature:0.5", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "reference: tiny at temperature 0.5" in proc.stdout and "log ratio" in proc.stdout
    (score,) = export.load(out).groups[0].scores
    assert score.mean_kl > 0 and score.log_ratio == pytest.approx(score.logprob - score.ref_logprob)


@pytest.mark.parametrize("reference, message", [
    ("temperature:-1", "the temperature must be in"),
    ("missing.gguf", "no such GGUF file"),
])
def test_a_bad_reference_is_a_usage_error(tiny_gguf, tmp_path, reference, message):
    proc = run_cli("score", "--model", str(tiny_gguf), "-q", "Hello", "-r", "x", "--reference", reference,
                   cwd=tmp_path)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_values_adds_continuations_at_the_forks_and_their_estimates(tiny_gguf, tmp_path):
    source, out = tmp_path / "set.json", tmp_path / "values.json"
    proc = run_cli("generate", "--model", str(tiny_gguf), "-q", "the ocean", "-k", "4", "--max-tokens", "6",
                   "--seed", "7", "-o", str(source))
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("values", str(source), "--model", str(tiny_gguf), "--forks", "2", "--alternatives", "2", "--m", "3",
                   "--reward", "length", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    before, after = export.load(source).groups[0], json.loads(out.read_text(encoding="utf-8"))["groups"][0]
    estimates = after["value_estimates"]
    assert len(estimates) == 4 and all(e["n"] == 3 and len(e["rollout_ids"]) == 3 for e in estimates)
    assert len(proc.stdout.strip().splitlines()) == 4 and "Q(" in proc.stdout
    rollouts = {r["id"]: r for r in after["rollouts"]}
    assert [r["id"] for r in after["rollouts"][:4]] == [r.id for r in before.rollouts]
    for e in estimates:
        key = e["prefix_token_ids"] + [e["token_id"]]
        for rid in e["rollout_ids"]:
            assert rollouts[rid]["token_ids"][:len(key)] == key
            assert rollouts[rid]["value_position"] == len(e["prefix_token_ids"])
            assert rollouts[rid]["advantage"] is None and rollouts[rid]["reward"] is not None
    # the i.i.d. rollouts keep their advantages, over themselves only
    assert all(r["advantage"] is not None for r in after["rollouts"][:4])
    assert after["stats"]["n_rollouts"] == 4 and after["stats"]["n_value_rollouts"] == 12


def test_values_refuses_bad_counts_before_loading_anything(tmp_path):
    proc = run_cli("values", str(tmp_path / "missing.json"), "--m", "0", "--reward", "length", "-o",
                   str(tmp_path / "out.json"))
    assert proc.returncode == 2 and proc.stderr.strip() == "rollout-explorer values: --m must be in 1..4096 (got 0)"
    proc = run_cli("values", str(tmp_path / "missing.json"), "--reward", "length", "-o", str(tmp_path / "out.json"))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "missing.json" in proc.stderr
    assert not (tmp_path / "out.json").exists()
