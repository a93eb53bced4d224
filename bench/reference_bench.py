"""The cost of a reference policy pass per token, against generating the same tokens and scoring them once more.

One process, the default model: k rollouts are generated (timed), scored once by teacher forcing (timed: "one more
decode of the same tokens", the target), then evaluated under each kind of reference (timed). A reference needs the
policy's full logits rows and the reference's: a sampler reference (temperature) reuses the policy's rows, a system
prompt reference decodes the tokens twice on one engine, the exact float copy decodes them on a second, slower model.
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
    from explorer.core.engine import Engine
    from explorer.core.exact_copy import cached_exact_copy
    from explorer.core.models import default_model_path
    from explorer.core.reference import ReferencePolicy, ReferenceSpec
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

        for spec in ("temperature:0.7", "system:Answer briefly.", "exact"):
            t0 = time.perf_counter()
            ref = ReferencePolicy(ReferenceSpec.parse(spec), policy, lambda p: Engine(p), exact_path)
            setup_s = time.perf_counter() - t0
            with closing(ref):
                t0 = time.perf_counter()
                ref.annotate_group(group)
                ref_s = time.perf_counter() - t0
            rows.append({"pass": f"reference {spec}", "tokens": n, "ms/token": 1000 * ref_s / n,
                         "vs_generate": ref_s / generate_s, "vs_one_more_scoring": ref_s / score_s,
                         "setup_s": setup_s})
            if log:
                log(f"  reference {spec}: {1000 * ref_s / n:.1f} ms/token ({ref_s / score_s:.2f}x one more scoring)")
    return rows


if __name__ == "__main__":
    for row in run_reference_bench(log=print):
        print(row)
