"""
The emulator's HTTP shell: routing, the ``{code, message, data}`` envelope and fault delivery.

HTTP/1.1 keep-alive with an exact ``Content-Length`` on every response. Media are sent in
chunks as they are produced, so a large result never sits in memory.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import time
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from airflow_provider_crun.testing.emulator.admin import handle_admin
from airflow_provider_crun.testing.emulator.faults import CREATION_ENDPOINTS, FaultRule
from airflow_provider_crun.testing.emulator.media import Media
from airflow_provider_crun.testing.emulator.model import ApiError, json_body

if TYPE_CHECKING:
    from airflow_provider_crun.testing.emulator.server import EmulatorHTTPServer

log = logging.getLogger("airflow_provider_crun.testing.emulator")

API_PREFIX = "/api/v1"
ROUTES: dict[tuple[str, str], str] = {
    ("POST", "/client/job/detect-face-image"): "detect-face-image",
    ("GET", "/client/job/detect-face-result"): "detect-face-result",
    ("POST", "/client/job/CreateTask"): "CreateTask",
    ("GET", "/client/job/TaskInfo"): "TaskInfo",
    ("GET", "/client/account/balance"): "balance",
}
MESSAGES = {
    200: "success",
    401: "API key missing or invalid",
    402: "insufficient credits",
    404: "not found",
    422: "validation failed",
    429: "too many requests",
    455: "service unavailable (maintenance)",
    500: "internal server error",
    501: "generation failed",
    502: "bad gateway",
    503: "service unavailable",
    505: "feature disabled",
}
MALFORMED_BODY = b"<html><head><title>502 Bad Gateway</title></head><body>upstream error</body></html>"
_MAX_BODY = 1 << 20


def envelope(code: int, data: Any = None, message: str | None = None) -> dict[str, Any]:
    """Build a Crun response envelope."""
    return {"code": code, "message": message or MESSAGES.get(code, "error"), "data": data}


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


class CrunRequestHandler(BaseHTTPRequestHandler):
    """Route one request to the state, applying any fault that fires."""

    protocol_version = "HTTP/1.1"
    server_version = "CrunEmulator/1.0"
    sys_version = ""
    disable_nagle_algorithm = True
    # Idle keep-alive connections close after this many seconds.
    timeout = 120
    server: EmulatorHTTPServer

    def setup(self) -> None:
        """Prepare a new connection."""
        super().setup()
        self._first_request = True

    # ---------------------------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:
        """Log requests only in verbose mode; the API key is a header and never logged."""
        if self.server.verbose:
            log.info("%s %s", self.address_string(), format % args)

    def log_error(self, format: str, *args: Any) -> None:
        """Log protocol errors (timeouts, bad request lines) at debug level."""
        log.debug("%s %s", self.address_string(), format % args)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY:
            self.close_connection = True
            raise ApiError(422, "request body too large")
        return self.rfile.read(length) if length > 0 else b""

    def _send(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status, MESSAGES.get(status) if status not in self.responses else None)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_media(self, media: Media) -> None:
        self.send_response(200)
        self.send_header("Content-Type", media.content_type)
        self.send_header("Content-Length", str(media.length))
        self.send_header("Cache-Control", "max-age=3600")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "HEAD":
            return
        sent = 0
        try:
            for chunk in media.chunks:
                self.wfile.write(chunk)
                sent += len(chunk)
        except OSError:  # the client went away mid-body
            self.close_connection = True
            return
        except Exception:  # the status line is out: all that is left is to cut the connection
            log.exception("emulator failed while streaming %s", self.path.split("?")[0])
            self.close_connection = True
            return
        if sent != media.length:
            log.error("media body was %d bytes, not the announced %d", sent, media.length)
            self.close_connection = True

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json", headers)

    def _send_error(self, error: ApiError) -> None:
        self._send_json(error.code, envelope(error.code, None, error.message))

    def handle_method(self) -> None:
        """Handle one request, whatever its method; the routes decide which methods they accept."""
        method = self.command
        try:
            url = urlsplit(self.path)
            try:
                body = self._read_body()
            except ValueError:
                self.close_connection = True
                raise ApiError(422, "unreadable request body") from None
            path = url.path
            if path.startswith(API_PREFIX + "/"):
                endpoint = ROUTES.get((method, path[len(API_PREFIX) :]))
                if endpoint is None:
                    self.server.state.count("unknown")
                    raise ApiError(404, "endpoint not found")
                self._handle_api(endpoint, body, parse_qs(url.query))
            elif path.startswith("/media/") and method in ("GET", "HEAD"):
                self._handle_media()
            elif path.startswith("/_emulator/"):
                if self._first_request:
                    # Admin calls must not distort the connection count a benchmark reads.
                    self.server.state.counters.add("connections_accepted", -1)
                self._send_json(200, handle_admin(self.server, method, path, body))
            else:
                self.server.state.count("unknown")
                raise ApiError(404, "endpoint not found")
        except ApiError as error:
            self._send_error(error)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception:
            log.exception("emulator handler failed for %s %s", method, self.path.split("?")[0])
            self.close_connection = True
            self._send_json(500, envelope(500))
        finally:
            self._first_request = False

    # BaseHTTPRequestHandler looks up ``do_<METHOD>``: every method goes the same way, so unknown
    # paths get the API's JSON 404 rather than the standard library's HTML 501.
    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = do_PATCH = handle_method

    # ---------------------------------------------------------------------------------------
    # API

    def _handle_api(self, endpoint: str, body: bytes, query: dict[str, list[str]]) -> None:
        state = self.server.state
        state.count(endpoint)
        api_key = state.authenticate(self.headers.get("x-api-key"))
        rule = self.server.faults.match(endpoint)
        fail = False
        if rule is not None and rule.kind == "task_fail":
            fail, rule = True, None
        elif rule is not None and not (endpoint in CREATION_ENDPOINTS and rule.creates_first()):
            if rule.kind != "slow":
                self._send_fault(rule)
                return
            time.sleep(rule.delay if rule.delay is not None else 1.0)
            rule = None
        try:
            status, payload = 200, envelope(200, self._dispatch(endpoint, api_key, body, query, fail))
        except ApiError as error:
            status, payload = error.code, envelope(error.code, None, error.message)
        if rule is not None and rule.kind != "slow":
            self._send_fault(rule)
            return
        if rule is not None:
            time.sleep(rule.delay if rule.delay is not None else 1.0)
        self._send_json(status, payload)

    def _dispatch(
        self, endpoint: str, api_key: str, body: bytes, query: dict[str, list[str]], fail: bool
    ) -> dict[str, Any]:
        state = self.server.state
        if endpoint == "detect-face-image":
            return state.create_detection(api_key, json_body(body), fail=fail)
        if endpoint == "detect-face-result":
            return state.detection_result(api_key, _first(query, "detect_task_id"))
        if endpoint == "CreateTask":
            return state.create_task(api_key, json_body(body), fail=fail)
        if endpoint == "TaskInfo":
            return state.task_info(api_key, _first(query, "task_id"))
        return state.balance(api_key)

    def _send_fault(self, rule: FaultRule) -> None:
        if rule.kind == "drop":
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        if rule.kind == "malformed":
            self._send(200, MALFORMED_BODY, "text/html")
            return
        headers: dict[str, str] = {}
        if rule.retry_after is not None:
            headers["Retry-After"] = _seconds(rule.retry_after)
        if rule.kind == "body_error":
            code = rule.code or 429
            if code == 429 and rule.retry_after is None:
                headers["Retry-After"] = _seconds(self.server.default_retry_after)
            self._send_json(200, envelope(code), headers)
            return
        status = int(rule.kind)
        if status == 429 and rule.retry_after is None:
            headers["Retry-After"] = _seconds(self.server.default_retry_after)
        self._send_json(status, envelope(status), headers)

    # ---------------------------------------------------------------------------------------
    # Media

    def _handle_media(self) -> None:
        state = self.server.state
        state.count("media")
        rule = self.server.faults.match("media")
        if rule is not None and rule.kind != "slow":
            self._send_fault(rule)
            return
        if rule is not None:
            time.sleep(rule.delay if rule.delay is not None else 1.0)
        self._send_media(state.media(self.path))


def _first(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None
