"""Rollout sets of any size, built from the types directly (no model): for the loader's large-file tests and for
the memory benchmark. Token texts mix ASCII with a few multi-byte characters, as real sets do."""

from __future__ import annotations

import random

from explorer.core.types import ModelInfo, QueryGroup, Rollout, RolloutSet, SamplingParams, TokenInfo, TopLogprob

_WORDS = [" the", " ocean", " Pacific", " is", " largest", ",", ".", " and", " 42", " café", " —", " 海", "\n", " a"]


def synthetic_set(n_groups: int, k: int, n_tokens: int, top_n: int = 5, seed: int = 0) -> RolloutSet:
    rng = random.Random(seed)
    vocab = [(i, w) for i, w in enumerate(_WORDS)]
    groups = []
    for g in range(n_groups):
        rollouts = []
        for i in range(k):
            tokens = []
            for _ in range(n_tokens):
                tid, word = rng.choice(vocab)
                top = tuple(TopLogprob(a, _WORDS[a], _WORDS[a].encode(), -rng.random() * 5)
                            for a in rng.sample(range(len(_WORDS)), top_n))
                tokens.append(TokenInfo(tid, word, word.encode(), -rng.random() * 4, -rng.random() * 3,
                                        rng.random() * 3, rng.randint(1, 50), top))
            text = "".join(t.token for t in tokens)
            rollouts.append(Rollout(f"q{g}.r{i}", i, i, text, tuple(tokens), "length"))
        groups.append(QueryGroup(f"q{g}", f"query {g}", True, f"<prompt {g}>", (1, 2, 3), tuple(rollouts)))
    model = ModelInfo(path="synthetic.gguf", name="synthetic", architecture="llama", n_params=1000,
                      n_vocab=len(_WORDS), n_ctx=4096, file_size=1, fingerprint="0" * 16, chat_template=True)
    return RolloutSet(model=model, sampling=SamplingParams(top_n=top_n), groups=tuple(groups),
                      created_at="2026-01-01T00:00:00Z")
