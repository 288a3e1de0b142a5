"""Arcade100k, the Stable LM 2 tokenizer: the one package every stage imports."""

from tokenizer.core import (
    EOT_ID,
    N_VOCAB,
    NAME,
    PADDED_VOCAB,
    PAT_STR,
    RANKS_FILE,
    SPECIAL_TOKENS,
    Arcade100k,
    TokenizerFileError,
    load,
)
from tokenizer.engines import ENGINE_CHOICES, THREADS_ENV, TokenizerEngineError, limit_threads
from tokenizer.stream import TextStream

__all__ = [
    "Arcade100k",
    "ENGINE_CHOICES",
    "EOT_ID",
    "NAME",
    "N_VOCAB",
    "PADDED_VOCAB",
    "PAT_STR",
    "RANKS_FILE",
    "SPECIAL_TOKENS",
    "THREADS_ENV",
    "TextStream",
    "TokenizerEngineError",
    "TokenizerFileError",
    "limit_threads",
    "load",
]
