"""The in-process emulator: state, faults, HTTP server and callback thread behind one object."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any

from airflow_provider_crun.testing.emulator import media
from airflow_provider_crun.testing.emulator.callbacks import CallbackDispatcher
from airflow_provider_crun.testing.emulator.faults import FaultInjector, FaultRule
from airflow_provider_crun.testing.emulator.server import EmulatorHTTPServer
from airflow_provider_crun.testing.emulator.state import EmulatorState


class CrunEmulator:
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
    :param seed: Seed for ids and probabilistic faults.
    :param host: Interface to bind.
    :param port: Port to bind; 0 picks a free one.
    :param faults: Initial fault rules.
    :param retry_after: ``Retry-After`` seconds of 429 faults without their own value.
    :param verbose: Log every request (never the API key).
    :param clock: Monotonic clock of the status progressions (a ``ManualClock`` in tests).
    :param public_url: Origin put into media links, if clients reach the emulator by another
        name (e.g. from a container); defaults to :attr:`url`.
    :param callback_timeout: Seconds to wait for a callback receiver.
    """

    def __init__(
        self,
        api_key: str | Sequence[str] = "test-key",
        *,
        credits: float = 1000,
        detection_cost: float = 1,
        task_cost: float = 6,
        detect_delays: tuple[float, float] = (0.2, 0.2),
        task_delays: tuple[float, float] = (0.2, 0.5),
        detect_ttl: float = 3600.0,
        default_faces: int = 2,
        seed: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Iterable[FaultRule] = (),
        retry_after: float = 1.0,
        verbose: bool = False,
        clock: Callable[[], float] | None = None,
        public_url: str | None = None,
        callback_timeout: float = 5.0,
    ) -> None:
        self._clock = clock or time.monotonic
        self.state = EmulatorState(
            api_key,
            credits=credits,
            detection_cost=detection_cost,
            task_cost=task_cost,
            detect_delays=detect_delays,
            task_delays=task_delays,
            detect_ttl=detect_ttl,
            default_faces=default_faces,
            seed=seed,
            clock=self._clock,
        )
        self.faults = FaultInjector(faults, seed=seed)
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

    def __enter__(self) -> CrunEmulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

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

    @property
    def api_key(self) -> str:
        """The first accepted API key."""
        return self.state.api_keys[0]

    @property
    def api_keys(self) -> tuple[str, ...]:
        """Every accepted API key."""
        return self.state.api_keys

    def connection_uri(self, **extra: Any) -> str:
        """
        A JSON Airflow connection for ``AIRFLOW_CONN_CRUN_DEFAULT``.

        :param extra: Connection ``extra`` fields, if any.
        """
        conn: dict[str, Any] = {"conn_type": "crun", "host": self.url, "password": self.api_key}
        if extra:
            conn["extra"] = extra
        return json.dumps(conn)

    # ---------------------------------------------------------------------------------------
    # Counters and accounts

    @property
    def counts(self) -> dict[str, int]:
        """Requests per endpoint name (a copy), faulted requests included."""
        return self.state.counts()

    @property
    def tasks_created(self) -> int:
        """Tasks created and billed."""
        return self.state.counters.tasks_created

    @property
    def detections_created(self) -> int:
        """Detections created and billed."""
        return self.state.counters.detections_created

    @property
    def connections_accepted(self) -> int:
        """TCP connections accepted."""
        return self.state.counters.connections_accepted

    @property
    def callbacks_delivered(self) -> int:
        """Callbacks answered by their receiver."""
        return self.state.counters.callbacks_delivered

    @property
    def callbacks_failed(self) -> int:
        """Callbacks that could not be delivered."""
        return self.state.counters.callbacks_failed

    @property
    def open_connections(self) -> int:
        """Connections currently open."""
        return self._server.open_connections if self._server is not None else 0

    def balance(self, api_key: str | None = None) -> float:
        """The balance of ``api_key`` (default: :attr:`api_key`)."""
        return self.state.get_balance(api_key or self.api_key)

    def reset_counters(self) -> None:
        """Zero request, object, connection and callback counters."""
        self.state.reset_counters()
        self.faults.reset_counters()

    def reset(self) -> None:
        """Forget all detections and tasks, restore balances, zero counters and drop faults."""
        self.state.reset()
        self.faults.clear()
        self.faults.reset_counters()

    def snapshot(self) -> dict[str, Any]:
        """The same data as ``GET /_emulator/state``."""
        data = self.state.snapshot()
        data["faults"] = [rule.to_dict() for rule in self.faults.rules]
        data["faults_fired"] = dict(self.faults.fired)
        data["open_connections"] = self.open_connections
        return data

    # ---------------------------------------------------------------------------------------
    # Faults and media

    def add_fault(
        self,
        endpoint: str,
        kind: str | int,
        *,
        times: int | None = None,
        probability: float | None = None,
        retry_after: float | None = None,
        delay: float | None = None,
        code: int | None = None,
        after_create: bool | None = None,
    ) -> FaultRule:
        """
        Add a fault rule (see :mod:`~airflow_provider_crun.testing.emulator.faults`).

        :param endpoint: Endpoint name or ``"*"``.
        :param kind: ``429``, ``455``, ``500``, ..., ``malformed``, ``slow``, ``drop``,
            ``body_error`` or ``task_fail``.
        :param times: Fire on the first N matching requests.
        :param probability: Fire with this probability (seeded).
        :param retry_after: ``Retry-After`` seconds.
        :param delay: Seconds of a ``slow`` fault.
        :param code: Envelope code of a ``body_error``.
        :param after_create: On creation endpoints, create and bill before faulting.
        """
        rule = FaultRule(
            endpoint=endpoint,
            kind=str(kind),
            times=times,
            probability=probability,
            retry_after=retry_after,
            delay=delay,
            code=code,
            after_create=after_create,
        )
        self.faults.add(rule)
        return rule

    def set_faults(self, rules: Iterable[FaultRule]) -> None:
        """Replace every fault rule."""
        self.faults.set_rules(rules)

    def clear_faults(self) -> None:
        """Remove every fault rule."""
        self.faults.clear()

    def set_faces(self, image_url: str, faces: int) -> None:
        """Make detections of ``image_url`` find ``faces`` faces."""
        self.state.set_faces(image_url, faces)

    def input_image_url(self, name: str = "group", faces: int = 2) -> str:
        """URL of a generated input image with ``faces`` faces, served by this emulator."""
        return self.state.input_image_url(name, faces)

    @staticmethod
    def face_boxes(n: int) -> list[media.Box]:
        """Regions ``(x0, y0, x1, y1)`` of the ``n`` faces of a generated image."""
        return media.face_boxes(n)
