"""Time, as something a hook or a poll loop is given, so tests can pass their own."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Protocol


class Clock(Protocol):
    """Where waiting code reads the time, sleeps and draws its jitter."""

    def time(self) -> float:
        """Epoch seconds."""

    def sleep(self, seconds: float) -> None:
        """Block the calling thread."""

    async def asleep(self, seconds: float) -> None:
        """Yield to the event loop."""

    def uniform(self, low: float, high: float) -> float:
        """A random number, for jitter."""


class SystemClock:
    """The real clock."""

    def time(self) -> float:
        """Epoch seconds."""
        return time.time()

    def sleep(self, seconds: float) -> None:
        """Block the calling thread."""
        time.sleep(seconds)

    # asyncio.sleep itself, not a coroutine around it: one object fewer per sleeping trigger.
    asleep = staticmethod(asyncio.sleep)

    def uniform(self, low: float, high: float) -> float:
        """A random number, for jitter."""
        return random.uniform(low, high)


SYSTEM_CLOCK: Clock = SystemClock()
