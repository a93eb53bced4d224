"""Token tree benchmark: build + icicle layout + repaint times for 64 rollouts x 512 tokens with top-5 ghosts
(~170k nodes).

`run_tree_bench()` returns one dict per measurement; run this file to print them as a table. The target is 33 ms or
less per repaint (a 30 Hz refresh). Rollouts come from a synthetic policy whose next-token distribution depends only
on the prefix (as a real model's does), so rollouts that share a prefix share ghosts, and they part at random places.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from explorer.core.tree.icicle import MODES, compute_icicle  # noqa: E402
from explorer.core.tree.token_tree import TokenTree  # noqa: E402
from explorer.core.types import Rollout, TokenEvent, TokenInfo, TopLogprob  # noqa: E402

WORDS = ("the", " cat", " sat", " on", " a", " mat", " and", " then", " it", " ran", " away", ",", ".", " dog",
         " saw", " bird", " in", " tree", " with", " sun", "\n", " very", " quickly", " slowly", " home")


def _distribution(state: bytes, peak: float) -> tuple[np.ndarray, np.ndarray]:
    """(token ids sorted by probability, their logprobs) for a prefix state: deterministic per prefix."""
    seed = int.from_bytes(hashlib.blake2b(state, digest_size=8).digest(), "little")
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 1.0, len(WORDS))
    logits[rng.integers(len(WORDS))] += peak * rng.random() * 6.0
    logp = logits - np.log(np.exp(logits - logits.max()).sum()) - logits.max()
    order = np.argsort(-logp)
    return order, logp[order]


def synthetic_rollouts(n_rollouts: int = 32, n_tokens: int = 256, top_n: int = 5, seed: int = 0,
                       peak: float = 1.0) -> list[Rollout]:
    """Rollouts sampled at temperature 1 from the synthetic policy, each token with its top-N alternatives."""
    rollouts = []
    for r in range(n_rollouts):
        rng = np.random.default_rng(seed * 1000 + r)
        state, tokens = b"prompt", []
        for _ in range(n_tokens):
            order, logp = _distribution(state, peak)
            probs = np.exp(logp)
            pick = int(rng.choice(len(order), p=probs / probs.sum()))
            entropy = float(-(probs * logp).sum())
            top = tuple(TopLogprob(int(order[i]), WORDS[order[i]], WORDS[order[i]].encode(), float(logp[i]))
                        for i in range(min(top_n, len(order))))
            tid = int(order[pick])
            tokens.append(TokenInfo(tid, WORDS[tid], WORDS[tid].encode(), float(logp[pick]), float(logp[pick]),
                                    entropy, pick + 1, top))
            state = hashlib.blake2b(state + tid.to_bytes(2, "little"), digest_size=16).digest()
        rollouts.append(Rollout(f"q0.r{r}", r, seed + r, "".join(t.token for t in tokens), tuple(tokens), "length"))
    return rollouts


def stream_steps(rollouts: list[Rollout]) -> list[list[TokenEvent]]:
    """The rollouts as the engine streams them: one batch per decode step, every rollout in turn."""
    width = max(len(r.tokens) for r in rollouts)
    return [[TokenEvent("q0", r.id, p, r.tokens[p], r.tokens[p].token) for r in rollouts if p < len(r.tokens)]
            for p in range(width)]


def _timeit(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1000.0


def run_tree_bench(n_rollouts: int = 64, n_tokens: int = 512, top_n: int = 5, repeat: int = 5) -> list[dict]:
    rollouts = synthetic_rollouts(n_rollouts, n_tokens, top_n)
    steps = stream_steps(rollouts)
    results = []

    def build():
        tree = TokenTree("q0", "prompt")
        for batch in steps:
            for ev in batch:
                tree.add_event(ev)
        return tree

    tree = build()
    n_tokens_total = sum(len(b) for b in steps)
    ms = _timeit(build, max(1, repeat // 2))
    results.append({"case": "core: stream all tokens into a tree", "nodes": len(tree), "ms": ms,
                    "per_token_us": ms * 1000.0 / n_tokens_total})
    for mode in MODES:
        results.append({"case": f"core: icicle layout ({mode})", "nodes": len(tree),
                        "ms": _timeit(lambda: compute_icicle(tree, mode), repeat)})

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    from explorer.gui.tree.tree_view import TokenTreeView

    app = QApplication.instance() or QApplication([])
    view = TokenTreeView()
    view.resize(1400, 800)
    view.show()
    app.processEvents()

    def full_redraw():
        view.set_tree(tree)
        view.grab()  # forces the paint, so the time includes culling and drawing every visible box and text

    for mode in MODES:
        view.set_mode(mode)
        results.append({"case": f"view: full redraw, {mode} heights (set_tree + paint)", "nodes": len(tree),
                        "ms": _timeit(full_redraw, repeat), "boxes": view.icicle.painted.boxes})
        results.append({"case": f"view: repaint only, {mode} heights (hover, pan)", "nodes": len(tree),
                        "ms": _timeit(view.graphics.grab, repeat), "boxes": view.icicle.painted.boxes})
    # The tree at the size the window gives it (about 1000 x 500), and zoomed in until its chains are drawn token
    # by token (the most a paint draws: every token in view, each with its text).
    view.resize(1000, 500)
    app.processEvents()
    for mode in MODES:
        view.set_mode(mode)
        results.append({"case": f"view: full redraw at 1000x500, {mode} heights", "nodes": len(tree),
                        "ms": _timeit(full_redraw, repeat), "boxes": view.icicle.painted.boxes})
    view.plot.vb.setRange(xRange=(100, 112), yRange=(0.0, 0.25), padding=0)
    view.set_mode("model")
    results.append({"case": "view: repaint zoomed in, model heights (tokens drawn one by one)", "nodes": len(tree),
                    "ms": _timeit(view.graphics.grab, repeat), "boxes": view.icicle.painted.boxes,
                    "striped_runs": view.icicle.painted.striped_runs})
    view.resize(1400, 800)
    app.processEvents()
    # The baseline, in this run: the same boxes painted one QPainter.fillRect call each (no arrays, no culling).
    from PySide6.QtCore import QRectF
    from PySide6.QtGui import QColor, QImage, QPainter

    ice = view.icicle_layout
    image = QImage(1400, 800, QImage.Format.Format_ARGB32_Premultiplied)
    colour = QColor("#21918c")
    sx = 1300 / (ice.extent[1] + 1)

    def naive():
        painter = QPainter(image)
        for x, y, h in zip(ice.x0.tolist(), ice.y0.tolist(), ice.height.tolist()):
            if h > 0:
                painter.fillRect(QRectF((x + 1) * sx, y * 780, sx, h * 780), colour)
        painter.end()

    results.append({"case": "baseline: one fillRect call per box (same boxes)", "nodes": len(tree),
                    "ms": _timeit(naive, max(1, repeat // 2))})
    # Incremental: a growing tree, one decode step (n_rollouts tokens) between refreshes, as the 30 Hz timer sees it.
    view.set_mode("empirical")
    live = TokenTree("q0", "prompt")
    view.set_tree(live)
    view.set_growing(True)  # as the window streams: the x range steps ahead of the tree instead of moving each step
    times = []
    for batch in steps:
        for ev in batch:
            live.add_event(ev)
        t0 = time.perf_counter()
        view.refresh()
        view.grab()
        times.append((time.perf_counter() - t0) * 1000.0)
    tail = times[-max(1, len(times) // 8):]  # the late steps, where the tree is largest
    results.append({"case": "view: incremental refresh + paint (late steps, median)", "nodes": len(live),
                    "ms": float(np.median(tail))})
    results.append({"case": "view: incremental refresh + paint (worst step)", "nodes": len(live),
                    "ms": float(max(times))})
    view.close()
    baseline = next(r["ms"] for r in results if r["case"].startswith("baseline"))
    for row in results:
        if row["case"].startswith("view: full redraw"):
            row["x_faster_than_baseline"] = baseline / row["ms"]
    return results


def main() -> None:
    results = run_tree_bench()
    print(f"{'case':66} {'nodes':>7} {'ms':>9}")
    for row in results:
        extra = f"   ({row['per_token_us']:.1f} us/token)" if "per_token_us" in row else ""
        extra += f"   ({row['boxes']} boxes drawn)" if "boxes" in row else ""
        flag = "" if not row["case"].startswith("view") else ("  ok" if row["ms"] <= 33.0 else "  > 33 ms target")
        if "x_faster_than_baseline" in row:
            flag += f"   ({row['x_faster_than_baseline']:.1f}x faster than the per-box baseline)"
        print(f"{row['case']:66} {row['nodes']:>7} {row['ms']:>9.2f}{extra}{flag}")


if __name__ == "__main__":
    main()
