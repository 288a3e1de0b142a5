"""Request bodies as OpenAI's legacy completions API defines them, and its error shape."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictInt,
    StrictStr,
    Tag,
    field_validator,
)
from pydantic_core import PydanticCustomError

MAX_STOP = 16  # OpenAI allows 4; lm-eval's generate tasks may send more
# Characters per stop sequence. Every step checks whether the text ends in the start of each stop
# string, which costs the square of its length: at 100,000 characters, seconds per token for everyone.
MAX_STOP_CHARS = 256
INVALID_UNICODE = "invalid_unicode"  # the pydantic error type of text that has no UTF-8 form


def _utf8_text(text: str) -> str:
    """`text`, if it has a UTF-8 form. JSON's `\\udfff` escape decodes to a lone surrogate, which has
    none: accepted, it would fail only when echoed or streamed back, after the response has begun."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise PydanticCustomError(
            INVALID_UNICODE,
            f"not valid Unicode: character {e.start} is a lone surrogate (U+{ord(text[e.start]):04X}), "
            "which has no UTF-8 encoding; send characters outside the BMP as surrogate pairs or UTF-8",
        ) from None
    return text


# Every string a request carries: a string that is valid Unicode, so that it can be sent back.
Text = Annotated[StrictStr, AfterValidator(_utf8_text)]


def _prompt_form(prompt: Any) -> str:
    """Which form of prompt this is, told by its first element, so that only that form is validated:
    trying each form in turn on a list of millions of elements holds the event loop for seconds. Any
    other value is validated as token ids, which reports what is wrong with it."""
    if isinstance(prompt, str):
        return "text"
    first = prompt[0] if isinstance(prompt, list) and prompt else None
    return "texts" if isinstance(first, str) else "id lists" if isinstance(first, list) else "ids"


# One prompt, or several: text, token ids, a list of texts, or a list of token-id lists.
Prompt = Annotated[
    Annotated[Text, Tag("text")]
    | Annotated[list[Text], Tag("texts")]
    | Annotated[list[StrictInt], Tag("ids")]
    | Annotated[list[list[StrictInt]], Tag("id lists")],
    Discriminator(_prompt_form),
]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamOptions(Request):
    include_usage: bool = False


class CompletionRequest(Request):
    model: Text
    prompt: Prompt
    max_tokens: int | None = Field(16, ge=0)  # None: up to the end of the context
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(-1, ge=-1, le=2**31)  # -1 or 0: off (vLLM's convention)
    n: int = Field(1, ge=1)
    stop: Text | list[Text] | None = Field(None, validate_default=True)  # becomes a list
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)
    logprobs: int | None = Field(None, ge=0)
    echo: bool = False
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: Text | None = None  # accepted for compatibility; identifies nothing here

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, stop: str | list[str] | None) -> list[str]:
        stops = [stop] if isinstance(stop, str) else (stop or [])
        if len(stops) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop sequences")
        if any(s == "" for s in stops):
            raise ValueError("a stop sequence cannot be empty")
        if any(len(s) > MAX_STOP_CHARS for s in stops):
            raise ValueError(f"a stop sequence can be at most {MAX_STOP_CHARS} characters")
        return stops


class TokenizeRequest(Request):
    prompt: Text
    model: Text | None = None


class DetokenizeRequest(Request):
    tokens: list[StrictInt]
    model: Text | None = None


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
