"""Request bodies as OpenAI's completions and chat completions APIs define them, and its error shape."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictInt,
    StrictStr,
    Tag,
    ValidationInfo,
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


class GenerationRequest(Request):
    """What a completion and a chat completion request share: the model, and how to sample its choices.
    Each kind says, through the properties below, how many tokens and logprobs it asks for."""

    # The parameter that sets `alternatives`, named in the error when it is over the limit.
    ALTERNATIVES_PARAM: ClassVar[str]

    model: Text
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(-1, ge=-1, le=2**31)  # -1 or 0: off (vLLM's convention)
    n: int = Field(1, ge=1)
    stop: Text | list[Text] | None = Field(None, validate_default=True)  # becomes a list
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)
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

    @property
    def max_new_tokens(self) -> int | None:
        """Tokens to generate at most per choice; None: up to the end of the context."""
        raise NotImplementedError

    @property
    def max_new_tokens_param(self) -> str:
        """The parameter that sets `max_new_tokens`, named in the error when it does not fit."""
        return "max_tokens"

    @property
    def alternatives(self) -> int | None:
        """Logprob alternatives per generated token; None: no logprobs."""
        raise NotImplementedError


class CompletionRequest(GenerationRequest):
    ALTERNATIVES_PARAM = "logprobs"

    prompt: Prompt
    max_tokens: int | None = Field(16, ge=0)  # None: up to the end of the context
    logprobs: int | None = Field(None, ge=0)
    echo: bool = False

    @property
    def max_new_tokens(self) -> int | None:
        return self.max_tokens

    @property
    def alternatives(self) -> int | None:
        return self.logprobs


class TextPart(Request):
    """One part of a message's content; text is the only kind a text model reads."""

    type: Literal["text"]
    text: Text


# A message's content: text, or a list of parts, told apart by type so that an error names one of them.
Content = Annotated[
    Annotated[Text, Tag("text")] | Annotated[list[TextPart], Tag("parts")],
    Discriminator(lambda content: "text" if isinstance(content, str) else "parts"),
]


class ChatMessage(Request):
    role: Text  # which roles there are is the chat template's to say
    content: Content
    name: Text | None = None


class ChatCompletionRequest(GenerationRequest):
    ALTERNATIVES_PARAM = "top_logprobs"

    messages: list[ChatMessage] = Field(min_length=1)
    # OpenAI's newer name for max_tokens, which it keeps for compatibility; the newer one wins.
    max_completion_tokens: int | None = Field(None, ge=1)  # None: up to the end of the context
    max_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0)

    @field_validator("top_logprobs")
    @classmethod
    def _with_logprobs(cls, top_logprobs: int | None, info: ValidationInfo) -> int | None:
        if top_logprobs is not None and not info.data.get("logprobs"):
            raise ValueError("top_logprobs needs logprobs: true")
        return top_logprobs

    @property
    def max_new_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    @property
    def max_new_tokens_param(self) -> str:
        return "max_completion_tokens" if self.max_completion_tokens is not None else "max_tokens"

    @property
    def alternatives(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None


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
