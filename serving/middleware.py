"""The middleware in front of every route: the API key check, request counts and latency (`Gate`), and
the request-body size limit (`BodyLimit`)."""

from __future__ import annotations

import hmac
import time
from collections import deque
from collections.abc import Collection

from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.metrics import Metrics
from serving.protocol import error_body

__all__ = ["OPEN_PATHS", "BodyLimit", "Gate"]

# What a load balancer or a Prometheus scraper reads without a key; every other path needs it.
OPEN_PATHS = frozenset({"/health", "/metrics"})


class Gate:
    """Counts and times every request, and checks the API key (when one is set) before anything else
    runs, on every path but OPEN_PATHS: /tokenize and /detokenize do as much work per byte as a
    completion's prompt, so they are no more open than /v1/*."""

    def __init__(self, app: ASGIApp, metrics: Metrics, api_key: str | None, routes: Collection[str]):
        self.app = app
        self.metrics = metrics
        self.api_key = api_key
        self.routes = routes  # metrics label these by path, anything else as "other"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = scope["path"] if scope["path"] in self.routes else "other"
        status, started = 500, time.perf_counter()

        async def observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if scope["path"] not in OPEN_PATHS and not self._authorized(scope):
                body = error_body(
                    "Incorrect or missing API key (send `Authorization: Bearer KEY`)", code="invalid_api_key"
                )
                await JSONResponse(body, status_code=401)(scope, receive, observed)
            else:
                await self.app(scope, receive, observed)
        finally:
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.request_latency.labels(route).observe(time.perf_counter() - started)

    def _authorized(self, scope: Scope) -> bool:
        if self.api_key is None:
            return True
        scheme, _, key = Headers(scope=scope).get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(key.strip().encode(), self.api_key.encode())


class BodyLimit:
    """Answers 413 to a request body over `max_bytes`: at once when its Content-Length says so, else
    (a chunked body) as soon as the bytes received pass the limit. Either way the rest is never read
    and the connection is closed, so an oversized body costs neither memory nor time on the event loop.
    A body within the limit is read here and handed to the app unchanged."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        too_large = declared.isdigit() and int(declared) > self.max_bytes
        messages = None if too_large else await self._read(receive)
        if messages is None:
            await self._too_large(scope, receive, send)
        else:
            await self.app(scope, _replay(messages, receive), send)

    async def _read(self, receive: Receive) -> list[Message] | None:
        """The body's messages, up to the client's last chunk (or its disconnect); None past the limit."""
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                return None
            if message["type"] != "http.request" or not message.get("more_body", False):
                return messages

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = error_body(
            f"The request body is over this server's limit of {self.max_bytes} bytes (max_body_bytes).",
            code="request_too_large",
        )
        await JSONResponse(body, status_code=413, headers={"Connection": "close"})(scope, receive, send)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A `receive` that gives `messages` again, then whatever the client sends next (its disconnect)."""
    pending = deque(messages)

    async def replayed() -> Message:
        return pending.popleft() if pending else await receive()

    return replayed
