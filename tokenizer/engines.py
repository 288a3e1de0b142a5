"""The encoders behind `Arcade100k`: tiktoken (the reference and the fallback) and fastokens.

Both are built from the same validated ranks, pattern and special tokens. fastokens is used only
after it has reproduced tiktoken's ids, on every encoding path, for `SELF_CHECK_TEXTS`: strings
chosen where a second implementation of the pattern or of BPE is most likely to part from tiktoken.
Decoding always stays on tiktoken.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, TypeVar

import numpy as np
import tiktoken

EngineChoice = Literal["auto", "tiktoken", "fastokens"]
ENGINE_CHOICES: tuple[str, ...] = ("auto", "tiktoken", "fastokens")
# fastokens sizes its one process-wide encoding pool from this variable, once, at the first parallel
# encode (the self-check at load is one): default every core, at most 32.
THREADS_ENV = "FASTOKENS_BPE_THREADS"

_T = TypeVar("_T")


class TokenizerEngineError(RuntimeError):
    """An engine asked for by name that cannot be used: not installed, or not tiktoken's ids."""


class Engine(Protocol):
    name: str
    version: str

    def encode_ordinary(self, text: str) -> list[int]: ...

    def encode_ordinary_flat(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]: ...

    def encode(self, text: str, allowed_special: frozenset[str]) -> list[int]: ...

    def encode_batch(self, texts: list[str], num_threads: int) -> list[list[int]]: ...


def repair_surrogates(text: str) -> str:
    """What tiktoken encodes in place of a str that is not valid UTF-8: surrogate pairs joined into
    their character, lone surrogates replaced by U+FFFD. Both engines repair so, hence agree."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _utf8_safe(encode: Callable[[str], _T], text: str) -> _T:
    try:
        return encode(text)
    except UnicodeEncodeError:
        return encode(repair_surrogates(text))


class TiktokenEngine:
    """tiktoken's Rust BPE: the reference that every other engine is checked against."""

    name = "tiktoken"

    def __init__(self, encoding: tiktoken.Encoding):
        self.encoding = encoding
        self.version = importlib.metadata.version("tiktoken")

    def encode_ordinary(self, text: str) -> list[int]:
        return self.encoding.encode_ordinary(text)

    def encode_ordinary_flat(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        # encode_to_numpy, unlike encode_ordinary, raises on surrogates: repair them the same way.
        return flat([_utf8_safe(self._encode_to_numpy, text).view(np.int32) for text in texts])

    def _encode_to_numpy(self, text: str) -> np.ndarray:
        return self.encoding.encode_to_numpy(text, allowed_special=set(), disallowed_special=())

    def encode(self, text: str, allowed_special: frozenset[str]) -> list[int]:
        return self.encoding.encode(text, allowed_special=allowed_special, disallowed_special=())

    def encode_batch(self, texts: list[str], num_threads: int) -> list[list[int]]:
        return self.encoding.encode_ordinary_batch(texts, num_threads=num_threads)


class FastokensEngine:
    """fastokens' Rust pre-tokenizer and BPE, memoized per pretoken: about ten times
    tiktoken's encode_ordinary_batch on one thread (374 MB of Python sources and licenses).

    Threads: fastokens encodes on one process-wide pool that it sizes once, at the first parallel
    encode, from FASTOKENS_BPE_THREADS (default: every core, at most 32), and it splits a long
    single text across that pool too. So `num_threads` does not apply here: call `limit_threads`
    before the first load to bound the threads.

    Memory: fastokens' caches are bounded, and they belong to its threads, not to an instance.
    Each encoding thread keeps a pretoken -> ids table that doubles up to 2**21 entries (about
    64 MiB) and is cleared past that, and a copy of its previous input; one fixed-size table is
    shared between threads; the segment and prefix caches stay off unless FASTOKENS_SEGMENT_CACHE /
    FASTOKENS_INPUT_CACHE give them a budget. (Measured on 2 threads: RSS levels off below 400 MiB
    over 12 million distinct pretokens.)
    """

    name = "fastokens"

    def __init__(self, ranks_file: Path, pattern: str, special_tokens: Mapping[str, int]):
        import fastokens  # optional: `auto` falls back to tiktoken without it

        self.tokenizer = fastokens.Tokenizer.from_tiktoken(
            str(ranks_file), pattern=pattern, special_tokens=dict(special_tokens)
        )
        self.version = importlib.metadata.version("fastokens")

    def encode_ordinary(self, text: str) -> list[int]:
        return _utf8_safe(self.tokenizer.encode_ordinary, text).ids

    def encode_ordinary_flat(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        try:
            ids, offsets = self.tokenizer.encode_batch_flat(texts, split_special_tokens=True)
        except UnicodeEncodeError:
            ids, offsets = self.tokenizer.encode_batch_flat(
                list(map(repair_surrogates, texts)), split_special_tokens=True
            )
        # Little-endian uint32 ids, all below 2**31, and uint64 offsets.
        return np.frombuffer(ids, dtype="<i4"), np.frombuffer(offsets, dtype="<u8").astype(np.int64)

    def encode(self, text: str, allowed_special: frozenset[str]) -> list[int]:
        """Each allowed special token is a segment of its own and the text between two of them is
        encoded alone, as tiktoken does; any other special-token text stays plain text."""
        if not allowed_special:
            return self.encode_ordinary(text)
        return _utf8_safe(functools.partial(self._encode_segments, allowed_special), text)

    def _encode_segments(self, allowed_special: frozenset[str], text: str) -> list[int]:
        # split() on one capturing group alternates plain text (even) and an allowed special (odd).
        parts = _special_splitter(allowed_special).split(text)
        return self.tokenizer.encode_segments(
            [(part, i % 2 == 1) for i, part in enumerate(parts) if part]
        ).ids

    def encode_batch(self, texts: list[str], num_threads: int) -> list[list[int]]:
        del num_threads  # the pool is process-wide: see the class docstring
        try:
            encodings = self.tokenizer.encode_batch(texts, split_special_tokens=True)
        except UnicodeEncodeError:
            encodings = self.tokenizer.encode_batch(
                list(map(repair_surrogates, texts)), split_special_tokens=True
            )
        return [e.ids for e in encodings]


def flat(arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """int32 arrays as one array and the int64 offsets where each starts and ends."""
    offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
    np.cumsum([len(a) for a in arrays], out=offsets[1:])
    return (np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int32)), offsets


def split_flat(ids: np.ndarray, offsets: np.ndarray) -> list[list[int]]:
    """The ids of each text of `encode_ordinary_flat`, as lists."""
    return [ids[start:end].tolist() for start, end in zip(offsets[:-1], offsets[1:], strict=True)]


def limit_threads(n: int) -> None:
    """Bound fastokens' encoding pool to `n` threads in this process, so that N processes sharing a
    machine (Ray workers, say) do not each start a thread per core. It must run before the process
    first loads the fastokens engine: the pool is sized once and kept."""
    os.environ[THREADS_ENV] = str(n)


@functools.lru_cache(maxsize=64)
def _special_splitter(allowed_special: frozenset[str]) -> re.Pattern[str]:
    """A regex splitting text around the allowed special tokens; callers use few distinct sets."""
    # No special token is a prefix of another, so the order of the alternatives is immaterial.
    return re.compile("(" + "|".join(map(re.escape, sorted(allowed_special))) + ")")


_SHORT_SELF_CHECK_TEXTS: tuple[str, ...] = (
    "",
    "0123456789 3.14159 1e-5 $1,299.99 v2.10.3 ２０２４ ٣٤٥ ⅻ ½",
    "日本語のテキストと中文文本，以及한국어 문장。",
    "emoji 😀👍🏽👨\u200d👩\u200d👧\u200d👦 flags 🇩🇪🇫🇷",
    "combining e\u0301\u0301 a\u0308\u0323 \u0301leading mark",
    "Привет, мир! Ελληνικά مرحبا שלום हिन्दी",
    "\r\n    \r\n",
    "trailing spaces   ",
    "  \t\n\n  x  \n \u00a0\u2009\u3000\u2028end",
    "it's THEY'RE we've I'm you'll he'd 'S",
    "def f(x: int) -> int:\n\treturn x ** 2  # square\n\n\n",
    "<|endoftext|> <|im_start|>user<|im_end|> <reponame> <|reg7|> <|extra0|> <|endoftext|<|pause|>>",
    "lone surrogates x\ud800y \udfff and a pair \ud83d\ude00",
)
# Past 64 KiB fastokens splits one text across threads: a text of 70 KB checks the seam between two
# chunks (every process that loads the engine runs the check: a longer text only makes loads slower).
SELF_CHECK_TEXTS: tuple[str, ...] = (*_SHORT_SELF_CHECK_TEXTS, "".join(_SHORT_SELF_CHECK_TEXTS) * 120)


@dataclass(frozen=True)
class Expected:
    """The reference ids of one text: as data (no specials) and as a prompt (every special)."""

    text: str
    ordinary: list[int]
    with_specials: list[int]


def expectations(reference: Engine, specials: frozenset[str]) -> list[Expected]:
    """What a candidate engine must reproduce: the reference's ids for `SELF_CHECK_TEXTS`."""
    return [
        Expected(text, reference.encode_ordinary(text), reference.encode(text, specials))
        for text in SELF_CHECK_TEXTS
    ]


def self_check(candidate: Engine, expected: Sequence[Expected], specials: frozenset[str]) -> str | None:
    """None if `candidate` gives the expected ids on every encoding path, else the first difference
    or the error it raised."""
    try:
        return _first_difference(candidate, expected, specials)
    except Exception as e:  # an engine that raises on a probe is as unusable as one that differs
        return f"it raises {e!r}"


def _first_difference(
    candidate: Engine, expected: Sequence[Expected], specials: frozenset[str]
) -> str | None:
    for case in expected:
        got = {
            "encode_ordinary": (candidate.encode_ordinary(case.text), case.ordinary),
            "encode(allowed_special='all')": (candidate.encode(case.text, specials), case.with_specials),
        }
        for path, (ids, want) in got.items():
            if ids != want:
                return f"its {path} of {case.text[:30]!r} gives {ids[:8]}..., tiktoken {want[:8]}..."
    texts, want = [c.text for c in expected], [c.ordinary for c in expected]
    if candidate.encode_batch(texts, 2) != want:
        return "its encode_batch differs from tiktoken's encode_ordinary"
    if split_flat(*candidate.encode_ordinary_flat(texts)) != want:
        return "its encode_ordinary_flat differs from tiktoken's encode_ordinary"
    return None


def select_engine(
    choice: str, reference: TiktokenEngine, build_fastokens: Callable[[], Engine], specials: frozenset[str]
) -> Engine:
    """The engine `choice` names; for "auto", fastokens if it loads and passes the self-check, else
    the reference with one warning saying why."""
    if choice not in ENGINE_CHOICES:
        raise ValueError(f"engine must be one of {ENGINE_CHOICES}, not {choice!r}")
    if choice == "tiktoken":
        return reference
    try:
        candidate = build_fastokens()
    except ImportError as e:
        reason = f"fastokens is not installed ({e})"
    except Exception as e:  # any failure of the optional engine means the reference is used
        reason = f"fastokens cannot load the vocabulary ({e!r})"
    else:
        reason = self_check(candidate, expectations(reference, specials), specials)
        if reason is None:
            return candidate
        reason = f"fastokens {candidate.version} failed its self-check: {reason}"
    if choice == "fastokens":
        raise TokenizerEngineError(f"engine='fastokens' cannot be used: {reason}")
    warnings.warn(f"tokenizer: encoding with tiktoken: {reason}", RuntimeWarning, stacklevel=1)
    return reference
