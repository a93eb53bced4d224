"""Issue 12's table of bad and extreme input to the command line, each run as a user would (a real process, the
tiny GGUF): a clear one-line error with exit status 2, or a run that works; never a traceback, a crash or a hang."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from explorer.core.files import export


def run(*args: str, timeout: float = 240, cwd=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    return subprocess.run([sys.executable, "-m", "explorer", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=cwd, errors="replace")


def generate(tiny_gguf, out, *args, timeout: float = 240):
    return run("generate", "--model", str(tiny_gguf), "-o", str(out), *args, timeout=timeout)


def one_line_error(proc, *needles: str) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


REFUSED = [
    (["-q", "x", "-k", "0"], "-k must be in 1..4096 (got 0)"),
    (["-q", "x", "-k", "4097"], "-k must be in 1..4096"),
    (["-q", "x", "--max-tokens", "0"], "max tokens must be >= 1 (got 0)"),
    (["-q", "x", "--max-tokens", "1000000000"], "exceeds the context"),
    (["-q", "x", "--temperature", "-1"], "temperature must be >= 0"),
    (["-q", "x", "--temperature", "nan"], "temperature must be >= 0 (got nan)"),
    (["-q", "x", "--temperature", "inf"], "temperature must be >= 0 (got inf)"),
    (["-q", "x", "--top-p", "2"], "top-p must be in (0, 1] (got 2.0)"),
    (["-q", "x", "--stop", ""], "stop strings must not be empty"),
    (["-q", "x", "--reward-time-limit", "0", "--reward", "length"], "--reward-time-limit"),
    (["-q", "word " * 2000, "--n-ctx", "256"], "the context holds"),
]


@pytest.mark.parametrize("args, needle", REFUSED, ids=[" ".join(a)[:40] for a, _ in REFUSED])
def test_refused_with_one_line(tiny_gguf, tmp_path, args, needle):
    out = tmp_path / "o.json"
    one_line_error(generate(tiny_gguf, out, *args), needle)
    assert not out.exists()


@pytest.mark.parametrize("query", ["😀🎉🌊", "مرحبا بالعالم، كيف حالك؟", "a\u200fb\u202ec", "\x01\x02 control"],
                         ids=["emoji", "rtl", "bidi-marks", "control"])
def test_unusual_text_works(tiny_gguf, tmp_path, query):
    out = tmp_path / "o.json"
    proc = generate(tiny_gguf, out, "-q", query, "-k", "2", "--max-tokens", "4")
    assert proc.returncode == 0, proc.stderr
    assert export.load(out).groups[0].query == query


def test_nul_characters_in_a_queries_file_work(tiny_gguf, tmp_path):
    queries = tmp_path / "q.json"
    queries.write_text(json.dumps(["a\u0000b", "\u0000"]))
    out = tmp_path / "o.json"
    proc = generate(tiny_gguf, out, "--queries", str(queries), "-k", "1", "--max-tokens", "3")
    assert proc.returncode == 0, proc.stderr
    assert [g.query for g in export.load(out).groups] == ["a\u0000b", "\u0000"]


def test_a_lone_surrogate_is_refused_with_its_place(tiny_gguf, tmp_path):
    queries = tmp_path / "q.json"
    queries.write_text('["fine", "bad \\ud800 here"]')
    one_line_error(generate(tiny_gguf, tmp_path / "o.json", "--queries", str(queries)),
                   "query 2 is not valid text: a lone surrogate U+D800 at character 4")
    # from a terminal in another encoding: the bytes arrive as surrogate escapes
    proc = subprocess.run([os.fsencode(sys.executable), b"-m", b"explorer", b"generate", b"--model",
                           os.fsencode(tiny_gguf), b"-o", os.fsencode(tmp_path / "o.json"), b"-q", b"caf\xe9"],
                          capture_output=True, timeout=240)
    assert proc.returncode == 2 and b"query 1 is not valid text" in proc.stderr and b"Traceback" not in proc.stderr


def test_a_one_megabyte_query_is_a_context_error(tiny_gguf, tmp_path):
    # words the tiny vocabulary has: its SentencePiece tokenizer (llama.cpp's) is quadratic on a long run of one
    # character with no merges (300 kB of "x": 6 s); the default model's BPE takes 1.4 s for 1 MB of "x" (below)
    queries = tmp_path / "q.json"
    queries.write_text(json.dumps([("the ocean is Pacific " * 50_000)[:1_000_000]]))
    one_line_error(generate(tiny_gguf, tmp_path / "o.json", "--queries", str(queries)),
                   "query 1's prompt is", "the context holds")


@pytest.mark.model
def test_a_one_megabyte_query_of_one_character_with_the_default_model(default_model_path, tmp_path):
    queries = tmp_path / "q.json"
    queries.write_text(json.dumps(["x" * 1_000_000]))
    one_line_error(run("generate", "--queries", str(queries), "-o", str(tmp_path / "o.json")),
                   "query 1's prompt is", "the context holds")


def test_k_4096_with_one_token_each(tiny_gguf, tmp_path):
    out = tmp_path / "o.json"
    proc = generate(tiny_gguf, out, "-q", "x", "-k", "4096", "--max-tokens", "1")
    assert proc.returncode == 0, proc.stderr
    rollouts = export.load(out).groups[0].rollouts
    assert len(rollouts) == 4096 and all(len(r.tokens) == 1 for r in rollouts)


def test_a_huge_temperature_samples_almost_uniformly_and_works(tiny_gguf, tmp_path):
    out = tmp_path / "o.json"
    proc = generate(tiny_gguf, out, "-q", "x", "-k", "4", "--max-tokens", "4", "--temperature", "1e9",
                    "--top-k", "0", "--top-p", "1", "--min-p", "0")
    assert proc.returncode == 0, proc.stderr


# -- rewards that misbehave -----------------------------------------------------------------------------------------


def test_a_reward_that_never_returns_is_stopped_and_the_run_goes_on(tiny_gguf, tmp_path):
    reward = tmp_path / "hang.py"
    reward.write_text("import time\ndef reward(q, r, ref):\n    if r.startswith(HANG):\n        while True:\n"
                      "            time.sleep(1)\n    return 1.0\n")
    out = tmp_path / "o.json"
    # the first rollout's text decides HANG: which rollouts hang is known before the run
    probe = generate(tiny_gguf, tmp_path / "p.json", "-q", "x", "-k", "3", "--max-tokens", "4", "--seed", "5")
    assert probe.returncode == 0, probe.stderr
    first_text = export.load(tmp_path / "p.json").groups[0].rollouts[0].text
    reward.write_text(reward.read_text().replace("HANG", repr(first_text)))
    proc = generate(tiny_gguf, out, "-q", "x", "-k", "3", "--max-tokens", "4", "--seed", "5",
                    "--reward", str(reward), "--reward-time-limit", "1")
    assert proc.returncode == 0, proc.stderr
    rollouts = export.load(out).groups[0].rollouts
    hung = [r for r in rollouts if r.text.startswith(first_text)]
    assert hung and all(r.reward is None for r in hung)
    assert all(r.reward_error == "reward() did not return within 1 s (the limit per rollout)" for r in hung)
    assert all(r.reward == 1.0 for r in rollouts if r not in hung)
    assert "reward is null: reward() did not return within 1 s" in proc.stderr


def rewarded_run(tiny_gguf, tmp_path, body: str, k: int, *extra: str):
    """A run of k rollouts with a reward file holding body; returns the process and the rollouts written."""
    reward = tmp_path / "reward_file.py"
    reward.write_text(body)
    out = tmp_path / "o.json"
    proc = generate(tiny_gguf, out, "-q", "x", "-k", str(k), "--max-tokens", "4", "--reward", str(reward), *extra)
    assert proc.returncode == 0, proc.stderr
    return proc, export.load(out).groups[0].rollouts


@pytest.mark.slow
def test_a_reward_that_allocates_without_limit_costs_its_rewards_not_the_run(tiny_gguf, tmp_path):
    body = "def reward(q, r, ref):\n    hoard = []\n    while True:\n        hoard.append(bytearray(64 << 20))\n"
    # a generous time limit: on a loaded machine, filling 2 GiB may take longer than the default 10 s, and this
    # test is about the memory cap, not the clock
    _, rollouts = rewarded_run(tiny_gguf, tmp_path, body, 2, "--reward-time-limit", "300")
    for r in rollouts:
        assert r.reward is None and r.reward_error.startswith("reward() ran out of memory")


def test_a_reward_that_prints_and_exits_the_process(tiny_gguf, tmp_path):
    body = ("import os\ndef reward(q, r, ref):\n    print('hello from the reward')\n    if len(r) % 2:\n"
            "        os._exit(3)\n    return 2.0\n")
    proc, rollouts = rewarded_run(tiny_gguf, tmp_path, body, 6)
    assert "hello from the reward" in proc.stderr  # the user's print() is shown, not taken for a reply
    for r in rollouts:
        if len(r.text) % 2:
            assert r.reward is None and r.reward_error == "the reward process exited with status 3"
        else:
            assert r.reward == 2.0


# -- many queries ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_ten_thousand_queries_run_with_progress(tiny_gguf, tmp_path):
    """Memory of this run is a figure in `make bench` (bench/reliability_bench.py), not an assert."""
    queries = tmp_path / "q.txt"
    queries.write_text("".join(f"query {i}\n" for i in range(10_000)))
    out = tmp_path / "o.json"
    proc = generate(tiny_gguf, out, "--queries", str(queries), "-k", "1", "--max-tokens", "2", timeout=600)
    assert proc.returncode == 0, proc.stderr
    progress = [line.split("%")[0].strip() for line in proc.stderr.splitlines() if " prompts x 1" in line]
    assert progress[-1] == "100" and len(progress) >= 4 and "10000 groups" in proc.stderr
    assert len(export.load(out).groups) == 10_000


# -- export-jsonl ---------------------------------------------------------------------------------------------------


def test_export_jsonl_of_a_hostile_file_leaves_no_output(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "rollout-explorer/rollout-set", "version": 1, "groups": [')
    out = tmp_path / "o.jsonl"
    one_line_error(run("export-jsonl", str(bad), "-o", str(out)), "malformed JSON")
    assert not out.exists() and list(tmp_path.iterdir()) == [bad]


def test_export_jsonl_warns_about_a_text_that_does_not_match_its_tokens(tiny_gguf, tmp_path):
    src = tmp_path / "set.json"
    assert generate(tiny_gguf, src, "-q", "x", "-k", "2", "--max-tokens", "4").returncode == 0
    d = json.loads(src.read_text(encoding="utf-8"))
    d["groups"][0]["rollouts"][1]["text"] = "an edited text"
    src.write_text(json.dumps(d), encoding="utf-8")
    proc = run("export-jsonl", str(src), "-o", str(tmp_path / "o.jsonl"))
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "$.groups[0].rollouts[1].text" in warnings[0]
    assert "does not match its tokens' bytes" in warnings[0]
