"""The cost of a reference policy pass per token, against generating the same tokens and scoring them once more.

One process, the default model: k rollouts are generated (timed), scored once by teacher forcing (timed: "one more
decode of the same tokens", the target), then evaluated under each kind of reference (timed), two ways:
- after the run (a reference chosen for rollouts already there): the policy's full logits rows and the reference's
  are needed, so both are teacher-forced: a sampler reference (temperature) reuses the policy's rows, a system prompt
  reference decodes the tokens twice on one model, the exact float copy on a second, slower model;
- while sampling (a reference in use when the run starts: reference.LockstepReference): the policy's rows are at hand
  in the sampling loop, so only the reference decodes the step's tokens, once; its cost is generation with the
  follower minus generation without it, both timed here.
"""

from __future__ import annotations

import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

QUERY = "Explain in detail how a steam engine works, step by step."


def run_reference_bench(model_path: str = "", k: int = 8, n_tokens: int = 32, log=None) -> list[dict]:
    from explorer.core.session import Session
    from explorer.core.engine.local import Engine
    from explorer.core.reference.exact_copy import cached_exact_copy
    from explorer.core.models.discovery import default_model_path
    from explorer.core.reference.policy import ReferencePolicy, ReferenceSpec
    from explorer.core.types import SamplingParams

    model_path = model_path or str(default_model_path())
    rows = []
    with closing(Engine(model_path)) as policy, tempfile.TemporaryDirectory(prefix="ref-bench-") as tmp:
        session = Session(policy.info)
        t0 = time.perf_counter()
        session.extend(policy.generate([QUERY], k, SamplingParams(max_tokens=n_tokens, seed=3)))
        generate_s = time.perf_counter() - t0
        group = session.group("q0")
        n = sum(len(r.tokens) for r in group.rollouts)
        t0 = time.perf_counter()
        policy.score_token_ids(list(group.prompt_token_ids), [list(r.token_ids) for r in group.rollouts])
        score_s = time.perf_counter() - t0
        rows.append({"pass": "generate", "tokens": n, "ms/token": 1000 * generate_s / n, "vs_generate": 1.0,
                     "vs_one_more_scoring": generate_s / score_s})
        rows.append({"pass": "score once more (target)", "tokens": n, "ms/token": 1000 * score_s / n,
                     "vs_generate": score_s / generate_s, "vs_one_more_scoring": 1.0})

        def exact_path(path, progress):
            return cached_exact_copy(path, policy.info.fingerprint, directory=Path(tmp))

        params = SamplingParams(max_tokens=n_tokens, seed=3)

        def generate(follower=None) -> float:
            t0 = time.perf_counter()
            s = Session(policy.info)
            s.extend(policy.generate([QUERY], k, params, **({"follower": follower} if follower else {})))
            return time.perf_counter() - t0

        for spec in ("temperature:0.7", "system:Answer briefly.", "exact"):
            t0 = time.perf_counter()
            ref = ReferencePolicy(ReferenceSpec.parse(spec), policy, lambda p: Engine(p), exact_path)
            setup_s = time.perf_counter() - t0
            with closing(ref):
                t0 = time.perf_counter()
                ref.annotate_group(group)
                ref_s = time.perf_counter() - t0
                # in lock-step with generation (what the window does with a reference chosen before the run): the
                # cost is what generating with the follower adds to generating without it, measured side by side
                plain_s = generate()
                follower = ref.lockstep(params.top_n)
                try:
                    followed_s = generate(follower)
                finally:
                    follower.close()
                extra_s = max(followed_s - plain_s, 0.0)
            rows.append({"pass": f"reference {spec}, after the run", "tokens": n, "ms/token": 1000 * ref_s / n,
                         "vs_generate": ref_s / generate_s, "vs_one_more_scoring": ref_s / score_s,
                         "setup_s": setup_s})
            rows.append({"pass": f"reference {spec}, while sampling", "tokens": n, "ms/token": 1000 * extra_s / n,
                         "vs_generate": extra_s / plain_s, "vs_one_more_scoring": extra_s / score_s})
            if log:
                log(f"  reference {spec}: after the run {1000 * ref_s / n:.1f} ms/token ({ref_s / score_s:.2f}x one "
                    f"more scoring); while sampling +{1000 * extra_s / n:.1f} ms/token ({extra_s / score_s:.2f}x)")
    return rows


if __name__ == "__main__":
    for row in run_reference_bench(log=print):
        print(row)
