"""The one fake of each Airflow part the operators touch, and a clock that only moves when asked."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any


class FakeTaskInstance:
    """Just enough of a running task instance: XCom pushes are recorded, ``start_date`` is settable."""

    stats_tags: dict[str, str] = {}

    def __init__(self, start_date: datetime | None = None) -> None:
        self.xcoms: dict[str, Any] = {}
        self.start_date = start_date

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value


class FakeTaskStateStore:
    """A dict-backed ``task_state_store``: the part of Airflow 3.3's accessor the operators use."""

    def __init__(self, **values: Any) -> None:
        self.values = dict(values)
        #: Every ``set`` as ``(key, value)``, and every ``delete`` as ``(key, None)``.
        self.writes: list[tuple[str, Any]] = []

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def set(self, key: str, value: Any) -> None:
        assert value is not None
        self.values[key] = value
        self.writes.append((key, value))

    def delete(self, key: str) -> None:
        self.values.pop(key, None)
        self.writes.append((key, None))


def make_context(
    store: FakeTaskStateStore | None = None, *, started: datetime | None = None
) -> dict[str, Any]:
    """A task context; without ``store`` it looks like Airflow 3.1/3.2 (no task_state_store)."""
    context: dict[str, Any] = {"ti": FakeTaskInstance(start_date=started)}
    if store is not None:
        context["task_state_store"] = store
    return context


class FakeClock:
    """A :class:`~airflow_provider_crun.hooks._clock.Clock` whose time moves only when code sleeps."""

    def __init__(self, start: float = 1_800_000_000.0, jitter: float = 0.5) -> None:
        self.now = start
        self.jitter = jitter
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)
        # Still yield to the loop, as a real sleep would.
        await asyncio.sleep(0)

    def uniform(self, low: float, high: float) -> float:
        """``jitter`` of the way from ``low`` to ``high``: deterministic, and visibly not zero."""
        return low + (high - low) * self.jitter

    def advance(self, delta: timedelta | float) -> None:
        self.now += delta.total_seconds() if isinstance(delta, timedelta) else delta
