"""The middleware in front of every route: the API key check, request counts and latency (`Gate`), and
the request body's size and time limits (`BodyLimit`)."""

from __future__ import annotations

import asyncio
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
                # Closed, as the body it never reads may be still coming, slowly or not at all.
                await _closing(401, body)(scope, receive, observed)
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
    (a chunked body) as soon as the bytes received pass the limit. Answers 408 to a body not all received
    `timeout` seconds after its headers, so a client that sends it a byte at a time holds no connection
    for longer. Either way the rest is never read and the connection is closed, so an oversized or slow
    body costs neither memory nor time on the event loop. A body within the limits is read here and
    handed to the app unchanged."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout: float):
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large()(scope, receive, send)
            return
        try:
            async with asyncio.timeout(self.timeout):
                messages = await self._read(receive)
        except TimeoutError:
            await self._too_slow()(scope, receive, send)
            return
        if messages is None:
            await self._too_large()(scope, receive, send)
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

    def _too_large(self) -> JSONResponse:
        message = f"The request body is over this server's limit of {self.max_bytes} bytes (max_body_bytes)."
        return _closing(413, error_body(message, code="request_too_large"))

    def _too_slow(self) -> JSONResponse:
        message = f"The request body did not all arrive within {self.timeout:g} s (body_timeout_s)."
        return _closing(408, error_body(message, code="request_timeout"))


def _closing(status: int, body: dict) -> JSONResponse:
    """An error response after which the connection is closed: the rest of the body is never read."""
    return JSONResponse(body, status_code=status, headers={"Connection": "close"})


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A `receive` that gives `messages` again, then whatever the client sends next (its disconnect)."""
    pending = deque(messages)

    async def replayed() -> Message:
        return pending.popleft() if pending else await receive()

    return replayed
