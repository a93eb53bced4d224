"""Reference policies on tiny real GGUFs: log-ratios and exact KL, vocabulary checks, the exact float copy, files."""

from __future__ import annotations

import json
import math
from contextlib import closing

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFReader, LlamaFileType
from tiny_gguf import write_q8_copy, write_scaled_row_copy, write_tiny_gguf

from explorer.core.files import export
from explorer.core.session import Session
from explorer.core.engine.local import Engine
from explorer.core.errors import ExplorerError
from explorer.core.reference.exact_copy import as_float32, cached_exact_copy, write_exact_copy
from explorer.core.files.jsonl import jsonl_records
from explorer.core.reference.policy import (ReferencePolicy, ReferenceSpec, kl_rows, log_softmax64, plan_windows,
                                     sampler_logprobs)
from explorer.core.rl.stats import group_stats, reference_stats
from explorer.core.types import SamplingParams

QUERY = "Which is the largest ocean?"
CHANGED_ROW = 120  # the output row the second tiny model changes
ROW_SCALE = 4.0


def _open(path):
    return Engine(path, n_threads=1)


@pytest.fixture(scope="module")
def untied(tmp_path_factory):
    """A tiny GGUF with an output matrix of its own, and a copy whose output row CHANGED_ROW is ROW_SCALE times it."""
    folder = tmp_path_factory.mktemp("ref")
    base = write_tiny_gguf(folder / "base.gguf", tie_embeddings=False, seed=3)
    return base, write_scaled_row_copy(base, folder / "changed.gguf", CHANGED_ROW, ROW_SCALE)


@pytest.fixture(scope="module")
def policy(untied):
    with closing(_open(untied[0])) as eng:
        yield eng


def _rollout_set(engine, k=3, max_tokens=20, seed=4):
    session = Session(engine.info)
    session.extend(engine.generate([QUERY], k, SamplingParams(max_tokens=max_tokens, seed=seed)))
    return session.rollout_set()


def _reference(spec, policy):
    return ReferencePolicy(ReferenceSpec.parse(spec), policy, _open)


@pytest.mark.parametrize("spec", ["temperature:1", "SELF"])
def test_a_policy_against_itself_has_zero_log_ratio_and_kl_exactly(policy, untied, spec):
    rs = _rollout_set(policy)
    with closing(_reference(str(untied[0]) if spec == "SELF" else spec, policy)) as ref:
        out = ref.annotate_set(rs)
    for r in out.groups[0].rollouts:
        assert r.tokens and all(t.kl == 0.0 and t.ref_logprob == t.logprob for t in r.tokens)
        assert r.log_ratio == 0.0 and r.mean_kl == 0.0 and r.implicit_reward(0.1) == 0.0
    stats = reference_stats(out.groups[0].rollouts)
    n = sum(len(r.tokens) for r in out.groups[0].rollouts)
    assert stats.pop("mismatch.prob_pearson") == pytest.approx(1.0)
    assert stats == {"mean_kl": 0.0, "kl_p99": 0.0, "same_top_share": 1.0, "top_disagreement_share": 0.0,
                     "mismatch.n_tokens": n, "mismatch.prob_diff_max": 0.0, "mismatch.prob_diff_mean": 0.0, "mismatch.prob_diff_std": 0.0,
                     "mismatch.tis_cap": 2.0, "mismatch.tis_clip_fraction": 0.0, "mismatch.ess": n,
                     "mismatch.kl_k1": 0.0, "mismatch.kl_k2": 0.0, "mismatch.kl_k3": 0.0, "mismatch.kl_exact": 0.0}


def test_kl_to_a_model_with_one_changed_output_row_matches_numpy(policy, untied):
    rs = _rollout_set(policy, k=2, max_tokens=12)
    group = rs.groups[0]
    with closing(_reference(str(untied[1]), policy)) as ref:
        out = ref.annotate_group(group)
    # numpy from the two weight sets: the hidden state is the same in both models, so the reference's logits are the
    # policy's with logit CHANGED_ROW scaled by ROW_SCALE (z = W h, and only row CHANGED_ROW of W changed)
    prefix = list(group.prompt_token_ids)
    for r in out.rollouts:
        ids = [t.id for t in r.tokens]
        rows = {}
        policy.teacher_force(prefix, [ids], lambda s, pos, tg, block: rows.update(zip(pos.tolist(), block.copy())))
        z = np.stack([rows[i] for i in range(len(ids))]).astype(np.float64)
        z_ref = z.copy()
        z_ref[:, CHANGED_ROW] *= ROW_SCALE
        lp, lq = log_softmax64(z), log_softmax64(z_ref)
        want_kl = (np.exp(lp) * (lp - lq)).sum(axis=1)
        np.testing.assert_allclose([t.kl for t in r.tokens], want_kl, rtol=1e-4, atol=1e-9)
        np.testing.assert_allclose([t.ref_logprob for t in r.tokens], lq[np.arange(len(ids)), ids], atol=1e-4)
        assert all(t.kl > 0 for t in r.tokens)
        assert r.log_ratio == pytest.approx(r.logprob - sum(t.ref_logprob for t in r.tokens))


def test_the_reference_top_list_is_the_reference_distribution_s(policy, untied):
    """Against itself pi_ref's top-N is pi's own; against the changed model it is the numpy top-N of its logits."""
    group = _rollout_set(policy, k=2, max_tokens=10).groups[0]
    with closing(_reference(str(untied[0]), policy)) as ref:
        same = ref.annotate_group(group)
    for r in same.rollouts:
        for t in r.tokens:
            assert [(a.id, a.token, a.bytes) for a in t.ref_top] == [(a.id, a.token, a.bytes) for a in t.top]
            np.testing.assert_allclose([a.logprob for a in t.ref_top], [a.logprob for a in t.top], atol=1e-5)
            assert t.ref_top_id == t.ref_top[0].id
    with closing(_reference(str(untied[1]), policy)) as ref:
        changed = ref.annotate_group(group)
    prefix = list(group.prompt_token_ids)
    r = changed.rollouts[0]
    ids = [t.id for t in r.tokens]
    rows = {}
    policy.teacher_force(prefix, [ids], lambda s, pos, tg, block: rows.update(zip(pos.tolist(), block.copy())))
    z = np.stack([rows[i] for i in range(len(ids))]).astype(np.float64)
    z[:, CHANGED_ROW] *= ROW_SCALE
    lq = log_softmax64(z)
    for i, t in enumerate(r.tokens):
        n = len(t.top)
        want = np.argsort(-lq[i], kind="stable")[:n]
        assert [a.id for a in t.ref_top] == want.tolist()
        np.testing.assert_allclose([a.logprob for a in t.ref_top], lq[i, want], atol=1e-4)
    assert any(t.ref_top[0].id == CHANGED_ROW for t in r.tokens) or any(
        CHANGED_ROW in [a.id for a in t.ref_top] for t in r.tokens)


def test_an_evaluation_reports_progress_and_stops_when_cancelled(policy):
    import threading

    group = _rollout_set(policy, k=3, max_tokens=10).groups[0]
    total = sum(len(r.tokens) for r in group.rollouts)
    seen = []
    with closing(_reference("temperature:0.7", policy)) as ref:
        from explorer.core.reference import policy as reference_module

        budget, reference_module.ROW_BUDGET = reference_module.ROW_BUDGET, 8  # several batches
        try:
            assert ref.annotate_group(group, progress=lambda done, n: seen.append((done, n))) is not None
            cancel = threading.Event()

            def stop_after_first(done, n):
                cancel.set()

            assert ref.annotate_group(group, progress=stop_after_first, cancel=cancel) is None
        finally:
            reference_module.ROW_BUDGET = budget
    assert len(seen) > 1 and seen[-1] == (total, total)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_a_reference_with_another_vocabulary_is_refused(policy, tmp_path):
    other = write_tiny_gguf(tmp_path / "other.gguf", extra_tokens=["zebra"], tie_embeddings=False, seed=3)
    with pytest.raises(ExplorerError, match="another vocabulary: token"):
        _reference(str(other), policy)
    bigger = write_tiny_gguf(tmp_path / "bigger.gguf", n_vocab=310)
    with pytest.raises(ExplorerError, match="vocabulary of 310 tokens, the policy 300"):
        _reference(str(bigger), policy)
    with pytest.raises(ExplorerError, match="no such GGUF"):
        _reference(str(tmp_path / "missing.gguf"), policy)


def test_system_and_sampler_references(policy):
    rs = _rollout_set(policy, k=2, max_tokens=10)
    with closing(_reference("system:Answer in French.", policy)) as ref:
        system = ref.annotate_set(rs)
    assert system.reference_policy.kind == "system" and system.reference_policy.system == "Answer in French."
    assert all(t.kl > 0 for r in system.groups[0].rollouts for t in r.tokens)
    with closing(_reference("temperature:0.5", policy)) as ref:
        cooler = ref.annotate_set(rs)
    r = cooler.groups[0].rollouts[0]
    assert all(t.kl > 0 and t.ref_top_id == t.top[0].id for t in r.tokens)  # temperature keeps the order
    with closing(_reference("top_p:0.5", policy)) as ref:
        nucleus = ref.annotate_set(rs)
    # a nucleus gives 0 to tokens pi gives mass to: KL(pi || pi_ref) is infinite, and the stats say so
    assert all(t.kl == math.inf for r in nucleus.groups[0].rollouts for t in r.tokens)
    assert reference_stats(nucleus.groups[0].rollouts)["kl_p99"] == math.inf


def test_sampler_logprobs_and_kl_helpers():
    logits = np.array([[2.0, 1.0, 0.0, -1.0]])
    p = np.exp(logits[0] - logits[0].max())
    p /= p.sum()
    cut = sampler_logprobs(logits, 1.0, 0.7)  # the top two tokens hold 0.64 + 0.24 >= 0.7
    kept = p[:2] / p[:2].sum()
    np.testing.assert_allclose(np.exp(cut[0, :2]), kept)
    assert np.isneginf(cut[0, 2:]).all()
    hot = sampler_logprobs(logits, 2.0)
    np.testing.assert_allclose(np.exp(hot[0]), np.exp(logits[0] / 2) / np.exp(logits[0] / 2).sum())
    lp = log_softmax64(logits)
    assert kl_rows(lp, lp)[0] == 0.0 and kl_rows(lp, cut)[0] == math.inf
    np.testing.assert_allclose(kl_rows(lp, hot)[0], (p * (lp[0] - hot[0])).sum())


def test_long_lists_are_windowed_and_windows_give_the_rows_of_one_pass(policy):
    assert plan_windows([3, 0, 4, 600, 2], budget=8) == [
        *[[(3, a, min(600, a + 8))] for a in range(0, 600, 8)], [(0, 0, 3), (2, 0, 4)], [(4, 0, 2)]]
    rs = _rollout_set(policy, k=1, max_tokens=40, seed=9)
    import explorer.core.reference.policy as reference_module

    with closing(_reference("system:Be brief.", policy)) as ref:
        whole = ref.annotate_set(rs).groups[0].rollouts[0]
        budget = reference_module.ROW_BUDGET
        reference_module.ROW_BUDGET = 7
        try:
            windows = ref.annotate_set(rs).groups[0].rollouts[0]
        finally:
            reference_module.ROW_BUDGET = budget
    assert len(whole.tokens) > 7
    np.testing.assert_allclose([t.kl for t in windows.tokens], [t.kl for t in whole.tokens], atol=1e-9)


def test_reference_specs_are_checked():
    assert ReferenceSpec.parse("exact") == ReferenceSpec("exact")
    assert ReferenceSpec.parse("system:Be brief: please") == ReferenceSpec("system", "Be brief: please")
    assert ReferenceSpec.parse("temperature:0.7") == ReferenceSpec("temperature", "0.7")
    assert ReferenceSpec.parse("models/x.gguf") == ReferenceSpec("model", "models/x.gguf")
    for bad, message in [("temperature:0", "in \\(0, 100\\]"), ("temperature:hot", "not a number"),
                         ("top_p:1.5", "top-p"), ("system:", "needs a system prompt"), ("", "needs a GGUF")]:
        with pytest.raises(ExplorerError, match=message):
            ReferenceSpec.parse(bad)


def test_json_and_jsonl_keep_the_reference_fields(policy, untied, tmp_path):
    rs = _rollout_set(policy, k=2, max_tokens=8)
    with closing(_reference(str(untied[1]), policy)) as ref:
        annotated = ref.annotate_set(rs)
        scores = ref.annotate_scores(QUERY, True, rs.groups[0].prompt_token_ids, policy.score(QUERY, ["Atlantic"]))
    from dataclasses import replace

    annotated = replace(annotated, groups=(replace(annotated.groups[0], scores=scores,
                                                   stats=group_stats(annotated.groups[0])),))
    path = tmp_path / "set.json"
    export.save(annotated, path)
    raw = json.loads(path.read_text())
    assert raw["reference_policy"]["kind"] == "model" and raw["reference_policy"]["fingerprint"]
    r0 = raw["groups"][0]["rollouts"][0]
    assert {"ref_logprob", "log_ratio", "mean_kl"} <= r0.keys() and {"ref_logprob", "kl"} <= r0["tokens"][0].keys()
    assert raw["groups"][0]["stats"]["mean_kl"] > 0
    back = export.load(path)
    assert back.reference_policy == annotated.reference_policy
    for a, b in zip(back.groups[0].rollouts + back.groups[0].scores,
                    annotated.groups[0].rollouts + annotated.groups[0].scores):
        assert [(t.ref_logprob, t.kl, t.ref_top_id, t.ref_top) for t in a.tokens] == [
            (t.ref_logprob, t.kl, t.ref_top_id, t.ref_top) for t in b.tokens]
        assert all(len(t.ref_top) == len(t.top) > 0 for t in a.tokens)
        assert a.log_ratio == pytest.approx(b.log_ratio) and a.mean_kl == pytest.approx(b.mean_kl)
    records = list(jsonl_records(annotated))
    assert records[0]["ref_logprobs"] == [t.ref_logprob for t in annotated.groups[0].rollouts[0].tokens]
    # a set without a reference writes none of the new keys
    plain = json.loads(export.dumps(rs))
    assert "reference_policy" not in plain and "kl" not in plain["groups"][0]["rollouts"][0]["tokens"][0]
    assert "ref_logprobs" not in next(jsonl_records(rs))


def test_the_exact_copy_round_trips_a_quantized_gguf(untied, tmp_path):
    q8 = write_q8_copy(untied[0], tmp_path / "q8.gguf")
    progress = []
    exact = write_exact_copy(q8, tmp_path / "exact.gguf", progress=lambda done, total: progress.append((done, total)))
    quantized, copied = GGUFReader(str(q8)), GGUFReader(str(exact))
    assert [t.name for t in copied.tensors] == [t.name for t in quantized.tensors]
    assert progress[-1] == (len(quantized.tensors), len(quantized.tensors))
    for q, c in zip(quantized.tensors, copied.tensors):
        assert c.tensor_type == GGMLQuantizationType.F32
        np.testing.assert_array_equal(as_float32(c), as_float32(q))  # exactly gguf's dequantization
    assert copied.get_field("general.file_type").contents() == int(LlamaFileType.ALL_F32)
    assert copied.get_field("tokenizer.ggml.tokens").contents() == quantized.get_field("tokenizer.ggml.tokens").contents()
    # the copy is a model llama.cpp runs, and as a reference it shows what quantization does to the policy
    with closing(_open(q8)) as policy:
        rs = _rollout_set(policy, k=1, max_tokens=8)
        ref = ReferencePolicy(ReferenceSpec("exact"), policy, _open,
                              exact_path=lambda path, fingerprint, progress: cached_exact_copy(
                                  path, fingerprint, directory=tmp_path / "data"))
        with closing(ref):
            out = ref.annotate_set(rs).groups[0].rollouts[0]
            assert ref.info.kind == "exact" and "exact float copy" in ref.info.description
        assert all(0.0 < t.kl < 0.05 for t in out.tokens)
    cached = list((tmp_path / "data" / "exact-references").iterdir())
    assert len(cached) == 1 and cached[0].suffix == ".gguf"  # written once, no partial file left


def test_the_exact_copy_agrees_with_a_float64_numpy_forward_of_the_quantized_weights(untied, tmp_path):
    from tiny_gguf import numpy_forward

    q8 = write_q8_copy(untied[0], tmp_path / "q8.gguf")
    exact = write_exact_copy(q8, tmp_path / "exact.gguf")
    ids = [40, 50, 60, 70, 80, 90, 100, 110]
    with closing(_open(exact)) as eng:
        prompt = list(eng.format_prompt(QUERY)[1])
        rows = {}
        eng.teacher_force(prompt, [ids], lambda s, pos, tg, block: rows.update(zip(pos.tolist(), block.copy())))
    got = log_softmax64(np.stack([rows[i] for i in range(len(ids))]))
    # the exact model: Q8_0's dequantized weights in float64; only llama.cpp's float16 KV cache rounds on the way
    want = log_softmax64(numpy_forward(q8, prompt + ids)[len(prompt) - 1: len(prompt) - 1 + len(ids)])
    np.testing.assert_allclose(got, want, atol=5e-4)


# -- in lock-step with generation ---------------------------------------------------------------------------------
def _lockstep_set(policy, ref, k=3, max_tokens=12, seed=4, branch=None):
    follower = ref.lockstep(SamplingParams().top_n)
    try:
        session = Session(policy.info)
        session.extend(policy.generate([QUERY], k, SamplingParams(max_tokens=max_tokens, seed=seed),
                                       follower=follower))
        if branch is not None:
            rollout_id, position = branch
            session.extend(policy.branch(session.group("q0"), rollout_id, position, None, 2,
                                         SamplingParams(max_tokens=max_tokens, seed=seed + 50), follower=follower))
    finally:
        follower.close()
    return session.rollout_set()


@pytest.mark.parametrize("spec", ["CHANGED", "system:Answer in French.", "temperature:0.6", "top_p:0.8"])
def test_a_reference_followed_while_sampling_gives_the_facts_of_teacher_forcing_after(policy, untied, spec):
    """Same rollouts (the follower never changes what is sampled), same facts as evaluating them afterwards."""
    text = str(untied[1]) if spec == "CHANGED" else spec
    plain = _rollout_set(policy, k=3, max_tokens=12)
    with closing(_reference(text, policy)) as ref:
        followed = _lockstep_set(policy, ref, k=3, max_tokens=12, branch=("q0.r1", 3))
        after = ref.annotate_group(followed.groups[0])
    live = followed.groups[0].rollouts
    assert [r.token_ids for r in live[:3]] == [r.token_ids for r in plain.groups[0].rollouts]
    assert len(live) == 5 and live[3].parent_id == "q0.r1"
    for a, b in zip(live, after.rollouts):
        for i, (x, y) in enumerate(zip(a.tokens, b.tokens)):
            if a.parent_id is not None and i < a.branch_position:
                continue  # copied from the parent: its facts are the parent's
            assert x.kl == pytest.approx(y.kl, rel=1e-4, abs=1e-7), (a.id, i)
            assert x.ref_logprob == pytest.approx(y.ref_logprob, abs=1e-4) or x.ref_logprob == y.ref_logprob
            assert x.ref_top_id == y.ref_top_id and [t.id for t in x.ref_top] == [t.id for t in y.ref_top]
    assert all(t.kl is not None for r in live[:3] for t in r.tokens)


def test_a_followed_self_reference_is_exactly_zero(policy, untied):
    with closing(_reference(str(untied[0]), policy)) as ref:
        followed = _lockstep_set(policy, ref, k=2, max_tokens=10)
    for r in followed.groups[0].rollouts:
        assert all(t.kl == 0.0 and t.ref_logprob == t.logprob for t in r.tokens)
        assert r.log_ratio == 0.0


def test_exact_names_the_gguf_to_copy_or_the_policy_s_own():
    assert ReferenceSpec.parse("exact") == ReferenceSpec("exact")
    assert ReferenceSpec.parse("exact:models/a b.gguf") == ReferenceSpec("exact", "models/a b.gguf")
    with pytest.raises(ExplorerError, match="exact:PATH needs the GGUF"):
        ReferenceSpec.parse("exact: ")


def test_the_exact_copy_of_another_gguf_than_the_policy_s(untied, tmp_path):
    """exact:PATH: the float copy of the GGUF named (here a Q8_0 of the policy's weights: the log-ratios are its
    quantization error), written once and read back from the cache."""
    q8 = write_q8_copy(untied[0], tmp_path / "q8.gguf")

    def exact_path(path, fingerprint, progress):
        return cached_exact_copy(path, fingerprint, progress, directory=tmp_path / "data")

    with closing(_open(q8)) as policy:
        rs = _rollout_set(policy, k=1, max_tokens=6)
        for _ in range(2):
            with closing(ReferencePolicy(ReferenceSpec.parse(f"exact:{q8}"), policy, _open, exact_path)) as ref:
                assert ref.info.kind == "exact" and "exact float copy of q8.gguf" in ref.info.description
                assert ref.info.kl_kind == "exact" and ref.follows_runs
                tokens = ref.annotate_set(rs).groups[0].rollouts[0].tokens
            assert all(0.0 < t.kl < 0.05 for t in tokens)
        with pytest.raises(ExplorerError, match="no such GGUF file"):
            ReferencePolicy(ReferenceSpec.parse(f"exact:{tmp_path / 'missing.gguf'}"), policy, _open, exact_path)
    assert len(list((tmp_path / "data" / "exact-references").glob("*.gguf"))) == 1
