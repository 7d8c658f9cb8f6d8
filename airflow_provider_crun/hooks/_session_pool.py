"""
One pooled ``aiohttp.ClientSession`` per event loop and base URL, shared by every trigger.

A triggerer runs hundreds of triggers on one event loop. A session per call opens a TCP (and
TLS) connection per poll; one shared session keeps a small pool of keep-alive connections
instead. Callers take a *lease*: the session lives while at least one lease is held and is
closed when the last one is released, so nothing is left unclosed when a loop ends.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp

from airflow_provider_crun.protocol import USER_AGENT

# aiohttp's default; enough for a thousand pollers at a few seconds' interval.
CONNECTION_LIMIT = 100
# Longer than a typical poll interval, so an idle poller finds its connection still open.
KEEPALIVE_SECONDS = 60.0


@dataclass
class _Lease:
    session: aiohttp.ClientSession
    holders: int = 0


_sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _Lease]] = (
    weakref.WeakKeyDictionary()
)


def _new_session() -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=CONNECTION_LIMIT, keepalive_timeout=KEEPALIVE_SECONDS, ttl_dns_cache=300
    )
    # No default headers: the API key differs per connection and is sent per request.
    return aiohttp.ClientSession(connector=connector, headers={"User-Agent": USER_AGENT}, trust_env=False)


@asynccontextmanager
async def leased_session(base_url: str) -> AsyncIterator[aiohttp.ClientSession]:
    """
    Hold the shared session for the running loop and ``base_url``.

    :param base_url: The versioned API base URL; one session per distinct value.
    """
    loop = asyncio.get_running_loop()
    by_url = _sessions.setdefault(loop, {})
    lease = by_url.get(base_url)
    if lease is None or lease.session.closed:
        lease = by_url[base_url] = _Lease(_new_session())
    lease.holders += 1
    try:
        yield lease.session
    finally:
        lease.holders -= 1
        if lease.holders == 0 and by_url.get(base_url) is lease:
            del by_url[base_url]
            await lease.session.close()


def open_session_count() -> int:
    """How many shared sessions are open on the running loop (for tests and benchmarks)."""
    return len(_sessions.get(asyncio.get_running_loop(), {}))
