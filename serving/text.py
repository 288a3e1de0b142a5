"""Tokens as OpenAI's logprobs spell them: each token's text, and its offset in the decoded text."""

from __future__ import annotations

import codecs
from collections.abc import Sequence

from tokenizer import Arcade100k


def token_str(enc: Arcade100k, token_id: int) -> str:
    """A token as OpenAI spells it in logprobs: its text, or `bytes:\\xNN...` when it is not whole UTF-8."""
    raw = enc.decode_bytes([token_id])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in raw)


def text_offsets(enc: Arcade100k, token_ids: Sequence[int], start: int = 0) -> list[int]:
    """Character offset of each token in the decoded text, counted from `start`."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    offsets, at = [], start
    for token_id in token_ids:
        offsets.append(at)
        at += len(decoder.decode(enc.decode_bytes([token_id])))
    return offsets
