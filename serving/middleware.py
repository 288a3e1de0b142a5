"""The middleware in front of every route: the API key check on /v1/*, and request counts and latency."""

from __future__ import annotations

import hmac
import time
from collections.abc import Collection

from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.metrics import Metrics
from serving.protocol import error_body

__all__ = ["Gate"]


class Gate:
    """Counts and times every request, and checks the API key on /v1/* before anything else runs."""

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
            if scope["path"].startswith("/v1/") and not self._authorized(scope):
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
