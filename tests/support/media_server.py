"""A loopback CDN for the storage and operator tests: stdlib ``http.server`` in a thread, fault knobs."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


@dataclass
class Media:
    """What one path serves, and how it misbehaves."""

    body: bytes = b""
    content_type: str | None = "image/png"
    send_length: bool = True  # False: no Content-Length, the body ends when the connection closes
    announced: int | None = None  # a Content-Length other than len(body)
    drop_after: int | None = None  # close the connection after this many body bytes
    pause_after: int | None = None  # send this many body bytes, then wait for `resume`
    head_status: int = 200  # e.g. 405: HEAD not supported
    status: int = 200
    redirect_to: str | None = None
    stall: bool = False  # send the headers, then nothing until `resume`
    headers: dict[str, str] = field(default_factory=dict)
    paused: threading.Event = field(default_factory=threading.Event)
    resume: threading.Event = field(default_factory=threading.Event)


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]


class MediaServer:
    """Serves :class:`Media` by path on 127.0.0.1 and counts what it was asked."""

    def __init__(self) -> None:
        self.routes: dict[str, Media] = {}
        self.requests: list[Recorded] = []
        self.body_bytes: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="media-server", daemon=True
        )

    @property
    def base(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def add(self, path: str, media: Media) -> str:
        """Serve ``media`` at ``path``; return its URL."""
        self.routes[path] = media
        return self.base + path

    def count(self, method: str, path: str | None = None) -> int:
        with self._lock:
            return sum(
                1 for r in self.requests if r.method == method and path in (None, r.path.split("?")[0])
            )

    def record(self, method: str, path: str, headers: dict[str, str]) -> None:
        with self._lock:
            self.requests.append(Recorded(method, path, headers))

    def __enter__(self) -> MediaServer:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for media in self.routes.values():
            media.resume.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)


def _handler_for(server: MediaServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.0: one request per connection, so a body without Content-Length ends at close.
        protocol_version = "HTTP/1.0"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_HEAD(self) -> None:
            self._serve(head=True)

        def do_GET(self) -> None:
            self._serve(head=False)

        def _serve(self, *, head: bool) -> None:
            server.record(self.command, self.path, dict(self.headers.items()))
            media = server.routes.get(self.path.split("?")[0])
            if media is None:
                self.send_error(404)
                return
            if media.redirect_to is not None:
                self.send_response(302)
                self.send_header("Location", media.redirect_to)
                self.end_headers()
                return
            if head and media.head_status != 200:
                self.send_response(media.head_status)
                self.end_headers()
                return
            self.send_response(media.status)
            if media.content_type is not None:
                self.send_header("Content-Type", media.content_type)
            if media.send_length:
                length = media.announced if media.announced is not None else len(media.body)
                self.send_header("Content-Length", str(length))
            for name, value in media.headers.items():
                self.send_header(name, value)
            self.end_headers()
            if not head:
                self._send_body(media)

        def _send_body(self, media: Media) -> None:
            path = self.path.split("?")[0]
            body = media.body
            if media.stall:
                self.wfile.flush()
                media.resume.wait(timeout=60)
                return
            if media.drop_after is not None:
                body = body[: media.drop_after]
            if media.pause_after is not None:
                self._write(path, body[: media.pause_after])
                self.wfile.flush()
                media.paused.set()
                media.resume.wait(timeout=60)
                body = body[media.pause_after :]
            self._write(path, body)

        def _write(self, path: str, data: bytes) -> None:
            try:
                self.wfile.write(data)
            except OSError:
                return
            with server._lock:
                server.body_bytes[path] += len(data)

    return Handler
