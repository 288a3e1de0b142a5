"""One generating request: its choices submitted to the batcher as sequences, and what they generate
answered as OpenAI's response or stream of server-sent events (`Generation`); a completion request's
prompts checked and tokenized, and its choices shaped as text (`Completion`). `serving.chat` shapes a
chat completion's choices as messages on the same machinery.

The batcher's worker thread hands each output back through an asyncio queue per request.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from serving.batcher import Batcher, Output, Sequence
from serving.protocol import APIError, CompletionRequest, GenerationRequest, error_body
from serving.request_checks import check_length, check_limits, check_token_ids, encode
from serving.sampling import SamplingParams, TokenLogprob
from serving.text import text_offsets

__all__ = ["Choice", "Completion", "Generation", "collect_while_connected"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenizedPrompt:
    """A prompt as the batcher takes it (ids) and as `echo` sends it back (text)."""

    ids: list[int]
    text: str


@dataclass
class Choice:
    index: int
    prompt_ids: list[int]
    seq: Sequence | None = None
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob | None] = field(default_factory=list)
    finish_reason: str | None = None
    sent: int = 0  # characters streamed so far
    started: bool = False  # whether its first chunk (which carries the echo, or the role) went out


class Generation:
    """One request's choices, `n` per prompt, run on the batcher and answered as OpenAI's response or
    stream; a subclass shapes each choice (`_choice_json`) and each step of one (`_delta_json`)."""

    OBJECT: str  # the response's `object`
    CHUNK_OBJECT: str  # a streamed chunk's
    ID_PREFIX: str

    def __init__(
        self,
        batcher: Batcher,
        req: GenerationRequest,
        model_name: str,
        tok: Callable[[int], str],
        prompts: list[list[int]],
    ):
        self.batcher = batcher
        self.req = req
        self.model_name = model_name
        self.tok = tok
        self.id = f"{self.ID_PREFIX}{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.started = time.perf_counter()
        self.first_token_seen = False
        self.queue: asyncio.Queue[tuple[int, Output]] = asyncio.Queue()
        self.choices = [
            Choice(index=p * req.n + j, prompt_ids=prompt)
            for p, prompt in enumerate(prompts)
            for j in range(req.n)
        ]

    def submit(self) -> None:
        loop = asyncio.get_running_loop()
        req = self.req
        for choice in self.choices:
            params = SamplingParams(
                max_tokens=(
                    req.max_new_tokens
                    if req.max_new_tokens is not None
                    else self.batcher.max_model_len - len(choice.prompt_ids)
                ),
                temperature=req.temperature,
                top_p=req.top_p,
                top_k=max(req.top_k, 0),
                # Choice i of a seeded request uses seed + i, so n > 1 gives n different samples.
                seed=None if req.seed is None else req.seed + choice.index,
                stop=tuple(req.stop),
                logprobs=req.alternatives,
                prompt_logprobs=self._prompt_alternatives(),
            )
            deliver = functools.partial(_deliver, loop, self.queue, choice.index)
            choice.seq = self.batcher.submit(choice.prompt_ids, params, deliver)

    def _prompt_alternatives(self) -> int | None:
        """Logprob alternatives per prompt token; None (the default): no prompt logprobs."""
        return None

    async def _next(self) -> tuple[Choice, Output]:
        index, out = await self.queue.get()
        choice = self.choices[index]
        if out.prompt_logprobs is not None:
            choice.logprobs.extend(out.prompt_logprobs)
        choice.text += out.text
        choice.token_ids += out.token_ids
        choice.logprobs.extend(out.logprobs or [])
        choice.finish_reason = out.finish_reason
        if out.token_ids and not self.first_token_seen:
            self.first_token_seen = True
            self.batcher.metrics.time_to_first_token.observe(time.perf_counter() - self.started)
        if out.finish_reason == "error":
            raise APIError(
                500, "generation failed; see the server log", type="server_error", code="generation_error"
            )
        return choice, out

    def _unfinished(self) -> list[Choice]:
        return [c for c in self.choices if c.finish_reason is None]

    def _cancel_unfinished(self) -> None:
        for choice in self._unfinished():
            choice.seq.cancel()

    async def collect(self) -> JSONResponse:
        try:
            while self._unfinished():
                await self._next()
        finally:
            self._cancel_unfinished()
        # Shaped and rendered in a worker thread: echo with logprobs over many long prompts is a body of
        # megabytes, which on the event loop would hold up every other request.
        return await run_in_threadpool(self._json_response)

    def _json_response(self) -> JSONResponse:
        body = self._response([self._choice_json(c) for c in self.choices]) | {"usage": self._usage()}
        return JSONResponse(body)

    def _choice_json(self, choice: Choice) -> dict[str, Any]:
        raise NotImplementedError

    def _delta_json(self, choice: Choice, out: Output) -> dict[str, Any]:
        """The chunk of `choice` for `out`, its newest step."""
        raise NotImplementedError

    def _usage(self) -> dict[str, int]:
        prompt = sum(len(c.prompt_ids) for c in self.choices[:: self.req.n])
        completion = sum(len(c.token_ids) for c in self.choices)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    async def stream(self) -> AsyncIterator[bytes]:
        """Server-sent events, one per step of each choice, then `data: [DONE]`. A failure after the 200
        has gone out can only be told in the stream: it becomes an `error` event, still followed by
        `[DONE]`, so no client is left reading a stream cut short. If the client goes away, Starlette
        cancels this generator and the `finally` frees the choices' batch slots."""
        try:
            while self._unfinished():
                choice, out = await self._next()
                yield _sse(self._response([self._delta_json(choice, out)], chunk=True))
            if self.req.stream_options is not None and self.req.stream_options.include_usage:
                yield _sse(self._response([], chunk=True) | {"usage": self._usage()})
        except APIError as e:
            yield _sse(e.body)
        except Exception:
            log.exception("streaming a completion failed")
            yield _sse(error_body("streaming failed; see the server log", type="server_error"))
        finally:
            self._cancel_unfinished()
        yield b"data: [DONE]\n\n"

    def _response(self, choices: list[dict[str, Any]], chunk: bool = False) -> dict[str, Any]:
        """OpenAI's response object with `choices`; each chunk of a stream has the same shape."""
        return {
            "id": self.id,
            "object": self.CHUNK_OBJECT if chunk else self.OBJECT,
            "created": self.created,
            "model": self.model_name,
            "choices": choices,
        }


class Completion(Generation):
    """A completion request: its prompts checked and tokenized by `create`, its choices shaped as text."""

    OBJECT = CHUNK_OBJECT = "text_completion"
    ID_PREFIX = "cmpl-"

    def __init__(
        self,
        batcher: Batcher,
        req: CompletionRequest,
        model_name: str,
        tok: Callable[[int], str],
        prompts: list[TokenizedPrompt],
    ):
        super().__init__(batcher, req, model_name, tok, [prompt.ids for prompt in prompts])
        self.prompt_texts = [prompt.text for prompt in prompts]

    @classmethod
    async def create(
        cls, batcher: Batcher, req: CompletionRequest, model_name: str, tok: Callable[[int], str]
    ) -> Completion:
        """The request checked and its prompts tokenized in a worker thread: megabytes of prompt take
        long enough to tokenize that, on the event loop, they would hold up every other request."""
        prompts = await run_in_threadpool(_checked_prompts, batcher, req)
        return cls(batcher, req, model_name, tok, prompts)

    def _prompt_alternatives(self) -> int | None:
        return self.req.logprobs if self.req.echo else None

    def _prompt_text(self, choice: Choice) -> str:
        return self.prompt_texts[choice.index // self.req.n]

    def _choice_json(self, choice: Choice) -> dict[str, Any]:
        echo = self.req.echo
        ids = (choice.prompt_ids if echo else []) + choice.token_ids
        return {
            "index": choice.index,
            "text": (self._prompt_text(choice) if echo else "") + choice.text,
            "logprobs": None if self.req.logprobs is None else self._logprobs_json(ids, choice.logprobs, 0),
            "finish_reason": choice.finish_reason,
        }

    def _logprobs_json(
        self, ids: list[int], entries: list[TokenLogprob | None], offset: int
    ) -> dict[str, Any]:
        return {
            "tokens": [self.tok(t) for t in ids],
            "token_logprobs": [None if e is None else e.logprob for e in entries],
            "top_logprobs": [None if e is None else self._top_json(e) for e in entries],
            "text_offset": text_offsets(self.batcher.enc, ids, offset),
        }

    def _top_json(self, entry: TokenLogprob) -> dict[str, float]:
        # Best first, and the chosen token always present (OpenAI's rule); when two ids spell the same
        # string the better one keeps the key.
        top: dict[str, float] = {}
        for token_id, logprob in (*entry.top, (entry.token_id, entry.logprob)):
            top.setdefault(self.tok(token_id), logprob)
        return top

    def _delta_json(self, choice: Choice, out: Output) -> dict[str, Any]:
        echo = self.req.echo and not choice.started
        choice.started = True
        text = (self._prompt_text(choice) if echo else "") + out.text
        logprobs = None
        if self.req.logprobs is not None:
            ids = (choice.prompt_ids if echo else []) + out.token_ids
            entries = ((out.prompt_logprobs or []) if echo else []) + (out.logprobs or [])
            logprobs = self._logprobs_json(ids, entries, choice.sent)
        choice.sent += len(text)
        return {"index": choice.index, "text": text, "logprobs": logprobs, "finish_reason": out.finish_reason}


async def collect_while_connected(completion: Generation, http: Request) -> Response:
    """The completion as JSON, unless the client hangs up first: then its sequences are cancelled, so
    their batch slots free up now instead of after `max_tokens` tokens that nobody will read."""
    work = asyncio.ensure_future(completion.collect())
    hangup = asyncio.ensure_future(_hangup(http))
    try:
        done, _ = await asyncio.wait((work, hangup), return_when=asyncio.FIRST_COMPLETED)
    finally:
        hangup.cancel()
        work.cancel()  # a no-op once it is done; otherwise collect's `finally` cancels the sequences
    if work in done:
        return work.result()
    # Nobody reads this; 499 (nginx's "client closed request") keeps such requests apart in /metrics.
    return Response(status_code=499)


async def _hangup(http: Request) -> None:
    """Return when the client disconnects. The body is already read, so the server's next message is
    the disconnect (or the end of our response, which comes after this is cancelled)."""
    while (await http.receive())["type"] != "http.disconnect":
        pass


def _deliver(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue, index: int, out: Output) -> None:
    """Called on the batcher's thread: hand `out` to the request's event loop."""
    try:
        loop.call_soon_threadsafe(queue.put_nowait, (index, out))
    except RuntimeError:  # the loop is closed: the server is shutting down and nobody is listening
        pass


def _sse(payload: dict[str, Any]) -> bytes:
    """One event, encoded here rather than by the response, so that an encoding error is raised inside
    `Generation.stream`, which reports it, instead of cutting the stream."""
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()


def _checked_prompts(batcher: Batcher, req: CompletionRequest) -> list[TokenizedPrompt]:
    """The request's prompts as token ids and text, once its limits, each prompt's tokens and each
    prompt's length are checked; an APIError names the first problem. Cheap checks come first, so a
    request over a limit is refused before any of its text is tokenized."""
    prompts = _prompt_list(req.prompt)
    check_limits(batcher.config, req, len(prompts))
    found = []
    for one in prompts:
        if isinstance(one, str):
            prompt = TokenizedPrompt(encode(batcher, one), one)
        else:
            check_token_ids(batcher, one, "prompt")
            prompt = TokenizedPrompt(one, batcher.enc.decode(one))
        if not prompt.ids:
            raise APIError(400, "a prompt must have at least one token", param="prompt", code="invalid_value")
        check_length(batcher.max_model_len, len(prompt.ids), req)
        found.append(prompt)
    return found


def _prompt_list(prompt: str | list[str] | list[int] | list[list[int]]) -> list[str] | list[list[int]]:
    """One prompt (text or token ids) as a list of one; a list of prompts as it is."""
    if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)):
        return [prompt]
    if not prompt:
        raise APIError(400, "prompt is empty", param="prompt", code="invalid_value")
    return prompt
