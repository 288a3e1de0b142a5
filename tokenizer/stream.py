"""Generated text as it streams, a token at a time: incremental UTF-8 decoding and stop strings."""

from __future__ import annotations

import codecs
from collections.abc import Sequence

from tokenizer.core import Arcade100k

__all__ = ["TextStream"]


class TextStream:
    """The text of one sequence's generated tokens, cut before the first stop string.

    A token can end in the middle of a UTF-8 character, so bytes are decoded incrementally; text that
    could be the start of a stop string is held back until it is known not to be one.
    """

    def __init__(self, enc: Arcade100k, stop: Sequence[str]):
        self._enc = enc
        self._stop = tuple(stop)
        self._longest_stop = max((len(s) for s in self._stop), default=0)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text = ""
        self._sent = 0
        self._stopped = False

    def add(self, token_id: int) -> bool:
        """Append a token; True when this completed a stop string (the text then ends before it)."""
        search_from = max(0, len(self.text) - self._longest_stop + 1)
        self.text += self._decoder.decode(self._enc.decode_bytes([token_id]))
        hits = [i for s in self._stop if (i := self.text.find(s, search_from)) >= 0]
        if hits:
            self.text = self.text[: min(hits)]
            self._stopped = True
        return self._stopped

    def take(self, final: bool) -> str:
        """The text not yet handed out. Before the end, a tail that may begin a stop string is kept."""
        if final:
            if not self._stopped:  # a dangling partial character becomes U+FFFD, as in `decode`
                self.text += self._decoder.decode(b"", final=True)
            end = len(self.text)
        else:
            end = len(self.text) - self._stop_prefix_len()
        chunk = self.text[self._sent : end]
        self._sent = max(self._sent, end)
        return chunk

    def _stop_prefix_len(self) -> int:
        longest = 0
        for s in self._stop:
            for k in range(min(len(s) - 1, len(self.text)), longest, -1):
                if self.text.endswith(s[:k]):
                    longest = k
                    break
        return longest
