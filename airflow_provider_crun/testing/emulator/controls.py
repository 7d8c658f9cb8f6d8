"""Counters, accounts, faults and media URLs of a running emulator: the test-facing controls."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from airflow_provider_crun.testing.emulator import media
from airflow_provider_crun.testing.emulator.faults import FaultInjector, FaultRule
from airflow_provider_crun.testing.emulator.server import EmulatorHTTPServer
from airflow_provider_crun.testing.emulator.state import EmulatorState


class EmulatorControls:
    """What a test reads and steers on a :class:`~airflow_provider_crun.testing.emulator.CrunEmulator`."""

    state: EmulatorState
    faults: FaultInjector
    _server: EmulatorHTTPServer | None

    @property
    def api_key(self) -> str:
        """The first accepted API key."""
        return self.state.api_keys[0]

    @property
    def api_keys(self) -> tuple[str, ...]:
        """Every accepted API key."""
        return self.state.api_keys

    @property
    def open_connections(self) -> int:
        """Connections currently open."""
        return self._server.open_connections if self._server is not None else 0

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

    def face_image_url(self, name: str) -> str:
        """URL of a portrait (one drawn face, distinct per ``name``) to use as a swap target."""
        return self.state.face_image_url(name)

    @property
    def large_result_bytes(self) -> int | None:
        """Size of the streamed result of tasks created from now on; ``None`` for plain pictures."""
        return self.state.large_result_bytes

    @large_result_bytes.setter
    def large_result_bytes(self, value: int | None) -> None:
        self.state.large_result_bytes = value

    @staticmethod
    def face_boxes(n: int) -> list[media.Box]:
        """Regions ``(x0, y0, x1, y1)`` of the ``n`` faces of a generated image."""
        return media.face_boxes(n)
