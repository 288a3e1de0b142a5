"""/v1/chat/completions: a request's messages rendered with the served export's own chat template
(`ChatTemplate`), and its choices shaped as OpenAI's chat completion or stream of chunks
(`ChatCompletion`, on `serving.completions`' machinery).

The template is the one the export ships (`chat_template` in its tokenizer_config.json, which
`tokenizer.hf.export_hf` writes), applied by transformers with the export's own tokenizer: a fine-tuned
model with another template is prompted as it was trained.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
from starlette.concurrency import run_in_threadpool
from transformers import PreTrainedTokenizerFast

from serving.batcher import Batcher, Output
from serving.completions import Choice, Generation
from serving.protocol import APIError, ChatCompletionRequest, ChatMessage
from serving.request_checks import check_length, check_limits
from serving.sampling import TokenLogprob
from tokenizer.hf import TOKENIZER_CONFIG

__all__ = ["ChatCompletion", "ChatTemplate"]

log = logging.getLogger(__name__)

PART_SEPARATOR = "\n"  # between the text parts of one message's content, as vLLM joins them
NO_TEMPLATE = (
    "This model has no chat template (`chat_template` in its export's tokenizer_config.json), so its "
    "messages cannot be formatted; send a prompt you have formatted yourself to /v1/completions."
)


class ChatTemplate:
    """An export's chat template and tokenizer: messages to the token ids of the prompt for a reply."""

    def __init__(self, hf: PreTrainedTokenizerFast):
        self._hf = hf
        # Encoding with sanitize_control_tokens switches the shared tokenizer in and out of treating
        # special-token text as plain text, piece by piece; another request encoding in between would
        # run in the wrong mode.
        self._lock = threading.Lock()

    @classmethod
    def load(cls, folder: Path) -> ChatTemplate | None:
        """The export's template; None, logged, when it has none or its tokenizer does not load."""
        if not (folder / TOKENIZER_CONFIG).is_file():
            log.info("%s has no %s: chat completions will be refused", folder, TOKENIZER_CONFIG)
            return None
        try:
            hf = PreTrainedTokenizerFast.from_pretrained(folder)
        except Exception as e:  # whatever transformers or tokenizers reject: completions still serve
            log.warning("cannot load the tokenizer of %s (%s): chat completions will be refused", folder, e)
            return None
        if hf.chat_template is None:
            log.info("%s has no chat template: chat completions will be refused", folder)
            return None
        return cls(hf)

    def encode(self, messages: list[dict[str, str]]) -> list[int]:
        """The messages, then the start of the assistant's reply, as token ids. Special-token text inside a
        message is encoded as plain text (transformers' `sanitize_control_tokens`): only the template's
        own special tokens become special ids, so no message can smuggle in an end of text."""
        with self._lock:
            return self._hf.apply_chat_template(
                messages,
                add_generation_prompt=True,
                tokenize=True,
                return_dict=False,
                sanitize_control_tokens=True,
            )


class ChatCompletion(Generation):
    """A chat completion request: its messages rendered and checked by `create`, its choices shaped as
    assistant messages, with OpenAI's chat logprobs."""

    OBJECT = "chat.completion"
    CHUNK_OBJECT = "chat.completion.chunk"
    ID_PREFIX = "chatcmpl-"

    @classmethod
    async def create(
        cls,
        batcher: Batcher,
        req: ChatCompletionRequest,
        model_name: str,
        tok: Callable[[int], str],
        template: ChatTemplate | None,
    ) -> ChatCompletion:
        """The request checked and its messages encoded in a worker thread, as a completion's prompts are."""
        if template is None:
            raise APIError(400, NO_TEMPLATE, param="messages", code="chat_template_missing")
        prompt = await run_in_threadpool(_checked_prompt, batcher, template, req)
        return cls(batcher, req, model_name, tok, [prompt])

    def _choice_json(self, choice: Choice) -> dict[str, Any]:
        return {
            "index": choice.index,
            "message": {"role": "assistant", "content": choice.text},
            "logprobs": self._logprobs_json(choice.logprobs),
            "finish_reason": choice.finish_reason,
        }

    def _delta_json(self, choice: Choice, out: Output) -> dict[str, Any]:
        # The role comes once, with a choice's first chunk.
        delta = {"content": out.text} if choice.started else {"role": "assistant", "content": out.text}
        choice.started = True
        return {
            "index": choice.index,
            "delta": delta,
            "logprobs": self._logprobs_json(out.logprobs or []),
            "finish_reason": out.finish_reason,
        }

    def _logprobs_json(self, entries: list[TokenLogprob]) -> dict[str, Any] | None:
        if self.req.alternatives is None:
            return None
        content = [
            self._token_json(e.token_id, e.logprob)
            | {"top_logprobs": [self._token_json(token_id, logprob) for token_id, logprob in e.top]}
            for e in entries
        ]
        return {"content": content}

    def _token_json(self, token_id: int, logprob: float) -> dict[str, Any]:
        raw = self.batcher.enc.decode_bytes([token_id])
        return {"token": self.tok(token_id), "logprob": logprob, "bytes": list(raw)}


def _checked_prompt(batcher: Batcher, template: ChatTemplate, req: ChatCompletionRequest) -> list[int]:
    """The messages as the prompt's token ids, once the request's limits and the prompt's length are
    checked; an APIError names the first problem."""
    check_limits(batcher.config, req, 1)
    try:
        ids = template.encode([_template_message(m) for m in req.messages])
    except jinja2.TemplateError as e:  # the template's own raise_exception, or a variable it lacks
        raise APIError(
            400,
            f"The chat template cannot format these messages: {e}",
            param="messages",
            code="invalid_value",
        ) from None
    if not ids:
        raise APIError(400, "the chat template formats these messages as nothing", param="messages")
    check_length(batcher.max_model_len, len(ids), req, prompt_param="messages")
    return ids


def _template_message(message: ChatMessage) -> dict[str, str]:
    """A message as chat templates read it: content as one string (apply_chat_template drops a null name)."""
    content = message.content
    if not isinstance(content, str):
        content = PART_SEPARATOR.join(part.text for part in content)
    return {"role": message.role, "content": content, "name": message.name}
