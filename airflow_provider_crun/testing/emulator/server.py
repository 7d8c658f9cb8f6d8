"""
The emulator's HTTP server: one thread per connection, tracked so that shutdown can end idle
keep-alive threads. Requests are handled by
:class:`~airflow_provider_crun.testing.emulator.handler.CrunRequestHandler`.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from http.server import ThreadingHTTPServer
from typing import Any

from airflow_provider_crun.testing.emulator.faults import FaultInjector
from airflow_provider_crun.testing.emulator.handler import CrunRequestHandler, envelope
from airflow_provider_crun.testing.emulator.state import EmulatorState

__all__ = ["EmulatorHTTPServer", "envelope"]

log = logging.getLogger("airflow_provider_crun.testing.emulator")


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
        self.state.counters.add("connections_accepted")
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
