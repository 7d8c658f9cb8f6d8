"""
Raw loopback servers that misbehave on purpose, and count the requests they received.

Each accepted connection runs a *behaviour*: a function of the :class:`Peer` (the connection,
plain or TLS) and the server. TLS goes through memory BIOs rather than ``SSLSocket``, so a
behaviour can still write raw bytes under the TLS layer ("broken TLS" after a good handshake).
Only 127.0.0.1 is ever bound or contacted.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

LOOPBACK = "127.0.0.1"
_CHUNK = 65536


@dataclass(frozen=True)
class ReceivedRequest:
    """One complete HTTP request a server read: line, headers (lower-case names) and body."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes


class PeerClosed(Exception):
    """The client went away before a complete request arrived."""


class Peer:
    """
    One accepted connection.

    :param sock: The accepted TCP socket.
    :param tls: A server context, for a TLS connection; ``None`` for plain TCP.
    """

    def __init__(self, sock: socket.socket, tls: ssl.SSLContext | None) -> None:
        self.sock = sock
        self._buffer = b""
        self._tls: ssl.SSLObject | None = None
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        if tls is not None:
            self._tls = tls.wrap_bio(self._incoming, self._outgoing, server_side=True)
            self._handshake()

    # -- TLS plumbing ----------------------------------------------------------------------

    def _flush(self) -> None:
        data = self._outgoing.read()
        if data:
            self.sock.sendall(data)

    def _feed(self) -> bool:
        data = self.sock.recv(_CHUNK)
        if not data:
            self._incoming.write_eof()
            return False
        self._incoming.write(data)
        return True

    def _handshake(self) -> None:
        assert self._tls is not None
        while True:
            try:
                self._tls.do_handshake()
            except ssl.SSLWantReadError:
                self._flush()
                if not self._feed():
                    raise PeerClosed("EOF during the TLS handshake") from None
            else:
                self._flush()
                return

    # -- bytes -----------------------------------------------------------------------------

    def recv(self) -> bytes:
        """Some application bytes (decrypted for TLS); ``b""`` at end of stream."""
        if self._tls is None:
            return self.sock.recv(_CHUNK)
        while True:
            try:
                data = self._tls.read(_CHUNK)
            except ssl.SSLWantReadError:
                self._flush()
                if not self._feed():
                    return b""
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""
            else:
                self._flush()
                return data

    def send(self, data: bytes) -> None:
        """Application bytes (encrypted for TLS)."""
        if self._tls is None:
            self.sock.sendall(data)
        else:
            self._tls.write(data)
            self._flush()

    def send_raw(self, data: bytes) -> None:
        """Bytes straight onto the socket, under any TLS layer."""
        self.sock.sendall(data)

    def read_request(self) -> ReceivedRequest:
        """
        Read one whole request: head, then a ``Content-Length`` body.

        :raises PeerClosed: the stream ended first.
        """
        while b"\r\n\r\n" not in self._buffer:
            data = self.recv()
            if not data:
                raise PeerClosed("EOF before a complete request head")
            self._buffer += data
        head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, target, _version = request_line.split(" ", 2)
        headers: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        assert "chunked" not in headers.get("transfer-encoding", ""), "chunked bodies are not expected"
        length = int(headers.get("content-length", "0"))
        while len(self._buffer) < length:
            data = self.recv()
            if not data:
                raise PeerClosed("EOF inside a request body")
            self._buffer += data
        body, self._buffer = self._buffer[:length], self._buffer[length:]
        return ReceivedRequest(method, target, headers, body)

    # -- endings ---------------------------------------------------------------------------

    def close(self) -> None:
        """An orderly close: FIN, no answer."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()

    def reset(self) -> None:
        """An abortive close: SO_LINGER 0 makes the kernel send RST."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


Behaviour = Callable[[Peer, "LoopbackServer"], None]


class LoopbackServer:
    """
    A threaded TCP server on 127.0.0.1 that runs ``behaviour`` on every connection.

    :param behaviour: What to do with each accepted connection.
    :param tls: A server context to speak TLS; ``None`` for plain HTTP.
    """

    def __init__(self, behaviour: Behaviour, *, tls: ssl.SSLContext | None = None) -> None:
        self.behaviour = behaviour
        self.tls = tls
        self.received: list[ReceivedRequest] = []
        self.connections = 0
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server((LOOPBACK, 0))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._peers: list[socket.socket] = []
        self._acceptor = threading.Thread(target=self._accept_loop, name="loopback-acceptor", daemon=True)

    def url(self, host: str = LOOPBACK) -> str:
        """The server's origin under ``host`` (``127.0.0.1`` or ``localhost``)."""
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def record(self, request: ReceivedRequest) -> None:
        with self._lock:
            self.received.append(request)

    def count(self, method: str | None = None) -> int:
        """Complete requests received, of ``method`` if given."""
        with self._lock:
            return sum(1 for request in self.received if method is None or request.method == method)

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(10)
            with self._lock:
                self.connections += 1
                self._peers.append(sock)
            thread = threading.Thread(target=self._serve, args=(sock,), name="loopback-peer", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        try:
            self.behaviour(Peer(sock, self.tls), self)
        except (PeerClosed, OSError, ssl.SSLError):
            pass
        except BaseException as error:  # surfaced by the tests through .errors
            self.errors.append(error)
        finally:
            with contextlib.suppress(OSError):
                sock.close()

    def __enter__(self) -> LoopbackServer:
        self._acceptor.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopping.set()
        self._acceptor.join(5)
        self._listener.close()
        with self._lock:
            peers = list(self._peers)
        for sock in peers:
            with contextlib.suppress(OSError):
                sock.close()
        for thread in self._threads:
            thread.join(5)


# -- behaviours ----------------------------------------------------------------------------


def envelope(data: Any) -> bytes:
    """A Crun success answer around ``data``, as a whole HTTP/1.1 response."""
    body = json.dumps({"code": 200, "message": "success", "data": data}).encode()
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def answering(data: Any) -> Behaviour:
    """Answer every request on the connection with a Crun success envelope (keep-alive)."""

    def behaviour(peer: Peer, server: LoopbackServer) -> None:
        while True:
            server.record(peer.read_request())
            peer.send(envelope(data))

    return behaviour


def close_after_request(peer: Peer, server: LoopbackServer) -> None:
    """Read the whole request, then close (FIN) without a byte of answer."""
    server.record(peer.read_request())
    peer.close()


def reset_mid_response(peer: Peer, server: LoopbackServer) -> None:
    """Read the whole request, start answering, then reset the connection (RST)."""
    server.record(peer.read_request())
    peer.send(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 4096\r\n\r\n"
        b'{"code": 200, "message": "succ'
    )
    peer.reset()


# A TLS application-data record header followed by bytes that no key decrypts: a peer that
# completed the handshake and then speaks broken TLS.
BROKEN_TLS_RECORD = b"\x17\x03\x03\x00\x40" + bytes(range(0x40))


def broken_tls_after_request(peer: Peer, server: LoopbackServer) -> None:
    """Read the whole (decrypted) request, then write a forged TLS record and garbage."""
    server.record(peer.read_request())
    peer.send_raw(BROKEN_TLS_RECORD + b"HTTP/1.1 200 OK garbage\r\n\r\n")
    peer.close()


# -- ports that do not serve ---------------------------------------------------------------


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """
    A loopback port that refuses connections.

    The socket stays bound but never listens, so the kernel answers a SYN with RST and no other
    process can take the port while the test runs.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((LOOPBACK, 0))
        yield sock.getsockname()[1]
    finally:
        sock.close()


@contextlib.contextmanager
def unaccepting_port(probe_timeout: float = 0.3, max_fillers: int = 64) -> Iterator[int | None]:
    """
    A loopback port whose listen queue is full, so a new connection attempt hangs in SYN.

    The listener never calls ``accept()``; filler connections take its (tiny) backlog until one
    of them fails to connect within ``probe_timeout``. Yields ``None`` where the kernel accepts
    beyond the backlog (the caller then skips).
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    fillers: list[socket.socket] = []
    try:
        listener.bind((LOOPBACK, 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        full = False
        for _ in range(max_fillers):
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.settimeout(probe_timeout)
            fillers.append(filler)
            try:
                filler.connect((LOOPBACK, port))
            except TimeoutError:
                full = True
                break
        yield port if full else None
    finally:
        for filler in fillers:
            filler.close()
        listener.close()
