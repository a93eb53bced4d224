"""The exact reference on the real default model (Q4_1): what quantization does to the policy, per token."""

from __future__ import annotations

from contextlib import closing

import numpy as np
import pytest

from explorer.core.session import Session
from explorer.core.engine.local import Engine
from explorer.core.reference.exact_copy import cached_exact_copy
from explorer.core.reference.policy import ReferencePolicy, ReferenceSpec
from explorer.core.rl.stats import reference_stats
from explorer.core.types import SamplingParams

pytestmark = pytest.mark.model


def test_exact_reference_of_the_default_model(default_model_path, tmp_path):
    with closing(Engine(default_model_path, n_threads=1)) as policy:
        session = Session(policy.info)
        session.extend(policy.generate(["Which is the largest ocean?"], 4, SamplingParams(max_tokens=24, seed=2)))
        group = session.group("q0")

        def exact_path(path, fingerprint, progress):
            return cached_exact_copy(path, fingerprint, progress, directory=tmp_path)

        with closing(ReferencePolicy(ReferenceSpec("exact"), policy, lambda p: Engine(p, n_threads=1),
                                     exact_path)) as ref:
            annotated = ref.annotate_group(group)
            assert (policy.info.quantization, ref.engine.info.quantization) == ("Q4_1", "F32")
    tokens = [t for r in annotated.rollouts for t in r.tokens]
    ratios = np.array([t.logprob - t.ref_logprob for t in tokens])
    # Q4_1 against its own float32 weights: small per-token differences (a few hundredths of a nat), never zero
    assert 0.0 < np.median(np.abs(ratios)) < 0.2 and all(t.kl > 0 for t in tokens)
    stats = reference_stats(annotated.rollouts)
    assert 0.0 < stats["mean_kl"] < 0.1 and stats["same_top_share"] > 0.8


def test_following_the_run_gives_the_facts_of_teacher_forcing_on_the_default_model(default_model_path):
    """Q4_1 policy, system-prompt reference on the same model: the reference decoded step by step while sampling
    and teacher-forced after the run agree exactly (llama.cpp's micro-batches stay under 64 tokens on both paths, so
    the same kernels round the 8-bit activations the same way)."""
    with closing(Engine(default_model_path, n_threads=1)) as policy:
        with closing(ReferencePolicy(ReferenceSpec.parse("system:Answer in French."), policy, Engine)) as ref:
            follower = ref.lockstep(5)
            try:
                session = Session(policy.info)
                session.extend(policy.generate(["Which is the largest ocean?"], 4,
                                               SamplingParams(max_tokens=24, seed=2), follower=follower))
            finally:
                follower.close()
            followed = session.group("q0")
            after = ref.annotate_group(followed)
    pairs = [(a, b) for x, y in zip(followed.rollouts, after.rollouts) for a, b in zip(x.tokens, y.tokens)]
    assert len(pairs) > 40 and all(a.kl is not None and a.kl > 0 for a, _ in pairs)
    assert [(a.kl, a.ref_logprob, a.ref_top_id) for a, _ in pairs] == [(b.kl, b.ref_logprob, b.ref_top_id)
                                                                        for _, b in pairs]
