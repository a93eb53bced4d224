"""Checks a rollout set can pass that the schema cannot express, for a set read from a file: does each rollout's
`text` agree with its tokens' bytes, and do its token ids fit the model that is loaded now?

They flag rather than refuse: a set with a hand-edited text still shows, but the user is told which rollouts no
longer say what their tokens say (rewards read the text, branching reads the tokens) and that branching a set made
with another model's vocabulary will be refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Sequence

from explorer.core.types import QueryGroup, Rollout, RolloutSet, TokenInfo

# Control tokens (<|im_end|>, </s>, <eos>, ...) are in a token's bytes but add nothing to the text; a normal token
# may look the same ("<br>"), so a token like this may be in the text or not.
_CONTROL = re.compile(rb"<[^<>\s]{1,64}>")
# A rollout cut off mid-character (cancelled) lacks the last character's first bytes in its text.
_MAX_PENDING_BYTES = 3


def _aligned(text: bytes, tokens: Sequence[TokenInfo], prefix_ok: bool, tail_ok: int) -> bool:
    """Greedy: each token's bytes come next in text, or it is a control token left out. prefix_ok: text may end
    inside the tokens (a stop string cut it); tail_ok: that many bytes of tokens may be missing at the end."""
    pos = 0
    for k, t in enumerate(tokens):
        piece = t.bytes
        if text.startswith(piece, pos):
            pos += len(piece)
        elif _CONTROL.fullmatch(piece):
            continue
        elif pos == len(text) and prefix_ok:
            return True
        elif text[pos:] and piece.startswith(text[pos:]) and prefix_ok:
            return True
        else:
            rest = b"".join(x.bytes for x in tokens[k:])
            return pos == len(text) and len(rest) <= tail_ok
    return pos == len(text)


def _decoded_match(text: str, tokens: Sequence[TokenInfo], prefix_ok: bool) -> bool:
    """For bytes that are not valid UTF-8 (the text holds U+FFFD for them): compare decoded text instead."""
    for keep_controls in (True, False):
        data = b"".join(t.bytes for t in tokens if keep_controls or not _CONTROL.fullmatch(t.bytes))
        decoded = data.decode("utf-8", "replace")
        if decoded == text or (prefix_ok and decoded.startswith(text)):
            return True
    return False


def text_problem(rollout: Rollout) -> Optional[str]:
    """Why the rollout's text is not what its tokens' bytes spell, or None when it is."""
    try:
        text = rollout.text.encode("utf-8")
    except UnicodeEncodeError:
        return "the text holds a lone surrogate, which no token's bytes can spell"
    cut = rollout.finish_reason in ("stop_string", "cancelled")
    tail = _MAX_PENDING_BYTES if rollout.finish_reason == "cancelled" else 0
    if _aligned(text, rollout.tokens, cut, tail) or _decoded_match(rollout.text, rollout.tokens, cut):
        return None
    spelled = b"".join(t.bytes for t in rollout.tokens).decode("utf-8", "replace")
    at = next((i for i, (a, b) in enumerate(zip(rollout.text, spelled)) if a != b), min(len(rollout.text),
                                                                                            len(spelled)))
    return (f"the text does not match its tokens' bytes (they differ from character {at}: text "
            f"{rollout.text[at:at + 20]!r}, tokens {spelled[at:at + 20]!r})")


def group_text_problems(g: QueryGroup, index: int) -> list[str]:
    """One line per rollout of group number `index` whose text disagrees with its tokens, with its JSON path."""
    out = []
    for j, r in enumerate(g.rollouts):
        problem = text_problem(r)
        if problem:
            out.append(f"at $.groups[{index}].rollouts[{j}].text (rollout {r.id}): {problem}")
    return out


def text_problems(rs: RolloutSet) -> list[str]:
    """One line per rollout of the set whose text disagrees with its tokens, with its JSON path."""
    return [line for i, g in enumerate(rs.groups) for line in group_text_problems(g, i)]


@dataclass(frozen=True)
class VocabReport:
    n_outside: int  # token ids (prompts, rollouts, scores, top alternatives) outside 0..n_vocab-1
    largest: int
    first_at: str  # the JSON path of the first

    def message(self, n_vocab: int) -> str:
        return (f"{self.n_outside} token id(s) in this set are outside the loaded model's vocabulary "
                f"(0..{n_vocab - 1}; the largest is {self.largest}, first at {self.first_at}): it was made with "
                "another model, so branching and scoring its rollouts will be refused")


def vocab_report(rs: RolloutSet, n_vocab: int) -> Optional[VocabReport]:
    """None when every token id of the set fits a vocabulary of n_vocab tokens (call it when a set is opened with
    a model loaded, or a model is loaded while a set is shown)."""
    n_outside, largest, first_at = 0, -1, ""

    def see(ids, where: str) -> None:
        nonlocal n_outside, largest, first_at
        for k, token_id in enumerate(ids):
            if not 0 <= token_id < n_vocab:
                n_outside += 1
                largest = max(largest, token_id)
                first_at = first_at or f"{where}[{k}]"

    for i, g in enumerate(rs.groups):
        see(g.prompt_token_ids, f"$.groups[{i}].prompt_token_ids")
        for kind, seqs in (("rollouts", g.rollouts), ("scores", g.scores)):
            for j, seq in enumerate(seqs):
                where = f"$.groups[{i}].{kind}[{j}].tokens"
                see([t.id for t in seq.tokens], where)
                for k, t in enumerate(seq.tokens):
                    see([a.id for a in t.top], f"{where}[{k}].top_logprobs")
    return VocabReport(n_outside, largest, first_at) if n_outside else None
