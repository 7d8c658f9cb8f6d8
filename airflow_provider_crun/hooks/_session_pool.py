"""
One pooled ``aiohttp.ClientSession`` per event loop and base URL, shared by every trigger.

A triggerer runs hundreds of triggers on one event loop. A session per call opens a TCP (and
TLS) connection per poll; one shared session keeps a small pool of keep-alive connections
instead. Callers take a *lease*: the session lives while at least one lease is held and is
closed when the last one is released, so nothing is left unclosed when a loop ends.

Also here: :func:`proxy_for`, the one proxy rule both transports follow.
"""

from __future__ import annotations

import asyncio
import functools
import os
import urllib.request
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp

from airflow_provider_crun.protocol.calls import USER_AGENT

# aiohttp's default; enough for a thousand pollers at a few seconds' interval.
CONNECTION_LIMIT = 100
# Longer than a typical poll interval, so an idle poller finds its connection still open.
KEEPALIVE_SECONDS = 60.0


def proxy_for(
    url: str, explicit: str | None, environment: tuple[str | None, ...] | None = None
) -> str | None:
    """
    The proxy a Crun call to ``url`` goes through, or ``None`` for a direct connection.

    One rule for both transports; each passes the answer explicitly:

    1. An explicit proxy (the connection's ``proxy`` extra) wins over the environment, and
       ``NO_PROXY`` does not apply to it: what ``requests`` does with its own ``proxies=``.
    2. Otherwise the environment's proxy for the URL's scheme (``HTTPS_PROXY`` for ``https://``,
       ``HTTP_PROXY`` for ``http://``; lower-case names first), unless ``NO_PROXY`` names the
       host: :func:`urllib.request.proxy_bypass` on the bare host name, so an exact name, a
       domain suffix (``crun.ai`` or ``.crun.ai``) or ``*``. Not a CIDR range, and a
       ``host:port`` entry does not match. ``ALL_PROXY`` is not read.

    Rule 2 is exactly the lookup an aiohttp session with ``trust_env=True`` makes by itself;
    ``requests`` alone would also honour CIDR ranges and ``ALL_PROXY``. Both transports run with
    ``trust_env`` off and pass this answer instead.

    The API key travels only in the request. To an ``https://`` URL (Crun itself; the settings
    allow plain ``http://`` for loopback hosts only) it goes inside the TLS tunnel opened with
    ``CONNECT``: a proxy sees the target host and port, never the key. A plain-http loopback URL
    (the emulator) that a proxy applies to is forwarded to it in clear, key included.

    :param url: The full request URL.
    :param explicit: The connection's ``proxy`` extra, if set.
    :param environment: The :func:`proxy_environment` to apply; read now when ``None``. A shared
        session passes the one read when it opened.
    """
    if explicit:
        return explicit
    return _environment_proxy_for(url, proxy_environment() if environment is None else environment)


def proxy_environment() -> tuple[str | None, ...]:
    """
    The values of the variables the proxy rule depends on, in :data:`PROXY_VARIABLES` order.

    Only these are read: urllib's own lookup walks the whole environment, which on every poll of
    a thousand triggers was most of their CPU. Even these seven lookups cost about as much as a
    tenth of a poll, so a shared session reads them once, when it opens.
    """
    return tuple(os.environ.get(name) for name in PROXY_VARIABLES)


# What urllib.request.getproxies() / proxy_bypass() read for http(s); REQUEST_METHOD makes it
# ignore HTTP_PROXY in a CGI process.
PROXY_VARIABLES = (
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "no_proxy",
    "NO_PROXY",
    "REQUEST_METHOD",
)


# NO_PROXY matching exactly as urllib (and so aiohttp) does it; typeshed does not declare it.
_bypass: Callable[[str, dict[str, str]], bool] = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]


@functools.lru_cache(maxsize=256)
def _environment_proxy_for(url: str, environment: tuple[str | None, ...]) -> str | None:
    """:func:`proxy_for` without an explicit proxy, from the :func:`proxy_environment` given."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return None
    values = dict(zip(PROXY_VARIABLES, environment, strict=True))
    proxy = _variable(values, scheme)
    no_proxy = _variable(values, "no")
    if not proxy or (no_proxy and _bypass(parts.hostname, {"no": no_proxy})):
        return None
    return proxy


def _variable(values: dict[str, str | None], prefix: str) -> str | None:
    """``<prefix>_proxy`` as :func:`urllib.request.getproxies_environment` resolves it."""
    lower = values.get(f"{prefix}_proxy")
    if lower is not None:
        # Set, even empty, the lower-case name decides.
        return lower or None
    if prefix == "http" and values.get("REQUEST_METHOD") is not None:
        # CVE-2016-1000110: in a CGI process HTTP_PROXY may come from a client's "Proxy:" header.
        return None
    return values.get(f"{prefix.upper()}_PROXY") or None


@dataclass
class SessionLease:
    """
    A shared session, how many hold it, and the proxy environment read when it opened.

    A triggerer's environment does not change while it runs; a session opened later (after
    every trigger of a base URL finished) reads it again.
    """

    session: aiohttp.ClientSession
    proxy_environment: tuple[str | None, ...] = field(default_factory=proxy_environment)
    holders: int = 0


_sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, SessionLease]] = (
    weakref.WeakKeyDictionary()
)


def _new_session() -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=CONNECTION_LIMIT, keepalive_timeout=KEEPALIVE_SECONDS, ttl_dns_cache=300
    )
    # No default headers: the API key differs per connection and is sent per request.
    # No trust_env: the transport passes proxy_for()'s answer explicitly, and trust_env would also
    # send a ~/.netrc entry to Crun as Basic auth (reading the file on every request).
    return aiohttp.ClientSession(connector=connector, headers={"User-Agent": USER_AGENT}, trust_env=False)


@asynccontextmanager
async def leased_session(base_url: str) -> AsyncIterator[aiohttp.ClientSession]:
    """
    Hold the shared session for the running loop and ``base_url``.

    :param base_url: The versioned API base URL; one session per distinct value.
    """
    async with hold_lease(base_url) as lease:
        yield lease.session


class hold_lease:
    """
    :func:`leased_session`, yielding the lease: the session and its proxy environment.

    A class rather than an ``@asynccontextmanager``: every trigger holds one for its whole life,
    and a generator-based one keeps four more objects per trigger alive for the collector.
    """

    __slots__ = ("_base_url", "_lease")

    def __init__(self, base_url: str) -> None:
        self._base_url = base_url
        self._lease: SessionLease | None = None

    async def __aenter__(self) -> SessionLease:
        by_url = _sessions.setdefault(asyncio.get_running_loop(), {})
        lease = by_url.get(self._base_url)
        if lease is None or lease.session.closed:
            lease = by_url[self._base_url] = SessionLease(_new_session())
        lease.holders += 1
        self._lease = lease
        return lease

    async def __aexit__(self, *exc_info: object) -> None:
        lease, self._lease = self._lease, None
        assert lease is not None, "hold_lease exited without being entered"
        lease.holders -= 1
        by_url = _sessions.get(asyncio.get_running_loop(), {})
        if lease.holders == 0 and by_url.get(self._base_url) is lease:
            del by_url[self._base_url]
            await lease.session.close()


def open_session_count() -> int:
    """How many shared sessions are open on the running loop (for tests and benchmarks)."""
    return len(_sessions.get(asyncio.get_running_loop(), {}))
