"""The remote engine against a real llama_cpp.server serving the default model, checked against the local engine."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading

import pytest

from explorer.core.files import export
from explorer.core.session import Session
from explorer.core.errors import ExplorerError
from explorer.core.types import RolloutFinished, RunFinished, SamplingParams, TokenBatch
from servers import LlamaCppServer

pytestmark = pytest.mark.model

KEY = "test-key-5f2c"
QUERY = "The capital of France is"
# llama.cpp's precision band on this CPU (8-bit activation rounding; the server decodes in other batch shapes)
MEDIAN_BAND, WORST_BAND = 0.05, 0.6


@pytest.fixture(scope="module")
def server(default_model_path):
    srv = LlamaCppServer(default_model_path, api_key=KEY)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def remote(server):
    from explorer.core.remote.remote_engine import RemoteEngine

    eng = RemoteEngine(server.url, api_key=KEY)
    yield eng
    eng.close()


def run(eng, events) -> Session:
    collector = Session(eng.info, SamplingParams())
    for ev in events:
        collector.add(ev)
    return collector


@pytest.fixture(scope="module")
def four(remote):
    """k = 4 rollouts of one raw query (llama_cpp.server has no chat template endpoint)."""
    return run(remote, remote.generate([QUERY], 4, SamplingParams(max_tokens=16, seed=11), chat=False)).groups()[0]


def test_probe_says_what_the_server_is_and_cannot_do(remote, server):
    import llama_cpp

    f = remote.facts
    assert (f.kind, f.version, f.url) == ("llama_cpp.server", llama_cpp.__version__, server.url)
    assert f.model.endswith(".gguf")
    assert not f.token_ids and not f.prompt_logprobs and not f.multiple_choices and f.tokenize
    assert not f.chat_template and not remote.uses_chat(True)
    info = remote.info
    assert info.server_kind == "llama_cpp.server" and info.entropy_kind == "unavailable"
    assert "token ids no" in info.server_facts and "prompt logprobs no" in info.server_facts


def test_k_rollouts_have_their_seeds_and_ids_recovered_by_tokenizing(remote, local_engine, four):
    _, local_prompt = local_engine.format_prompt(QUERY, chat=False)
    assert four.prompt_token_ids == local_prompt
    assert [r.seed for r in four.rollouts] == [11, 12, 13, 14]
    assert len({r.text for r in four.rollouts}) > 1  # four requests with four seeds, not one answer copied
    for r in four.rollouts:
        assert r.finish_reason in ("stop", "length") and r.tokens
        ids = [t.id for t in r.tokens]
        # the ids are the model's own tokens of the text: the local tokenizer of the same GGUF agrees
        assert local_engine.model.tokenize(r.text, add_special=False, parse_special=False) == ids
        assert all(t.id_flag is None for t in r.tokens)
        assert b"".join(local_engine.model.piece(i) for i in ids).decode() == r.text
        for t in r.tokens:
            assert t.top and t.top[0].logprob >= t.top[-1].logprob and t.rank >= 1
            assert t.sampling_logprob is None and t.entropy != t.entropy  # NaN: not known from the top N


def test_generated_logprobs_match_local_teacher_forcing(local_engine, four):
    diffs = []
    for r in four.rollouts:
        scored = local_engine.score_token_ids(list(four.prompt_token_ids), [[t.id for t in r.tokens]], 5)[0]
        diffs += [abs(s.logprob - t.logprob) for s, t in zip(scored, r.tokens)]
        # the top alternatives are the same tokens as the local engine's, where their ids were recovered
        for s, t in zip(scored, r.tokens):
            assert t.top[0].id == s.top[0].id or abs(t.top[0].logprob - s.top[0].logprob) < WORST_BAND
    assert statistics.median(diffs) <= MEDIAN_BAND and max(diffs) <= WORST_BAND, (statistics.median(diffs),
                                                                                   max(diffs))


def test_the_served_gguf_run_here_is_the_server_s_reference_within_llama_cpp_s_band(remote, four, default_model_path):
    """The real case in small: the sampler is a server, pi_ref the same weights run here (the trainer's side)."""
    from contextlib import closing

    from explorer.core.engine.local import Engine
    from explorer.core.reference.policy import ReferencePolicy, ReferenceSpec
    from explorer.core.rl.stats import group_stats

    with closing(ReferencePolicy(ReferenceSpec.parse(str(default_model_path)), remote, Engine)) as ref:
        out = ref.annotate_group(four)
    ratios = [abs(t.log_ratio) for r in out.rollouts for t in r.tokens]
    assert statistics.median(ratios) <= MEDIAN_BAND and max(ratios) <= WORST_BAND
    stats = dict(group_stats(out))
    assert stats["mean_kl"] is None and stats["mismatch.kl_exact"] is None
    assert stats["mismatch.prob_pearson"] > 0.99 and stats["mismatch.tis_clip_fraction"] == 0  # no ratio near 2
    assert stats["same_top_share"] > 0.8 and abs(stats["mismatch.kl_k1"]) < MEDIAN_BAND


def test_same_seed_same_rollout(remote, four):
    again = run(remote, remote.generate([QUERY], 1, SamplingParams(max_tokens=16, seed=11), chat=False))
    assert again.groups()[0].rollouts[0].token_ids == four.rollouts[0].token_ids


def test_branch_keeps_the_prefix_and_forces_an_alternative(remote, local_engine, four):
    parent = next(r for r in four.rollouts if len(r.tokens) >= 4)
    alt = parent.tokens[2].top[1]
    c = run(remote, remote.branch(four, parent.id, 2, forced_token=alt.id, k=2,
                                  params=SamplingParams(max_tokens=8, seed=5)))
    kids = [r for r in c.groups()[0].rollouts]
    assert [r.index for r in kids] == [4, 5] and all(r.parent_id == parent.id for r in kids)
    for r in kids:
        assert [t.id for t in r.tokens[:2]] == [t.id for t in parent.tokens[:2]]
        assert r.tokens[2].id == alt.id and r.tokens[2].logprob == alt.logprob
        assert len(r.tokens) > 3
        new = r.tokens[3:]
        prefix = list(four.prompt_token_ids) + [t.id for t in r.tokens[:3]]
        scored = local_engine.score_token_ids(prefix, [[t.id for t in new]], 5)[0]
        assert max(abs(s.logprob - t.logprob) for s, t in zip(scored, new)) <= WORST_BAND


def test_a_value_run_sends_each_continuation_with_its_prefix_and_token(remote, local_engine, four):
    from explorer.core.types import ValueStart

    parent = next(r for r in four.rollouts if len(r.tokens) >= 4)
    alt = parent.tokens[2].top[1]
    starts = [ValueStart(parent.id, 2, parent.tokens[2].id), ValueStart(parent.id, 2, alt.id)]
    c = run(remote, remote.continuations(four, starts, 2, SamplingParams(max_tokens=6, seed=5)))
    kids = c.groups()[0].rollouts
    assert [r.index for r in kids] == [4, 5, 6, 7] and all(r.value_position == 2 for r in kids)
    for r, start in zip(kids, [starts[0]] * 2 + [starts[1]] * 2):
        assert r.token_ids[:2] == parent.token_ids[:2] and r.token_ids[2] == start.token_id
        new = r.tokens[3:]
        prefix = list(four.prompt_token_ids) + [t.id for t in r.tokens[:3]]
        scored = local_engine.score_token_ids(prefix, [[t.id for t in new]], 5)[0]
        assert new and max(abs(s.logprob - t.logprob) for s, t in zip(scored, new)) <= WORST_BAND
    assert kids[2].tokens[2].logprob == alt.logprob  # the forced token's facts from the parent's top-N


def test_stop_mid_stream_keeps_what_arrived(remote):
    cancel = threading.Event()
    collector = Session(remote.info, SamplingParams())
    finished = []
    for ev in remote.generate(["Write a long story about a dragon."], 3, SamplingParams(max_tokens=400, seed=1),
                              cancel=cancel, chat=False):
        collector.add(ev)
        if isinstance(ev, RolloutFinished):
            finished.append(ev.rollout)
            cancel.set()  # the first rollout is done; the second is streaming now
        if isinstance(ev, RunFinished):
            assert ev.cancelled
    first, *rest = collector.groups()[0].rollouts
    assert first.finish_reason in ("stop", "length") and first.tokens
    assert [r.finish_reason for r in rest] == ["cancelled", "cancelled"]
    assert all(len(r.tokens) < 400 for r in rest)
    for r in rest:  # whatever arrived of a cut rollout keeps recovered ids that spell its text
        assert b"".join(t.bytes for t in r.tokens).decode("utf-8", "replace") == r.text
    # the cut stream was closed: the server serves the next request at once
    again = run(remote, remote.generate(["Hi"], 1, SamplingParams(max_tokens=2), chat=False))
    assert again.groups()[0].rollouts[0].finish_reason in ("stop", "length")


def test_server_killed_mid_stream_is_one_clear_error_and_keeps_what_arrived(default_model_path):
    from explorer.core.remote.remote_engine import RemoteEngine

    srv = LlamaCppServer(default_model_path)
    eng = RemoteEngine(srv.url)
    collector = Session(eng.info, SamplingParams())
    try:
        with pytest.raises(ExplorerError) as err:
            for ev in eng.generate(["Write a long story about a dragon."], 3, SamplingParams(max_tokens=400),
                                   chat=False):
                collector.add(ev)
                if isinstance(ev, RolloutFinished) and ev.rollout.index == 0:
                    srv.kill()
    finally:
        eng.close()
        srv.stop()
    message = str(err.value)
    assert "\n" not in message and srv.url in message
    assert "closed the connection" in message or "cannot reach" in message or "truncated" in message
    first = collector.groups()[0].rollouts[0]
    assert first.finish_reason in ("stop", "length") and first.tokens  # kept


def test_scoring_is_refused_not_shifted(remote):
    with pytest.raises(ExplorerError, match="shifted by one position"):
        remote.score(QUERY, [" Paris"], chat=False)


def test_wrong_key_is_one_line_about_the_key(server):
    from explorer.core.remote.remote_engine import RemoteEngine

    with pytest.raises(ExplorerError, match=r"refused the API key \(HTTP 401"):
        RemoteEngine(server.url, api_key="wrong")


def test_export_records_the_server_and_never_the_key(remote, four, tmp_path):
    collector = Session(remote.info, SamplingParams(max_tokens=16, seed=11))
    collector.add_group(four)
    path = tmp_path / "remote.json"
    export.save(collector.rollout_set(), path)
    text = path.read_text()
    assert KEY not in text
    back = export.load(path)
    m = back.model
    assert (m.server_url, m.server_kind, m.logprob_kind, m.entropy_kind) == (remote.facts.url, "llama_cpp.server",
                                                                             "raw", "unavailable")
    assert [r.token_ids for r in back.groups[0].rollouts] == [r.token_ids for r in four.rollouts]
    token = json.loads(text)["groups"][0]["rollouts"][0]["tokens"][0]
    assert token["entropy"] is None and "id_flag" not in token


def test_cli_generate_and_score_against_the_server(server, tmp_path):
    env = dict(os.environ, ROLLOUT_EXPLORER_API_KEY=KEY)
    out = tmp_path / "cli.json"
    proc = subprocess.run([sys.executable, "-m", "explorer", "generate", "--server", server.url, "-q", QUERY,
                           "-k", "2", "--max-tokens", "6", "--raw", "-o", str(out)],
                          capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr
    rs = export.load(out)
    assert rs.model.server_url == server.url and len(rs.groups[0].rollouts) == 2
    assert KEY not in out.read_text()
    proc = subprocess.run([sys.executable, "-m", "explorer", "score", "--server", server.url, "-q", QUERY,
                           "-r", " Paris", "--raw"], capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "scoring is unavailable on llama_cpp.server" in lines[0]
