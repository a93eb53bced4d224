"""The remote engine against a llama_cpp.server on 127.0.0.1 serving the default model.

- Client overhead: RemoteEngine.generate of k rollouts against a bare httpx async client that replays the very same
  completion requests (same bodies, same seeds, one at a time as the client sends them to this server) and only reads
  the stream's lines. The server does identical work for both, so the ratio is what the client adds: parsing, ids
  recovered by tokenizing (this server sends none), events. Alternated, best of `repeats` each.
- Throughput: tokens per second at k = 8 and 32 through the server and through the local engine on the same model in
  the same run. llama_cpp.server decodes one request at a time, so this row shows the price of a server that does not
  batch; a vLLM server batches the k requests instead.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

QUERY = "Explain in detail how a steam engine works, step by step."
N_TOKENS = 16  # this server computes its top-N over the whole vocabulary in Python: ~7 tokens/s here
SEED = 1234


def _params(k_tokens: int = N_TOKENS):
    from explorer.core.types import SamplingParams

    return SamplingParams(max_tokens=k_tokens, seed=SEED, top_n=5)


def _client_run(eng, k: int) -> tuple[float, int]:
    from explorer.core.types import TokenBatch

    t0 = time.perf_counter()
    n = sum(len(ev.events) for ev in eng.generate([QUERY], k, _params(), chat=False) if isinstance(ev, TokenBatch))
    return time.perf_counter() - t0, n


def _bare_run(eng, k: int) -> float:
    """The same requests through a plain httpx client: send, read every line, nothing else."""
    import httpx

    params = _params()
    prompt, ids = eng.format_prompt(QUERY, chat=False)
    bodies = [eng._dialect.completion(list(ids), prompt, params, SEED + i) for i in range(k)]

    async def replay():
        async with httpx.AsyncClient(base_url=eng.facts.url, timeout=120, trust_env=False) as client:
            for body in bodies:
                async with client.stream("POST", "/v1/completions", json=body) as resp:
                    async for _ in resp.aiter_lines():
                        pass

    t0 = time.perf_counter()
    asyncio.run(replay())
    return time.perf_counter() - t0


def _local_run(local, k: int) -> tuple[float, int]:
    from explorer.core.types import TokenBatch

    t0 = time.perf_counter()
    n = sum(len(ev.events) for ev in local.generate([QUERY], k, _params(), chat=False) if isinstance(ev, TokenBatch))
    return time.perf_counter() - t0, n


def _time_recovery(eng) -> list:
    """Wraps the engine's id recovery so the bench can say how much of the client's time it is."""
    spent = [0.0]
    recover = eng._recover_ids

    async def timed(raws):
        t0 = time.perf_counter()
        try:
            return await recover(raws)
        finally:
            spent[0] += time.perf_counter() - t0

    eng._recover_ids = timed
    return spent


def run_remote_bench(log=print, repeats: int = 3) -> tuple[list[dict], list[dict]]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from servers import LlamaCppServer

    from explorer.core.engine.local import Engine
    from explorer.core.models.discovery import default_model_path
    from explorer.core.remote.remote_engine import RemoteEngine

    model = default_model_path()
    log("remote: starting llama_cpp.server ...")
    server = LlamaCppServer(model)
    overhead, throughput = [], []
    try:
        eng = RemoteEngine(server.url)
        try:
            _client_run(eng, 1)  # warm: the server's first request pays its own setup
            recovery = _time_recovery(eng)
            runs: dict[int, tuple[float, int]] = {}
            bare_s, recover_s = [], []
            for rep in range(repeats):  # alternated, and the order swapped each round: the machine may be shared
                for side in ((0, 1) if rep % 2 == 0 else (1, 0)):
                    if side == 0:
                        bare_s.append(_bare_run(eng, 8))
                    else:
                        recovery[0] = 0.0
                        runs[8] = min(runs.get(8, (float("inf"), 0)), _client_run(eng, 8), key=lambda r: r[0])
                        recover_s.append(recovery[0])
            overhead.append({"k": 8, "tokens/rollout": N_TOKENS, "bare s": min(bare_s), "client s": runs[8][0],
                             "client/bare": runs[8][0] / min(bare_s),
                             # the client's own largest part, measured inside it: first run (strings not yet cached)
                             # and best later run
                             "id recovery s (first/later)": f"{recover_s[0]:.2f}/{min(recover_s[1:] or recover_s):.2f}"})
            log("remote: throughput k=32 ...")
            runs[32] = _client_run(eng, 32)  # once: ~1 min on this server
            local = Engine(model)
            try:
                for k in (8, 32):
                    local_s, local_n = min((_local_run(local, k) for _ in range(repeats)), key=lambda r: r[0])
                    remote_s, remote_n = runs[k]
                    throughput.append({"k": k, "remote tok/s": remote_n / remote_s, "local tok/s": local_n / local_s,
                                       "remote/local": (remote_n / remote_s) / (local_n / local_s)})
            finally:
                local.close()
        finally:
            eng.close()
    finally:
        server.stop()
    return overhead, throughput


if __name__ == "__main__":
    over, thr = run_remote_bench()
    print(over)
    print(thr)
