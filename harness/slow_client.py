"""Slow HTTP clients on raw sockets: requests sent a byte at a time, to see when the server cuts them off
and what it answers, idle connections that send nothing, and /health asked meanwhile."""

from __future__ import annotations

import asyncio
import time

import httpx

__all__ = ["RESET", "completion_head", "health_beside_idle", "health_latencies", "trickle"]

RESET = b"(reset)"  # the answer where the kernel dropped what the server sent


def completion_head(url: str, key: str, body: bytes) -> bytes:
    """The headers of a completion request to `url` for `body`, sent with the API key `key`."""
    host = url.removeprefix("http://").encode()
    return (
        b"POST /v1/completions HTTP/1.1\r\nHost: " + host + b"\r\nAuthorization: Bearer " + key.encode()
        + b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )  # fmt: skip


async def trickle(url: str, head: bytes, tail: bytes, interval: float) -> tuple[float | None, bytes]:
    """Send `head` at once, then `tail` a byte every `interval` s, until the server closes the connection
    or `tail` runs out: the seconds until the server closed it (None: never) and what it answered, RESET
    where a byte sent after the server's close drew a reset that discarded what was received unread."""
    host, port = url.removeprefix("http://").split(":")
    started = time.monotonic()
    reader, writer = await asyncio.open_connection(host, int(port))
    answer = asyncio.create_task(reader.read())  # everything, up to the server's close
    try:
        writer.write(head)
        for byte in tail:
            writer.write(bytes([byte]))
            done, _ = await asyncio.wait({answer}, timeout=interval)
            if done:
                break
        else:
            return None, b""
    except ConnectionError:  # the server closed first; its answer is read, or lost to the reset
        await asyncio.wait({answer})
    finally:
        closed = time.monotonic() - started
        answer.cancel()
        writer.close()
    return closed, RESET if answer.cancelled() or answer.exception() else answer.result()


async def health_latencies(url: str, until: asyncio.Future) -> list[tuple[int, float]]:
    """/health's status and seconds, asked on a new connection every 0.2 s until `until` is done."""
    found = []
    async with httpx.AsyncClient(limits=httpx.Limits(max_keepalive_connections=0), timeout=30) as client:
        while not until.done():
            started = time.monotonic()
            status = (await client.get(f"{url}/health")).status_code
            found.append((status, time.monotonic() - started))
            await asyncio.sleep(0.2)
    return found


async def health_beside_idle(url: str, n_idle: int) -> int:
    """/health's status while `n_idle` other connections are open and have sent nothing."""
    host, port = url.removeprefix("http://").split(":")
    idle = [await asyncio.open_connection(host, int(port)) for _ in range(n_idle)]
    try:
        await asyncio.sleep(0.3)  # the server's loop takes each one in
        async with httpx.AsyncClient(timeout=30) as client:
            return (await client.get(f"{url}/health")).status_code
    finally:
        for _, writer in idle:
            writer.close()
