"""The HTTP app: OpenAI's /v1/completions, /v1/chat/completions and /v1/models, plus /health, /metrics,
/tokenize, /detokenize.

Request handlers only validate, tokenize and translate (`serving.completions` shapes a completion,
`serving.chat` a chat completion); the batcher's worker thread does all model work. Work that grows with
the size of a request (tokenizing, decoding, rendering large bodies) runs in worker threads, so the event
loop always answers /health.
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from serving.batcher import Batcher
from serving.chat import ChatCompletion, ChatTemplate
from serving.completions import Completion, Generation, collect_while_connected
from serving.errors import add_error_handlers
from serving.middleware import BodyLimit, Gate
from serving.protocol import (
    APIError,
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    TokenizeRequest,
)
from serving.request_checks import check_model, check_token_ids, encode
from serving.text import token_str

__all__ = ["ROUTES", "create_app"]

ROUTES = (
    "/v1/completions",
    "/v1/chat/completions",
    "/v1/models",
    "/health",
    "/metrics",
    "/tokenize",
    "/detokenize",
)


def create_app(batcher: Batcher, model_name: str, api_key: str | None = None) -> FastAPI:
    """The server's app over `batcher`, answering to `model_name`; with `api_key`, every route but /health
    and /metrics requires it. Chat completions use the chat template of the export `batcher` serves, read
    now: a checkpoint's temporary export is gone once the model is loaded."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()  # loads the model in the worker thread; /health answers 503 until it is done
        yield
        batcher.stop()

    app = FastAPI(title="stablelm2-repro serving", lifespan=lifespan)
    # The last added runs first: the key is checked before any of the body is read.
    config = batcher.config
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes, timeout=config.body_timeout_s)
    app.add_middleware(Gate, metrics=batcher.metrics, api_key=api_key, routes=ROUTES)
    add_error_handlers(app)
    tok = functools.lru_cache(maxsize=1 << 17)(functools.partial(token_str, batcher.enc))
    created = int(time.time())
    template = ChatTemplate.load(batcher.folder)

    @app.get("/health")
    async def health() -> JSONResponse:
        if batcher.error is not None:
            return JSONResponse({"status": "error", "error": batcher.error}, status_code=503)
        if not batcher.ready:
            return JSONResponse({"status": "loading"}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(batcher.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        card = {
            "id": model_name,
            "object": "model",
            "created": created,
            "owned_by": "stablelm2-repro",
            "max_model_len": batcher.max_model_len,
            "dtype": batcher.dtype_name,
        }
        return {"object": "list", "data": [card]}

    @app.post("/tokenize")
    async def tokenize(req: TokenizeRequest) -> JSONResponse:
        check_model(req.model, model_name)
        return await run_in_threadpool(_tokenized, batcher, req.prompt)

    @app.post("/detokenize")
    async def detokenize(req: DetokenizeRequest) -> JSONResponse:
        check_model(req.model, model_name)
        return await run_in_threadpool(_detokenized, batcher, req.tokens)

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest, http: Request) -> Response:
        _check_ready(batcher)
        check_model(req.model, model_name)
        return await _answer(await Completion.create(batcher, req, model_name, tok), http)

    @app.post("/v1/chat/completions")
    async def chat_completions(req: ChatCompletionRequest, http: Request) -> Response:
        _check_ready(batcher)
        check_model(req.model, model_name)
        return await _answer(await ChatCompletion.create(batcher, req, model_name, tok, template), http)

    return app


def _check_ready(batcher: Batcher) -> None:
    if not batcher.ready:
        raise APIError(
            503, batcher.error or "the model is still loading", type="server_error", code="not_ready"
        )


async def _answer(generation: Generation, http: Request) -> Response:
    """Run the request's choices: a stream of events if it asked for one, else one JSON body."""
    generation.submit()
    if generation.req.stream:
        return StreamingResponse(generation.stream(), media_type="text/event-stream")
    return await collect_while_connected(generation, http)


def _tokenized(batcher: Batcher, text: str) -> JSONResponse:
    """/tokenize's answer, built in a worker thread: megabytes of text are millions of ids to encode
    and render."""
    tokens = encode(batcher, text)
    return JSONResponse({"tokens": tokens, "count": len(tokens), "max_model_len": batcher.max_model_len})


def _detokenized(batcher: Batcher, tokens: list[int]) -> JSONResponse:
    """/detokenize's answer, built in a worker thread for the same reason as `_tokenized`."""
    check_token_ids(batcher, tokens, "tokens")
    return JSONResponse({"prompt": batcher.enc.decode(tokens)})
