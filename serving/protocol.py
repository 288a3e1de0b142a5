"""Request bodies as OpenAI's legacy completions API defines them, and its error shape."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator

MAX_STOP = 16  # OpenAI allows 4; lm-eval's generate tasks may send more

# One prompt, or several: text, token ids, a list of texts, or a list of token-id lists.
Prompt = StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamOptions(Request):
    include_usage: bool = False


class CompletionRequest(Request):
    model: str
    prompt: Prompt
    max_tokens: int | None = Field(16, ge=0)  # None: up to the end of the context
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(-1, ge=-1, le=2**31)  # -1 or 0: off (vLLM's convention)
    n: int = Field(1, ge=1)
    stop: StrictStr | list[StrictStr] | None = Field(None, validate_default=True)  # becomes a list
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)
    logprobs: int | None = Field(None, ge=0)
    echo: bool = False
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None  # accepted for compatibility; identifies nothing here

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, stop: str | list[str] | None) -> list[str]:
        stops = [stop] if isinstance(stop, str) else (stop or [])
        if len(stops) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop sequences")
        if any(s == "" for s in stops):
            raise ValueError("a stop sequence cannot be empty")
        return stops


class TokenizeRequest(Request):
    prompt: StrictStr
    model: str | None = None


class DetokenizeRequest(Request):
    tokens: list[StrictInt]
    model: str | None = None


class APIError(Exception):
    """An error the client caused (or may retry), answered with OpenAI's error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.body = error_body(message, type=type, param=param, code=code)


def error_body(
    message: str, *, type: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}
