"""The server sheds slow clients: hundreds of connections that send their headers or their body a byte at
a time are closed within the configured timeouts while /health keeps answering at once, and connections
past `max_connections` are answered 503.

A real server on loopback; the slow clients are raw sockets in one asyncio loop, each bounded in time.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import h11
import httpx
import pytest
from conftest import KEY, NAME, started_server
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from harness.slow_client import completion_head, health_beside_idle, health_latencies, trickle
from serving.http_protocol import awaiting_headers

HEADER_TIMEOUT, BODY_TIMEOUT, MAX_CONNECTIONS = 2.0, 3.0, 400
SLACK = 2.0  # scheduling on a busy machine: the server's timers fire late, never early
HEALTH_WITHIN = 1.0  # seconds /health may take while the slow clients trickle


@pytest.fixture(scope="module")
def server(export: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    config = (
        f"served_model_name: {NAME}\ndevice: cpu\ndtype: float32\nheader_timeout_s: {HEADER_TIMEOUT}\n"
        f"body_timeout_s: {BODY_TIMEOUT}\nmax_connections: {MAX_CONNECTIONS}\n"
    )
    with started_server(export, tmp_path_factory.mktemp("server"), config) as url:
        yield url


BODY = json.dumps({"model": NAME, "prompt": "hi", "max_tokens": 1}).encode()


async def _slow_clients(url: str, n_headers: int, n_bodies: int) -> tuple[list, list, list]:
    host = url.removeprefix("http://").encode()
    request_line = b"GET /health HTTP/1.1\r\nHost: " + host + b"\r\nUser-Agent: slow\r\n\r\n"
    # Each slow client's bytes would last well past its timeout: 1 byte/s of headers, 1 byte/2 s of body.
    headers = [trickle(url, b"", request_line, 1.0) for _ in range(n_headers)]
    bodies = [trickle(url, completion_head(url, KEY, BODY), BODY, 2.0) for _ in range(n_bodies)]
    slow = asyncio.ensure_future(asyncio.gather(*headers, *bodies))
    health = await health_latencies(url, slow)
    results = await slow
    return results[:n_headers], results[n_headers:], health


def test_slow_headers_and_bodies_are_cut_off_while_health_answers(server):
    headers, bodies, health = asyncio.run(_slow_clients(server, n_headers=300, n_bodies=3))
    for closed_after, answer in headers:
        assert closed_after is not None, "a client sending its headers slowly was never cut off"
        assert HEADER_TIMEOUT <= closed_after + 0.1 and closed_after < HEADER_TIMEOUT + SLACK
        assert answer.startswith(b"HTTP/1.1 408 ")
    for closed_after, answer in bodies:
        assert closed_after is not None, "a client sending its body slowly was never cut off"
        assert BODY_TIMEOUT <= closed_after + 0.1 and closed_after < BODY_TIMEOUT + SLACK
        status_line, _, rest = answer.partition(b"\r\n")
        assert status_line.startswith(b"HTTP/1.1 408 ")
        assert json.loads(rest.partition(b"\r\n\r\n")[2])["error"]["code"] == "request_timeout"
    assert len(health) >= BODY_TIMEOUT / 0.5
    assert all(status == 200 for status, _ in health), health
    assert max(seconds for _, seconds in health) < HEALTH_WITHIN, health
    assert httpx.get(f"{server}/health").status_code == 200


def test_a_wrong_key_is_answered_at_once_and_its_slow_body_never_read(server):
    closed_after, answer = asyncio.run(trickle(server, completion_head(server, "wrong", BODY), BODY, 2.0))
    assert closed_after is not None and closed_after < SLACK and answer.startswith(b"HTTP/1.1 401 ")


def test_a_request_past_max_connections_is_503_until_idle_ones_are_shed(server):
    assert asyncio.run(health_beside_idle(server, MAX_CONNECTIONS - 1)) == 200
    assert asyncio.run(health_beside_idle(server, MAX_CONNECTIONS)) == 503
    time.sleep(HEADER_TIMEOUT + SLACK)  # the idle ones were closed by their header deadline, if not by us
    assert httpx.get(f"{server}/health").status_code == 200


def test_uvicorn_keeps_its_h11_state_where_awaiting_headers_reads_it():
    """`awaiting_headers` reads uvicorn's undocumented `H11Protocol.conn`: an upgrade that moves it fails
    here, by name, rather than as a server that never cuts off a slow client."""

    async def app(scope, receive, send) -> None:
        raise AssertionError("no request reaches the app here")

    loop = asyncio.new_event_loop()
    try:
        protocol = H11Protocol(config=Config(app), server_state=ServerState(), app_state={}, _loop=loop)
    finally:
        loop.close()
    assert isinstance(protocol.conn, h11.Connection) and awaiting_headers(protocol)
    protocol.conn.receive_data(b"GET /health HTTP/1.1\r\nHost: x\r\n")
    assert protocol.conn.next_event() is h11.NEED_DATA and awaiting_headers(protocol)
    protocol.conn.receive_data(b"\r\n")
    assert isinstance(protocol.conn.next_event(), h11.Request) and not awaiting_headers(protocol)
