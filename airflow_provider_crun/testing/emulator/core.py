"""The in-process emulator: state, faults, HTTP server and callback thread behind one object."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Unpack

from airflow_provider_crun.testing.emulator.base import StateOptions
from airflow_provider_crun.testing.emulator.callbacks import CallbackDispatcher
from airflow_provider_crun.testing.emulator.controls import EmulatorControls
from airflow_provider_crun.testing.emulator.faults import FaultInjector, FaultRule
from airflow_provider_crun.testing.emulator.lifecycle import StartStop
from airflow_provider_crun.testing.emulator.server import EmulatorHTTPServer
from airflow_provider_crun.testing.emulator.state import EmulatorState


class CrunEmulator(EmulatorControls, StartStop):
    """
    A Crun API emulator serving HTTP on a daemon thread; use it as a context manager.

    :param api_key: The accepted API key, or several (each with its own balance).
    :param credits: Starting balance of every key.
    :param detection_cost: Credits billed per detection.
    :param task_cost: Credits billed per task.
    :param detect_delays: Seconds a detection stays ``starting``, then ``processing``.
    :param task_delays: Seconds a task stays ``pending``, then ``running``.
    :param detect_ttl: Seconds after submission during which a detect_id can be used.
    :param default_faces: Faces found in an image URL without ``faces=N``.
    :param seed: Seed for ids and probabilistic faults; ``None`` (default) makes ids random, so
        they differ across runs and restarts.
    :param host: Interface to bind.
    :param port: Port to bind; 0 picks a free one.
    :param faults: Initial fault rules.
    :param retry_after: ``Retry-After`` seconds of 429 faults without their own value.
    :param verbose: Log every request (never the API key).
    :param clock: Monotonic clock of the status progressions (a ``ManualClock`` in tests).
    :param public_url: Origin put into media links, if clients reach the emulator by another
        name (e.g. from a container); defaults to :attr:`url`.
    :param callback_timeout: Seconds to wait for a callback receiver.
    :param large_result_bytes: Serve every task result as a PNG of exactly this many bytes
        (at least 1 MiB), generated and streamed in chunks; for memory tests of downloads.
    """

    def __init__(
        self,
        api_key: str | Sequence[str] = "test-key",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Iterable[FaultRule] = (),
        retry_after: float = 1.0,
        verbose: bool = False,
        clock: Callable[[], float] | None = None,
        public_url: str | None = None,
        callback_timeout: float = 5.0,
        **options: Unpack[StateOptions],
    ) -> None:
        self._clock = clock or time.monotonic
        self.state = EmulatorState(api_key, clock=self._clock, **options)
        # The same seed drives ids and probabilistic faults, so a seeded run repeats exactly.
        self.faults = FaultInjector(faults, seed=options.get("seed"))
        self._host = host
        self._port = port
        self._retry_after = retry_after
        self._verbose = verbose
        self._public_url = public_url
        self._callbacks = CallbackDispatcher(self.state, self._clock, timeout=callback_timeout)
        self.state.on_task_created = self._callbacks.schedule
        self._server: EmulatorHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------------------------------
    # Lifecycle

    def start(self) -> CrunEmulator:
        """Bind and start serving; returns ``self``."""
        if self._server is not None:
            return self
        server = EmulatorHTTPServer(
            (self._host, self._port),
            self.state,
            self.faults,
            default_retry_after=self._retry_after,
            verbose=self._verbose,
        )
        self._server = server
        self.state.base_url = (self._public_url or self.url).rstrip("/")
        self._callbacks.start()
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="crun-emulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close every connection and join all emulator threads."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        server.close_connections()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None
        self._callbacks.stop()

    # ---------------------------------------------------------------------------------------
    # Addresses

    @property
    def port(self) -> int:
        """The bound port (only while running)."""
        if self._server is None:
            raise RuntimeError("the emulator is not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``http://host:port`` of the running emulator, without the ``/api/v1`` prefix."""
        host = self._host if self._host not in ("", "0.0.0.0", "::") else "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def api_url(self) -> str:
        """The API base URL (``url + "/api/v1"``)."""
        return self.url + "/api/v1"

    def connection_uri(self, **extra: Any) -> str:
        """
        A JSON Airflow connection for ``AIRFLOW_CONN_CRUN_DEFAULT``.

        :param extra: Connection ``extra`` fields, if any.
        """
        conn: dict[str, Any] = {"conn_type": "crun", "host": self.url, "password": self.api_key}
        if extra:
            conn["extra"] = extra
        return json.dumps(conn)
