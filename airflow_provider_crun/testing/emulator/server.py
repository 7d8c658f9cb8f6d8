"""
The emulator's HTTP shell: routing, the ``{code, message, data}`` envelope and fault delivery.

HTTP/1.1 keep-alive with exact ``Content-Length`` on every response, one thread per
connection. The server tracks its connections so :meth:`EmulatorHTTPServer.close_connections`
can end idle keep-alive threads on shutdown.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from airflow_provider_crun.testing.emulator.faults import CREATION_ENDPOINTS, FaultInjector, FaultRule
from airflow_provider_crun.testing.emulator.media import MAX_FACES, input_png
from airflow_provider_crun.testing.emulator.state import ApiError, EmulatorState, faces_from_query

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
_MEDIA_INPUT = re.compile(r"^/media/input/([^/]+)\.png$")
_MEDIA_FACE = re.compile(r"^/media/faces/([^/]+)/(\d+)\.png$")
_MEDIA_RESULT = re.compile(r"^/media/results/([^/]+)\.png$")
_MAX_BODY = 1 << 20


def envelope(code: int, data: Any = None, message: str | None = None) -> dict[str, Any]:
    """Build a Crun response envelope."""
    return {"code": code, "message": message or MESSAGES.get(code, "error"), "data": data}


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


class EmulatorHTTPServer(ThreadingHTTPServer):
    """
    A threading HTTP server bound to one emulator's state and faults.

    :param address: ``(host, port)``; port 0 picks a free port.
    :param state: The protocol state.
    :param faults: The fault rules.
    :param default_retry_after: ``Retry-After`` seconds of 429 faults without their own value.
    :param verbose: Log one line per request.
    """

    daemon_threads = True
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        state: EmulatorState,
        faults: FaultInjector,
        *,
        default_retry_after: float = 1.0,
        verbose: bool = False,
    ) -> None:
        self.state = state
        self.faults = faults
        self.default_retry_after = default_retry_after
        self.verbose = verbose
        self._conn_lock = threading.Lock()
        self._connections: dict[socket.socket, threading.Thread] = {}
        super().__init__(address, CrunRequestHandler)

    def get_request(self) -> tuple[socket.socket, Any]:
        """Accept a connection and count it."""
        request, address = super().get_request()
        self.state.note_connection()
        return request, address

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve the connection on its own tracked daemon thread."""
        thread = threading.Thread(
            target=self._serve_connection,
            args=(request, client_address),
            name="crun-emulator-conn",
            daemon=True,
        )
        with self._conn_lock:
            self._connections[request] = thread
        thread.start()

    def _serve_connection(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            with self._conn_lock:
                self._connections.pop(request, None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Log a handler crash without printing to stderr."""
        log.debug("error while serving %s", client_address, exc_info=True)

    @property
    def open_connections(self) -> int:
        """Connections currently being served."""
        with self._conn_lock:
            return len(self._connections)

    def close_connections(self, timeout: float = 5.0) -> None:
        """Shut every open connection down and wait for its thread."""
        with self._conn_lock:
            connections = list(self._connections.items())
        for sock, _ in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for _, thread in connections:
            thread.join(max(0.0, deadline - time.monotonic()))


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

    def do_GET(self) -> None:
        """Handle GET."""
        self._handle("GET")

    def do_POST(self) -> None:
        """Handle POST."""
        self._handle("POST")

    def do_PUT(self) -> None:
        """Handle PUT."""
        self._handle("PUT")

    def do_DELETE(self) -> None:
        """Handle DELETE."""
        self._handle("DELETE")

    def do_PATCH(self) -> None:
        """Handle PATCH."""
        self._handle("PATCH")

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

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json", headers)

    def _send_error(self, error: ApiError) -> None:
        self._send_json(error.code, envelope(error.code, None, error.message))

    def _handle(self, method: str) -> None:
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
            elif path.startswith("/media/") and method == "GET":
                self._handle_media(path, url.query)
            elif path.startswith("/_emulator/"):
                if self._first_request:
                    # Admin calls must not distort the connection count a benchmark reads.
                    self.server.state.note_connection(-1)
                self._handle_admin(method, path, body)
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
            return state.create_detection(api_key, _json_body(body), fail=fail)
        if endpoint == "detect-face-result":
            return state.detection_result(api_key, _first(query, "detect_task_id"))
        if endpoint == "CreateTask":
            return state.create_task(api_key, _json_body(body), fail=fail)
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

    def _handle_media(self, path: str, query: str) -> None:
        state = self.server.state
        state.count("media")
        rule = self.server.faults.match("media")
        if rule is not None and rule.kind != "slow":
            self._send_fault(rule)
            return
        if rule is not None:
            time.sleep(rule.delay if rule.delay is not None else 1.0)
        if match := _MEDIA_INPUT.match(path):
            faces = faces_from_query(query, state.default_faces)
            png = input_png(unquote(match.group(1)), min(faces, MAX_FACES))
        elif match := _MEDIA_FACE.match(path):
            png = state.face_image(match.group(1), int(match.group(2)))
        elif match := _MEDIA_RESULT.match(path):
            png = state.result_image(match.group(1))
        else:
            raise ApiError(404, "media not found")
        self._send(200, png, "image/png", {"Cache-Control": "max-age=3600"})

    # ---------------------------------------------------------------------------------------
    # Admin

    def _handle_admin(self, method: str, path: str, body: bytes) -> None:
        server = self.server
        if (method, path) == ("GET", "/_emulator/state"):
            snapshot = server.state.snapshot()
            snapshot["faults"] = [rule.to_dict() for rule in server.faults.rules]
            snapshot["faults_fired"] = dict(server.faults.fired)
            snapshot["open_connections"] = server.open_connections
            self._send_json(200, snapshot)
        elif (method, path) == ("POST", "/_emulator/faults"):
            rules = _json_body(body) if body else []
            if not isinstance(rules, list):
                raise ApiError(422, "expected a JSON list of fault rules")
            try:
                parsed = [FaultRule.from_dict(rule) for rule in rules]
            except (TypeError, ValueError, AttributeError) as error:
                raise ApiError(422, f"invalid fault rule: {error}") from None
            server.faults.set_rules(parsed)
            self._send_json(200, {"faults": [rule.to_dict() for rule in parsed]})
        elif (method, path) == ("POST", "/_emulator/reset"):
            options = _json_body(body) if body else {}
            if isinstance(options, dict) and options.get("all"):
                server.state.reset()
                server.faults.clear()
            else:
                server.state.reset_counters()
            server.faults.reset_counters()
            self._send_json(200, {"reset": True})
        elif (method, path) == ("POST", "/_emulator/faces"):
            request = _json_body(body)
            try:
                server.state.set_faces(str(request["image_url"]), int(request["faces"]))
            except (KeyError, TypeError, ValueError) as error:
                raise ApiError(422, f"expected {{'image_url', 'faces'}}: {error}") from None
            self._send_json(200, {"ok": True})
        else:
            raise ApiError(404, "admin endpoint not found")


def _json_body(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ApiError(422, "request body is not valid JSON") from None


def _first(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None
