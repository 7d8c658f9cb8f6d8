"""
A threaded forward proxy on 127.0.0.1 that records everything it sees.

It tunnels ``CONNECT host:port`` and forwards plain absolute-URI requests
(``GET http://host:port/path``), and keeps every byte that crossed it, in both directions, so a
test can assert what a proxy operator could read: for a TLS tunnel, only the ``CONNECT`` head in
clear and ciphertext after it. It only ever connects to loopback addresses.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import selectors
import socket
import threading
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pytest

LOOPBACK = "127.0.0.1"
_CHUNK = 65536


@dataclass(frozen=True)
class ProxiedRequest:
    """The head of one request the proxy received: ``CONNECT`` or an absolute-URI request."""

    method: str
    target: str
    headers: dict[str, str]


@dataclass
class ForwardProxy:
    """
    A forward proxy for tests.

    :param refuse_connect: Answer every ``CONNECT`` with this status (e.g. 403) instead of
        tunnelling; ``None`` tunnels.
    """

    refuse_connect: int | None = None
    requests: list[ProxiedRequest] = field(default_factory=list)
    seen: bytearray = field(default_factory=bytearray, repr=False)
    errors: list[BaseException] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._listener = socket.create_server((LOOPBACK, 0))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._acceptor = threading.Thread(target=self._accept_loop, name="proxy-acceptor", daemon=True)

    @property
    def url(self) -> str:
        """The proxy URL to put in ``HTTPS_PROXY`` or the connection's ``proxy`` extra."""
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def connects(self) -> int:
        """``CONNECT`` requests received."""
        with self._lock:
            return sum(1 for request in self.requests if request.method == "CONNECT")

    @property
    def forwarded(self) -> int:
        """Plain (absolute-URI) requests received."""
        with self._lock:
            return sum(1 for request in self.requests if request.method != "CONNECT")

    def saw(self, needle: bytes) -> bool:
        """Whether ``needle`` crossed the proxy in any direction, in clear."""
        with self._lock:
            return needle in self.seen

    # -- plumbing --------------------------------------------------------------------------

    def _record(self, data: bytes) -> None:
        with self._lock:
            self.seen.extend(data)

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(10)
            self._track(client)
            thread = threading.Thread(target=self._serve, args=(client,), name="proxy-conn", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _read_head(self, client: socket.socket) -> tuple[bytes, bytes]:
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            data = client.recv(_CHUNK)
            if not data:
                raise ConnectionAbortedError("client closed before a request head")
            self._record(data)
            buffer += data
        head, rest = buffer.split(b"\r\n\r\n", 1)
        return head, rest

    def _upstream(self, host: str, port: int) -> socket.socket:
        address = LOOPBACK if host == "localhost" else host
        if not ipaddress.ip_address(address).is_loopback:
            raise PermissionError(f"the test proxy only reaches loopback, not {host!r}")
        upstream = socket.create_connection((address, port), timeout=10)
        self._track(upstream)
        return upstream

    def _serve(self, client: socket.socket) -> None:
        try:
            head, rest = self._read_head(client)
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            method, target, _version = request_line.split(" ", 2)
            headers = {}
            for line in header_lines:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            with self._lock:
                self.requests.append(ProxiedRequest(method, target, headers))
            if method == "CONNECT":
                self._tunnel(client, target, rest)
            else:
                self._forward(client, method, target, header_lines, rest)
        except (OSError, ValueError):
            pass
        except BaseException as error:  # surfaced by the tests through .errors
            self.errors.append(error)
        finally:
            with contextlib.suppress(OSError):
                client.close()

    def _answer(self, client: socket.socket, status: int, reason: str) -> None:
        data = f"HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
        self._record(data)
        client.sendall(data)

    def _tunnel(self, client: socket.socket, target: str, rest: bytes) -> None:
        if self.refuse_connect is not None:
            self._answer(client, self.refuse_connect, "Refused by the test proxy")
            return
        host, _, port = target.rpartition(":")
        try:
            upstream = self._upstream(host.strip("[]"), int(port))
        except (OSError, ValueError):
            self._answer(client, 502, "Bad Gateway")
            return
        established = b"HTTP/1.1 200 Connection established\r\n\r\n"
        self._record(established)
        client.sendall(established)
        if rest:
            upstream.sendall(rest)
        self._pipe(client, upstream)

    def _forward(
        self, client: socket.socket, method: str, target: str, header_lines: list[str], rest: bytes
    ) -> None:
        parts = urlsplit(target)
        if parts.scheme != "http" or not parts.hostname:
            self._answer(client, 400, "Bad Request")
            return
        try:
            upstream = self._upstream(parts.hostname, parts.port or 80)
        except (OSError, ValueError):
            self._answer(client, 502, "Bad Gateway")
            return
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        kept = [line for line in header_lines if not line.lower().startswith(("connection:", "proxy-"))]
        head = "\r\n".join([f"{method} {path} HTTP/1.1", *kept, "Connection: close"]) + "\r\n\r\n"
        upstream.sendall(head.encode("latin-1") + rest)
        self._pipe(client, upstream)

    def _pipe(self, client: socket.socket, upstream: socket.socket) -> None:
        """Relay both ways until either side closes; record every byte."""
        selector = selectors.DefaultSelector()
        selector.register(client, selectors.EVENT_READ, upstream)
        selector.register(upstream, selectors.EVENT_READ, client)
        try:
            while not self._stopping.is_set():
                for key, _ in selector.select(timeout=0.1):
                    source: socket.socket = key.fileobj  # type: ignore[assignment]
                    try:
                        data = source.recv(_CHUNK)
                    except OSError:
                        data = b""
                    if not data:
                        return
                    self._record(data)
                    key.data.sendall(data)
        finally:
            selector.close()
            with contextlib.suppress(OSError):
                upstream.close()

    def __enter__(self) -> ForwardProxy:
        self._acceptor.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopping.set()
        self._acceptor.join(5)
        self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()
        for thread in self._threads:
            thread.join(5)


PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


def clear_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    Remove every proxy variable, in either case, for the rest of the test.

    Tests then set exactly the ones they mean; nothing leaks in from the machine's environment.
    """
    for name in list(os.environ):
        if name.lower() in PROXY_VARIABLES:
            monkeypatch.delenv(name)
