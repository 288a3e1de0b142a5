"""A TCP proxy in front of an HTTP endpoint (the local S3 server) that drops the connection once, in the
middle of a response: the first response to a GET whose request line names `key` is cut after
`cut_after` bytes, as a reset connection or a dying load balancer would. Everything else passes through.

Clients reach it as they would the endpoint (`AWS_ENDPOINT_URL=proxy.url`); it counts the GETs of `key`
it saw and the responses it cut, so a test can tell that a read was retried.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit

__all__ = ["FlakyProxy", "flaky_proxy"]


class FlakyProxy:
    def __init__(self, upstream: str, key: str, cut_after: int):
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.key, self.cut_after = key.encode(), cut_after
        self.gets = 0  # GET requests whose request line names `key`
        self.cuts = 0  # responses cut short
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def serve(self) -> None:
        """Accept connections until the listener is closed, each proxied in its own threads."""
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._proxy, args=(client,), daemon=True).start()

    def close(self) -> None:
        self._listener.close()

    def _proxy(self, client: socket.socket) -> None:
        upstream = socket.create_connection(self.upstream)
        cut = threading.Event()  # set when the response now coming is to be cut
        threading.Thread(target=self._requests, args=(client, upstream, cut), daemon=True).start()
        sent = 0
        with client, upstream:
            while data := _receive(upstream):
                if cut.is_set():
                    if sent + len(data) >= self.cut_after:
                        client.sendall(data[: self.cut_after - sent])
                        client.shutdown(socket.SHUT_RDWR)
                        return
                    sent += len(data)
                client.sendall(data)

    def _requests(self, client: socket.socket, upstream: socket.socket, cut: threading.Event) -> None:
        """Pass the client's requests on, arming `cut` at the first GET of `key` of all connections."""
        while data := _receive(client):
            first_line = data.split(b"\r\n", 1)[0]
            if first_line.startswith(b"GET ") and self.key in first_line:
                with self._lock:
                    self.gets += 1
                    if self.cuts == 0:
                        self.cuts = 1
                        cut.set()
            with contextlib.suppress(OSError):
                upstream.sendall(data)
        with contextlib.suppress(OSError):
            upstream.shutdown(socket.SHUT_WR)


def _receive(sock: socket.socket) -> bytes:
    """The next bytes from `sock`; empty once it is closed or reset."""
    try:
        return sock.recv(1 << 16)
    except OSError:
        return b""


@contextlib.contextmanager
def flaky_proxy(upstream: str, key: str, cut_after: int) -> Iterator[FlakyProxy]:
    """A running `FlakyProxy` to `upstream` (an http:// URL), stopped on exit."""
    proxy = FlakyProxy(upstream, key, cut_after)
    thread = threading.Thread(target=proxy.serve, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.close()
        thread.join(timeout=5)
