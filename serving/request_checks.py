"""Checks of what a request names against the served model: its name, and its prompt's text or token ids."""

from __future__ import annotations

from serving.batcher import Batcher
from serving.protocol import APIError

__all__ = ["check_model", "check_token_ids", "encode"]


def encode(batcher: Batcher, text: str) -> list[int]:
    # Special-token text becomes the special token, as Hugging Face tokenizers (and so lm-eval) do.
    return batcher.enc.encode(text, allowed_special="all")


def check_model(requested: str | None, model_name: str) -> None:
    if requested is not None and requested != model_name:
        raise APIError(
            404,
            f"The model `{requested}` does not exist; this server serves `{model_name}`.",
            param="model",
            code="model_not_found",
        )


def check_token_ids(batcher: Batcher, ids: list[int], param: str) -> None:
    bad = [i for i in ids if not batcher.is_token(i)]
    if bad:
        raise APIError(
            400,
            f"token ids {bad[:5]} are not tokens (valid: 0..{batcher.enc.n_vocab - 1} except unused ids)",
            param=param,
            code="invalid_value",
        )
