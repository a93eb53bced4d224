"""Text aligned with tokens: one piece of text per token, whose concatenation is the text.

The engine sends each token's text delta as it streams; a rollout read from a file, a branch's copied prefix or a
scored response has only its tokens and its whole text, and gets its pieces from here.
"""

from __future__ import annotations

import codecs
from typing import Sequence

from explorer.core.types import TokenInfo


def new_decoder():
    return codecs.getincrementaldecoder("utf-8")(errors="replace")


def decode_pieces(tokens: Sequence[TokenInfo], decoder=None) -> list[str]:
    """The text each token completes: a character split across tokens belongs to the token that completes it."""
    decoder = decoder or new_decoder()
    return [decoder.decode(t.bytes) for t in tokens]


def fit_pieces(pieces: Sequence[str], text: str) -> list[str]:
    """Pieces whose concatenation is exactly `text`, following `pieces` (what the token bytes decode to).

    The displayed text is authoritative: it leaves out end-of-generation and control tokens (whose bytes spell
    "<|im_end|>" and the like), may be cut at a stop string, or may differ in leading whitespace.
    """
    joined = "".join(pieces)
    if joined == text:
        return list(pieces)
    if not pieces:
        return []
    # 1. walk the text: a piece found where the text has got to takes its span; one that is not there (a control
    #    token, a trimmed tail) gets nothing
    out: list[str] = []
    at = 0
    for piece in pieces:
        if piece and text.startswith(piece, at):
            out.append(piece)
            at += len(piece)
        else:
            out.append("")
    if at == len(text):
        return out
    # 2. otherwise keep each token's own span length, shifted to where the text sits inside the tokens' text
    shift = max(joined.find(text), 0) if text else 0
    out = []
    pos = -shift
    for piece in pieces:
        start, end = max(pos, 0), max(pos + len(piece), 0)
        out.append(text[min(start, len(text)):min(end, len(text))])
        pos += len(piece)
    taken = sum(len(p) for p in out)
    if taken < len(text):  # the text runs on past what the tokens decode to: the last token carries the rest
        out[-1] += text[taken:]
    return out
