"""
One connection lookup per event loop, connection id and minute, shared by every trigger.

A triggerer restores hundreds of Crun triggers at once, and each used to look its connection up
(through the triggerer's supervisor, or a secrets backend) and validate it: a sixth of the CPU a
thousand triggers spent polling. Here the first lookup of a connection id on a loop is shared:
every trigger that asks while it is in flight, or within :data:`TTL_SECONDS` after it succeeded,
gets its answer. A failed lookup is not kept, so the next trigger tries again.

The trade-off: a connection edited in Airflow reaches new triggers after at most
:data:`TTL_SECONDS`. (A running trigger keeps the settings it read when it started, as before.)
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Awaitable, Callable

from airflow_provider_crun.protocol.settings import CrunConnectionSettings

#: How long a successful lookup answers the triggers that start after it.
TTL_SECONDS = 60.0

_Entry = tuple[float, "asyncio.Future[CrunConnectionSettings]"]
_entries: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _Entry]] = (
    weakref.WeakKeyDictionary()
)


async def shared_settings(
    conn_id: str,
    look_up: Callable[[], Awaitable[CrunConnectionSettings]],
    *,
    monotonic: Callable[[], float] = time.monotonic,
) -> CrunConnectionSettings:
    """
    The validated settings of ``conn_id``: from a lookup shared on this loop, or ``look_up()``.

    :param look_up: Looks the connection up and validates it; runs at most once per loop,
        connection id and :data:`TTL_SECONDS` while it succeeds.
    :raises: whatever ``look_up`` raised, to every caller that shared that lookup.
    """
    by_id = _entries.setdefault(asyncio.get_running_loop(), {})
    entry = by_id.get(conn_id)
    if entry is None or monotonic() - entry[0] > TTL_SECONDS:
        lookup = asyncio.ensure_future(look_up())
        entry = by_id[conn_id] = (monotonic(), lookup)
        lookup.add_done_callback(lambda done: _forget_failure(by_id, conn_id, entry, done))
    # A caller cancelled while waiting must not cancel the lookup the others share.
    return await asyncio.shield(entry[1])


def _forget_failure(
    by_id: dict[str, _Entry],
    conn_id: str,
    entry: _Entry,
    done: asyncio.Future[CrunConnectionSettings],
) -> None:
    # Reading the exception also keeps asyncio from warning that nobody retrieved it.
    if (done.cancelled() or done.exception() is not None) and by_id.get(conn_id) is entry:
        del by_id[conn_id]
