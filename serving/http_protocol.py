"""uvicorn's HTTP/1.1 protocol with a deadline on each request's headers.

uvicorn has no header read timeout of its own: a client that opens a connection and sends nothing, or
sends its headers a byte at a time, holds that connection for as long as it likes, and a few hundred such
clients exhaust the server. The body's deadline is `serving.middleware.BodyLimit`'s; the protocol class
goes to uvicorn as its `http=` setting.
"""

from __future__ import annotations

import asyncio
import logging

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["HeaderTimeoutProtocol", "awaiting_headers", "http_protocol"]

log = logging.getLogger(__name__)

# Headers are all a timed-out client has sent, so there is no request for h11 to answer: written as is.
_REQUEST_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class HeaderTimeoutProtocol(H11Protocol):
    """Closes a connection, after a 408, whose request headers are not complete `header_timeout` seconds
    after the connection opened or after the first byte of its next request (uvicorn's keep-alive timeout
    bounds the wait for that byte). Once the headers are in, the deadline is off."""

    header_timeout: float  # set by `http_protocol`

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[arg-type]
        self._transport = transport
        self._deadline: asyncio.TimerHandle | None = None
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if awaiting_headers(self):
            self._arm()
        else:
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._deadline is None:
            self._deadline = asyncio.get_running_loop().call_later(self.header_timeout, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if self._transport.is_closing() or not awaiting_headers(self):
            return
        log.info("closed a connection whose request headers took over %g s", self.header_timeout)
        self._transport.write(_REQUEST_TIMEOUT)  # type: ignore[attr-defined]
        self._transport.close()


def http_protocol(header_timeout: float) -> type[HeaderTimeoutProtocol]:
    """The protocol class for uvicorn's `http=` setting, with headers due within `header_timeout` s."""
    return type("HeaderTimeoutProtocol", (HeaderTimeoutProtocol,), {"header_timeout": header_timeout})


def awaiting_headers(protocol: H11Protocol) -> bool:
    """Whether the connection waits for (the rest of) a request's headers. uvicorn keeps its h11 state
    machine in the undocumented `conn` attribute; tests/test_serving_slow_clients.py fails on an
    upgrade that moves it."""
    return protocol.conn.their_state is h11.IDLE
