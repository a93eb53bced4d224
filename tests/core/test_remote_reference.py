"""A policy on a server against a local reference policy: a real llama_cpp.server serving a tiny Q8_0 GGUF, and as
pi_ref the same file run here or the exact float copy of it. Only the sampled tokens' log pi_ref is known (a server
sends no full rows), so the log-ratios, importance weights and k1..k3 are there and the exact KL is unknown, never 0."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from contextlib import closing

import numpy as np
import pytest

from explorer.core.engine.local import Engine
from explorer.core.errors import ExplorerError
from explorer.core.files import export
from explorer.core.reference.exact_copy import DATA_DIR_ENV, cached_exact_copy
from explorer.core.reference.policy import ReferencePolicy, ReferenceSpec
from explorer.core.rl.stats import MISMATCH_STATS, group_stats
from explorer.core.session import Session
from explorer.core.types import SamplingParams

QUERY = "Which is the largest ocean?"


def _open(path):
    return Engine(path, n_threads=1)


@pytest.fixture(scope="module")
def remote(tiny_served):
    from explorer.core.remote.remote_engine import RemoteEngine

    with closing(RemoteEngine(tiny_served["url"])) as eng:
        yield eng


@pytest.fixture(scope="module")
def sampled(remote):
    session = Session(remote.info, SamplingParams())
    session.extend(remote.generate([QUERY], 3, SamplingParams(max_tokens=10, seed=5), chat=False))
    return session.group("q0")


def _reference(spec, remote, tmp_path=None):
    def exact_path(path, fingerprint, progress):
        return cached_exact_copy(path, fingerprint, progress, directory=tmp_path)

    return ReferencePolicy(ReferenceSpec.parse(spec), remote, _open, exact_path)


def test_the_served_file_run_here_gives_each_sampled_token_its_log_pi_ref_and_no_kl(remote, sampled, tiny_served):
    with closing(_reference(str(tiny_served["q8"]), remote)) as ref:
        assert ref.info.kl_kind == "unavailable" and not ref.info.has_kl and not ref.follows_runs
        out = ref.annotate_group(sampled)
    tokens = [t for r in out.rollouts for t in r.tokens]
    assert tokens and all(t.has_reference and t.kl is None and t.ref_top for t in tokens)
    # pi_ref is the local teacher-forced logprob of the same tokens after the server's prompt ids
    with closing(_open(tiny_served["q8"])) as local:
        for r in out.rollouts:
            scored = local.score_token_ids(list(out.prompt_token_ids), [list(r.token_ids)], 0)[0]
            np.testing.assert_allclose([t.ref_logprob for t in r.tokens], [s.logprob for s in scored], atol=1e-5)
    # the same weights on both sides: what is left is the server's own batch shapes and kernels (llama.cpp rounds
    # activations to 8 bits inside quantized matrix products), a band the mismatch numbers then measure
    ratios = np.array([t.log_ratio for t in tokens])
    assert np.isfinite(ratios).all() and np.median(np.abs(ratios)) < 0.5
    assert all(t.log_ratio == t.logprob - t.ref_logprob for t in tokens)
    for r in out.rollouts:
        assert r.log_ratio == pytest.approx(r.logprob - r.ref_logprob) and r.mean_kl is None


def test_the_exact_copy_of_a_named_gguf_against_the_server(remote, sampled, tiny_served, tmp_path):
    with closing(_reference(f"exact:{tiny_served['q8']}", remote, tmp_path)) as ref:
        assert ref.info.kind == "exact" and "exact float copy of served-q8.gguf" in ref.info.description
        assert ref.engine.info.quantization == "F32"
        out = ref.annotate_group(sampled)
    assert len(list(tmp_path.glob("exact-references/*.gguf"))) == 1
    rollouts = out.rollouts
    stats = dict(group_stats(out))
    assert stats["mean_kl"] is None and stats["kl_p99"] is None  # unknown, not 0
    assert stats["mismatch.kl_exact"] is None and set(MISMATCH_STATS) <= stats.keys()
    n = sum(len(r.tokens) for r in rollouts)
    assert 0 < stats["mismatch.ess"] <= n and -1 <= stats["mismatch.prob_pearson"] <= 1  # a near-uniform tiny model
    assert stats["mismatch.kl_k2"] > 0 and stats["mismatch.kl_k3"] >= 0 and math.isfinite(stats["mismatch.kl_k1"])
    assert stats["same_top_share"] is not None  # pi's top token is the server's top-1


def test_a_server_s_reference_is_saved_without_kl_and_read_back_unknown(remote, sampled, tiny_served, tmp_path):
    with closing(_reference(str(tiny_served["q8"]), remote)) as ref:
        out = ref.annotate_group(sampled)
        info = ref.info
    session = Session(remote.info, SamplingParams())
    session.add_group(sampled)
    session.annotate(out, info)
    session.set_reward(None)
    path = tmp_path / "remote-ref.json"
    export.save(session.rollout_set(), path)
    d = json.loads(path.read_text())
    assert d["reference_policy"]["kl_kind"] == "unavailable"
    token = d["groups"][0]["rollouts"][0]["tokens"][0]
    assert "ref_logprob" in token and "kl" not in token
    rollout = d["groups"][0]["rollouts"][0]
    assert "log_ratio" in rollout and "mean_kl" not in rollout
    mismatch = d["groups"][0]["stats"]["mismatch"]
    assert mismatch["kl_exact"] is None and mismatch["tis_cap"] == 2.0 and mismatch["kl_k1"] is not None
    back = export.load(path)
    assert back.reference_policy == info
    tokens = [t for r in back.groups[0].rollouts for t in r.tokens]
    assert all(t.has_reference and t.kl is None for t in tokens)
    assert dict(back.groups[0].stats)["mismatch.kl_exact"] is None


@pytest.mark.parametrize("spec, message", [
    ("exact", "not 'exact' alone"),
    ("system:Be brief.", "its reference is a local GGUF of the same weights"),
    ("temperature:0.5", "sends no full rows of logits"),
])
def test_what_needs_the_server_s_rows_is_refused_with_why(remote, spec, message):
    with pytest.raises(ExplorerError, match=message):
        _reference(spec, remote)


def test_a_gguf_that_tokenizes_otherwise_is_refused(remote, tiny_served):
    with pytest.raises(ExplorerError, match="tokenizes text differently from the server's model"):
        _reference(str(tiny_served["other"]), remote)


def test_cli_generate_against_the_server_with_a_local_reference(tiny_served, tmp_path):
    out = tmp_path / "cli.json"
    env = {**__import__("os").environ, DATA_DIR_ENV: str(tmp_path / "data")}
    proc = subprocess.run([sys.executable, "-m", "explorer", "generate", "--server", tiny_served["url"], "-q", QUERY,
                           "-q", "Hello world", "-k", "2", "--max-tokens", "6", "--raw", "--reference",
                           f"exact:{tiny_served['q8']}", "--tis-cap", "1.5", "-o", str(out)],
                          capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "KL unavailable" in proc.stderr and "q0 mismatch: |pi - pi_ref| max" in proc.stderr
    assert "min(pi_ref/pi, 1.5)" in proc.stderr and "exact unavailable" in proc.stderr
    assert "all groups mismatch" in proc.stderr
    rs = export.load(out)
    assert rs.reference_policy.kind == "exact" and rs.reference_policy.kl_kind == "unavailable"
    stats = dict(rs.groups[0].stats)
    assert stats["mismatch.tis_cap"] == 1.5 and stats["mismatch.kl_exact"] is None
