"""The HTTP app: OpenAI's /v1/completions and /v1/models, plus /health, /metrics, /tokenize, /detokenize.

Request handlers only validate, tokenize and translate (`serving.completions` shapes a completion); the
engine's worker thread does all model work.
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from serving.completions import Completion, collect_while_connected
from serving.engine import Engine
from serving.errors import add_error_handlers
from serving.middleware import Gate
from serving.protocol import APIError, CompletionRequest, DetokenizeRequest, TokenizeRequest
from serving.text import token_str
from serving.validation import check_model, check_token_ids, encode

__all__ = ["ROUTES", "create_app"]

ROUTES = ("/v1/completions", "/v1/models", "/health", "/metrics", "/tokenize", "/detokenize")


def create_app(engine: Engine, model_name: str, api_key: str | None = None) -> FastAPI:
    """The server's app over `engine`, answering to `model_name`; with `api_key`, /v1/* requires it."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine.start()  # loads the model in the worker thread; /health answers 503 until it is done
        yield
        engine.stop()

    app = FastAPI(title="stablelm2-repro serving", lifespan=lifespan)
    app.add_middleware(Gate, metrics=engine.metrics, api_key=api_key, routes=ROUTES)
    add_error_handlers(app)
    tok = functools.lru_cache(maxsize=1 << 17)(functools.partial(token_str, engine.enc))
    created = int(time.time())

    @app.get("/health")
    async def health() -> JSONResponse:
        if engine.error is not None:
            return JSONResponse({"status": "error", "error": engine.error}, status_code=503)
        if not engine.ready:
            return JSONResponse({"status": "loading"}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(engine.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        card = {
            "id": model_name,
            "object": "model",
            "created": created,
            "owned_by": "stablelm2-repro",
            "max_model_len": engine.max_model_len,
        }
        return {"object": "list", "data": [card]}

    @app.post("/tokenize")
    async def tokenize(req: TokenizeRequest) -> dict[str, Any]:
        check_model(req.model, model_name)
        tokens = encode(engine, req.prompt)
        return {"tokens": tokens, "count": len(tokens), "max_model_len": engine.max_model_len}

    @app.post("/detokenize")
    async def detokenize(req: DetokenizeRequest) -> dict[str, Any]:
        check_model(req.model, model_name)
        check_token_ids(engine, req.tokens, "tokens")
        return {"prompt": engine.enc.decode(req.tokens)}

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest, http: Request) -> Response:
        if not engine.ready:
            raise APIError(
                503, engine.error or "the model is still loading", type="server_error", code="not_ready"
            )
        check_model(req.model, model_name)
        completion = Completion(engine, req, model_name, tok)
        completion.submit()
        if req.stream:
            return StreamingResponse(completion.stream(), media_type="text/event-stream")
        return await collect_while_connected(completion, http)

    return app
