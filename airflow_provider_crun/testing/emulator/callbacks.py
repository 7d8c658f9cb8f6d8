"""Delivery of task callbacks: one background thread POSTs each finished task's TaskInfo."""

from __future__ import annotations

import heapq
import json
import logging
import threading
import urllib.request
from collections.abc import Callable

from airflow_provider_crun.testing.emulator.state import EmulatorState

log = logging.getLogger("airflow_provider_crun.testing.emulator")

# Real seconds between clock checks, so a ManualClock advanced by a test is noticed quickly.
_MAX_WAIT_S = 0.05
# Loopback callbacks must never go through a proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class CallbackDispatcher:
    """
    Deliver ``callback_url`` POSTs when tasks finish; failures are logged and counted.

    :param state: The state whose tasks are reported.
    :param clock: The state's monotonic clock.
    :param timeout: Seconds to wait for a callback receiver.
    """

    def __init__(self, state: EmulatorState, clock: Callable[[], float], timeout: float = 5.0) -> None:
        self._state = state
        self._clock = clock
        self._timeout = timeout
        self._queue: list[tuple[float, int, str, str]] = []
        self._sequence = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the delivery thread."""
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="crun-emulator-callbacks", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the delivery thread; undelivered callbacks are dropped."""
        with self._cond:
            self._stopping = True
            self._queue.clear()
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def schedule(self, task_id: str, due: float, url: str) -> None:
        """Deliver the callback of ``task_id`` to ``url`` once the clock reaches ``due``."""
        with self._cond:
            self._sequence += 1
            heapq.heappush(self._queue, (due, self._sequence, task_id, url))
            self._cond.notify_all()

    def _next_due(self) -> tuple[str, str] | None:
        with self._cond:
            while not self._stopping:
                if self._queue and self._queue[0][0] <= self._clock():
                    _, _, task_id, url = heapq.heappop(self._queue)
                    return task_id, url
                wait = _MAX_WAIT_S if self._queue else None
                if self._queue:
                    wait = min(_MAX_WAIT_S, max(0.0, self._queue[0][0] - self._clock()))
                self._cond.wait(wait)
        return None

    def _run(self) -> None:
        while (item := self._next_due()) is not None:
            self._deliver(*item)

    def _deliver(self, task_id: str, url: str) -> None:
        try:
            body = json.dumps(self._state.callback_payload(task_id)).encode()
            request = urllib.request.Request(
                url, data=body, method="POST", headers={"Content-Type": "application/json"}
            )
            with _OPENER.open(request, timeout=self._timeout) as response:
                response.read()
        except Exception as error:  # a broken receiver must never take the emulator down
            log.warning("callback for %s to %s failed: %s", task_id, url, error)
            self._state.counters.add("callbacks_failed")
        else:
            self._state.counters.add("callbacks_delivered")
