"""Checks of what a request names against the served model and the server's limits: its model name, its
prompt's text or token ids, how many sequences and logprobs it asks for, and whether it fits the context."""

from __future__ import annotations

from serving.batcher import Batcher
from serving.config import ServeConfig
from serving.protocol import APIError, GenerationRequest

__all__ = ["check_length", "check_limits", "check_model", "check_token_ids", "encode"]


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


def check_limits(config: ServeConfig, req: GenerationRequest, n_prompts: int) -> None:
    """Refuses a request for more choices or logprobs than the server gives; cheap, so it runs before
    any of the request's text is tokenized."""
    if req.n > config.max_n:
        raise APIError(400, f"n must be at most {config.max_n}", param="n", code="invalid_value")
    if n_prompts * req.n > config.max_sequences:
        raise APIError(
            400,
            f"This request asks for {n_prompts * req.n} sequences ({n_prompts} prompts x n={req.n}); "
            f"this server runs at most {config.max_sequences} per request. Send fewer prompts, or a "
            "smaller n, per request.",
            param="n" if req.n > 1 else "prompt",
            code="invalid_value",
        )
    if req.alternatives is not None and req.alternatives > config.max_logprobs:
        param = req.ALTERNATIVES_PARAM
        raise APIError(
            400, f"{param} must be at most {config.max_logprobs}", param=param, code="invalid_value"
        )


def check_length(limit: int, n_prompt: int, req: GenerationRequest, prompt_param: str = "prompt") -> None:
    """Refuses a prompt that, with max_tokens more, is longer than the context: a full-context prompt is
    scored with max_tokens 0 (lm-eval's loglikelihood), and max_tokens null fills what is left."""
    if n_prompt > limit:
        raise APIError(
            400,
            f"This model's maximum context length is {limit} tokens; the prompt has {n_prompt}.",
            param=prompt_param,
            code="context_length_exceeded",
        )
    max_tokens, param = req.max_new_tokens, req.max_new_tokens_param
    if max_tokens is not None and n_prompt + max_tokens > limit:
        raise APIError(
            400,
            f"This model's maximum context length is {limit} tokens, however you requested "
            f"{n_prompt + max_tokens} tokens ({n_prompt} in your prompt; {max_tokens} "
            f"for the completion). Please reduce the prompt or {param}.",
            param=param,
            code="context_length_exceeded",
        )
