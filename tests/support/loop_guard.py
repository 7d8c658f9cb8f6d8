"""Fail a test when blocking I/O runs on an event loop's thread, and only then."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


def on_event_loop() -> bool:
    """Whether the calling thread is running an event loop (a worker thread is not)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def guarded(name: str, original: Callable[..., Any], calls: list[str]) -> Callable[..., Any]:
    """
    ``original``, refusing to run on an event loop's thread: the call is recorded and fails.

    Off the loop it runs: below Airflow 3.3.2, common-compat's async connection lookup runs the
    sync lookup through ``sync_to_async`` in a worker thread, which blocks nothing.
    """

    def call(*args: Any, **kwargs: Any) -> Any:
        if on_event_loop():
            calls.append(name)
            raise AssertionError(f"{name} called on the event loop")
        return original(*args, **kwargs)

    return call
