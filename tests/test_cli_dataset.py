"""The dataset commands as a user runs them: generate over a dataset (and --resume), stats, export for trainers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from fake_engine import FakeEngine
from test_cli import run_cli

from explorer.core.dataset.run import DatasetRun
from explorer.core.files import export
from explorer.core.types import Query, SamplingParams

EXAMPLE = Path(__file__).resolve().parents[1] / "resources" / "examples" / "quiz.jsonl"


def _graded(query, response, reference):
    """A reward that gives every prompt its own mix: all right, all wrong, or some of each."""
    n = int(query.split()[-1].rstrip("?"))
    return 1.0 if n % 3 == 0 else 0.0 if n % 3 == 1 else float(len(response) % 2)


@pytest.fixture
def made_set(tmp_path):
    """A set of 12 prompts x 4 from the scripted engine, with rewards, conversations and dataset columns."""
    queries = [Query(f"Question {i}?", str(i), (("topic", "t" if i % 2 else "u"), ("solution", str(i))),
                     (("system", "Be brief."), ("user", f"Question {i}?")) if i % 2 else ())
               for i in range(12)]
    out = tmp_path / "set.json"
    DatasetRun(FakeEngine("fake:m"), queries, 4, SamplingParams(max_tokens=5), str(out), reward=_graded).run()
    return out


def test_stats_prints_the_summary_and_a_row_per_prompt(made_set):
    proc = run_cli("stats", str(made_set))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "12 groups, 12 rewarded (correct: reward >= 1)"
    assert lines[1].startswith("with a learning signal: ") and "4 all correct, 4 all wrong" in lines[1]
    assert lines[2].startswith("pass@k: @1 ") and "@4" in lines[2]
    assert "G=8" in lines[3]
    table = lines[lines.index(next(line for line in lines if line.startswith("id "))):]
    assert len(table) == 13 and table[1].split()[0] == "q0" and table[-1].split()[0] == "q11"
    q3 = next(line for line in table if line.startswith("q3 "))
    assert "all correct" in q3 and "1.000" in q3


def test_stats_sorts_filters_and_speaks_json(made_set):
    proc = run_cli("stats", str(made_set), "--zero-variance-only", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    ids = [r["group_id"] for r in data["rows"]]
    assert ids == [f"q{i}" for i in range(12) if i % 3 != 2]
    assert all(r["zero_variance"] is True for r in data["rows"])
    assert data["summary"]["zero_variance"] == {"all_correct": 4, "all_wrong": 4}
    assert set(data["summary"]["pass_at_k"]) == {"1", "2", "4"}
    assert len(data["summary"]["planner"]) == 63
    row = data["rows"][0]
    assert set(row) >= {"mean_reward", "reward_std", "pass_at_k", "mean_length", "truncation_rate", "mean_entropy",
                        "distinct_responses", "mean_kl", "outcome"}

    below = json.loads(run_cli("stats", str(made_set), "--reward-below", "0.5", "--json").stdout)["rows"]
    assert {r["group_id"] for r in below} == {"q1", "q4", "q7", "q10"} | {
        r["group_id"] for r in json.loads(run_cli("stats", str(made_set), "--signal-only", "--json").stdout)["rows"]
        if r["mean_reward"] < 0.5}
    ordered = json.loads(run_cli("stats", str(made_set), "--sort", "mean_reward", "--desc", "--limit", "3",
                                 "--json").stdout)
    assert [r["mean_reward"] for r in ordered["rows"]] == [1.0, 1.0, 1.0] and ordered["n_rows"] == 12
    signal = json.loads(run_cli("stats", str(made_set), "--signal-only", "--correct-at", "0.5", "--json").stdout)
    assert signal["summary"]["correct_at"] == 0.5


def test_stats_of_a_file_that_is_not_a_set_is_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    proc = run_cli("stats", str(bad))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "not a rollout set" in proc.stderr


@pytest.mark.parametrize("trainer", ["trl", "verl"])
@pytest.mark.parametrize("suffix", ["jsonl", "parquet"])
def test_the_trainer_export_loads_with_datasets_offline(made_set, tmp_path, trainer, suffix):
    out = tmp_path / f"train.{suffix}"
    proc = run_cli("export", str(made_set), "-o", str(out), "--for", trainer)
    assert proc.returncode == 0, proc.stderr
    assert "wrote 48 rollouts" in proc.stderr
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import datasets

    ds = datasets.load_dataset("parquet" if suffix == "parquet" else "json", data_files=str(out), split="train",
                               cache_dir=str(tmp_path / "hf-cache"))
    assert ds.num_rows == 48
    rs = export.load(made_set)
    rollouts = [(g, r) for g in rs.groups for r in g.rollouts]
    row = ds[5]
    g, r = rollouts[5]
    assert row["reward"] == r.reward and row["completion_token_ids"] == list(r.token_ids)
    assert row["token_logprobs"] == pytest.approx([t.logprob for t in r.tokens])
    assert row["advantage"] == pytest.approx(r.advantage)
    if trainer == "trl":
        assert row["prompt"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": g.query}]
        assert row["completion"] == [{"role": "assistant", "content": r.text}]
        # this set mixes text and conversational prompts: all are written as conversations (a column has one type)
        assert ds[0]["prompt"] == [{"role": "user", "content": rollouts[0][0].query}]
        assert row["solution"] == "1" and row["topic"] == "t"  # the dataset's columns, for TRL's reward kwargs
    else:
        assert row["prompt"][-1] == {"role": "user", "content": g.query} and row["response"] == r.text
        assert row["reward_model"] == {"style": "rule", "ground_truth": "1"}
        assert row["data_source"] == "rollout-explorer" and row["extra_info"]["rollout_id"] == r.id


def test_generate_runs_the_example_dataset_and_resumes(tiny_gguf, tmp_path):
    out = tmp_path / "quiz.json"
    args = ["generate", "--model", str(tiny_gguf), "--queries", str(EXAMPLE), "-k", "2", "--max-tokens", "3",
            "--reward", "contains"]
    proc = run_cli(*args, "-o", str(out), "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    rs = export.load(out)
    assert len(rs.groups) == 50 and rs.groups[0].messages[0][0] == "system"
    assert rs.groups[0].reference_answer == "56" and dict(rs.groups[0].columns)["topic"] == "arithmetic"
    assert "system" in rs.groups[0].prompt or "Answer with the answer alone" in rs.groups[0].prompt
    assert "1 threads" in proc.stderr and "groups with a learning signal" in proc.stderr

    # a set holding the first 20 groups, as a stop leaves it: a resume samples the other 30
    first = tmp_path / "first.json"
    export.save(export.load(out).__class__(rs.model, rs.sampling, rs.groups[:20], rs.timings), first)
    proc = run_cli(*args, "--resume", str(first))
    assert proc.returncode == 0, proc.stderr
    assert "30 groups, 20 resumed" in proc.stderr
    resumed = export.load(first)
    assert sorted(g.id for g in resumed.groups) == sorted(g.id for g in rs.groups)
    by_id = {g.id: [r.token_ids for r in g.rollouts] for g in rs.groups}
    assert all(by_id[g.id] == [r.token_ids for r in g.rollouts] for g in resumed.groups)

    proc = run_cli(*args, "-k", "3", "--resume", str(first), "-o", str(tmp_path / "other.json"))
    assert proc.returncode == 2 and "this run asks -k 3" in proc.stderr


def test_generate_names_a_bad_dataset_row(tiny_gguf, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "fine"}\n{"prompt": 7}\n')
    proc = run_cli("generate", "--model", str(tiny_gguf), "--queries", str(data), "-o", str(tmp_path / "o.json"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "d.jsonl: line 2: 'prompt' is a number" in proc.stderr
