"""The pooled aiohttp session (one per loop and base URL, closed on the last lease) and the proxy rule."""

from __future__ import annotations

import asyncio
import threading

import aiohttp
import pytest
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from airflow_provider_crun.hooks import _session_pool
from airflow_provider_crun.hooks._session_pool import (
    hold_lease,
    leased_session,
    open_session_count,
    proxy_for,
)

BASE = "https://api.crun.ai/api/v1"
OTHER = "https://eu.api.crun.ai/api/v1"


async def test_leases_on_one_loop_and_base_url_share_one_session() -> None:
    async with leased_session(BASE) as first, leased_session(BASE) as second:
        assert first is second
        assert open_session_count() == 1


async def test_each_base_url_gets_its_own_session() -> None:
    async with leased_session(BASE) as first, leased_session(OTHER) as second:
        assert first is not second
        assert open_session_count() == 2


async def test_each_event_loop_gets_its_own_session() -> None:
    seen: list[aiohttp.ClientSession] = []

    async def lease_on_this_loop() -> None:
        async with leased_session(BASE) as session:
            seen.append(session)

    async with leased_session(BASE) as here:
        thread = threading.Thread(target=asyncio.run, args=(lease_on_this_loop(),))
        thread.start()
        thread.join(10)
        assert not here.closed
    assert len(seen) == 1
    assert seen[0] is not here
    assert seen[0].closed


async def test_the_session_closes_with_the_last_lease_only() -> None:
    async with leased_session(BASE) as first:
        async with leased_session(BASE) as second:
            assert second is first
        assert not first.closed
        assert open_session_count() == 1
    assert first.closed
    assert open_session_count() == 0


async def test_a_new_lease_after_the_last_one_gets_a_new_session() -> None:
    async with leased_session(BASE) as first:
        pass
    async with leased_session(BASE) as second:
        assert second is not first
        assert not second.closed


async def test_a_session_closed_under_a_lease_is_replaced_and_survives_the_stale_lease() -> None:
    stale_lease = leased_session(BASE)
    stale = await stale_lease.__aenter__()
    await stale.close()
    fresh_lease = leased_session(BASE)
    fresh = await fresh_lease.__aenter__()
    assert fresh is not stale
    await stale_lease.__aexit__(None, None, None)
    assert not fresh.closed
    await fresh_lease.__aexit__(None, None, None)
    assert fresh.closed
    assert open_session_count() == 0


async def test_the_lease_is_released_when_the_caller_fails() -> None:
    with pytest.raises(RuntimeError):
        async with leased_session(BASE) as session:
            raise RuntimeError("the trigger failed")
    assert session.closed
    assert open_session_count() == 0


async def test_the_session_ignores_the_environment_and_netrc() -> None:
    async with leased_session(BASE) as session:
        # trust_env is off: proxies come from proxy_for(), and ~/.netrc must never reach Crun.
        assert session.trust_env is False


async def test_the_session_sends_no_default_api_key() -> None:
    async with leased_session(BASE) as session:
        assert {name.lower() for name in session.headers} == {"user-agent"}
        assert session.connector is not None
        assert session.connector.limit == _session_pool.CONNECTION_LIMIT


# -- the proxy rule ----------------------------------------------------------------------------

PROXY = "http://env-proxy:3128"

ENVIRONMENTS: dict[str, dict[str, str]] = {
    "none": {},
    "https-proxy": {"HTTPS_PROXY": PROXY},
    "https-proxy-lower": {"https_proxy": PROXY},
    "lower-wins": {"https_proxy": PROXY, "HTTPS_PROXY": "http://upper:1"},
    "no-proxy-exact": {"HTTPS_PROXY": PROXY, "NO_PROXY": "api.crun.ai"},
    "no-proxy-suffix": {"HTTPS_PROXY": PROXY, "NO_PROXY": "crun.ai"},
    "no-proxy-dot-suffix": {"HTTPS_PROXY": PROXY, "NO_PROXY": ".crun.ai"},
    "no-proxy-star": {"HTTPS_PROXY": PROXY, "NO_PROXY": "*"},
    "no-proxy-with-port": {"HTTPS_PROXY": PROXY, "NO_PROXY": "api.crun.ai:443"},
    "no-proxy-cidr": {"HTTPS_PROXY": PROXY, "NO_PROXY": "10.0.0.0/8"},
    "no-proxy-loopback": {"HTTPS_PROXY": PROXY, "HTTP_PROXY": PROXY, "NO_PROXY": "localhost,127.0.0.1"},
    "http-proxy-only": {"HTTP_PROXY": PROXY},
    "all-proxy-only": {"ALL_PROXY": PROXY},
    "https-scheme-proxy": {"HTTPS_PROXY": "https://tls-proxy:443"},
}
URLS = [
    "https://api.crun.ai/api/v1/client/job/TaskInfo",
    "https://API.Crun.AI:8443/api/v1",
    "https://notcrun.ai/api/v1",
    "https://10.1.2.3/api/v1",
    "https://localhost:8443/api/v1",
    "https://127.0.0.1:8443/api/v1",
    "http://127.0.0.1:8089/api/v1",
    "http://localhost:8089/api/v1",
]


def aiohttp_env_proxy(url: str) -> str | None:
    """What an aiohttp session with ``trust_env=True`` picks when no ``proxy=`` is given."""
    try:
        proxy, _auth = get_env_proxy_for_url(URL(url))
    except LookupError:
        return None
    return str(proxy)


@pytest.mark.parametrize("url", URLS)
@pytest.mark.parametrize("environment", ENVIRONMENTS.values(), ids=ENVIRONMENTS.keys())
def test_proxy_for_agrees_with_aiohttps_own_environment_lookup(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], url: str
) -> None:
    """Where the rule says "direct", a trust_env session left alone also goes direct."""
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    ours = proxy_for(url, None)
    theirs = aiohttp_env_proxy(url)
    if ours is None:
        assert theirs is None
    elif theirs is None:
        # aiohttp ignores https:// proxies from the environment; the transport passes it on.
        assert ours.startswith("https://")
    else:
        assert URL(ours) == URL(theirs)


@pytest.mark.parametrize("url", URLS)
def test_an_explicit_proxy_always_wins(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("HTTPS_PROXY", PROXY)
    monkeypatch.setenv("HTTP_PROXY", PROXY)
    monkeypatch.setenv("NO_PROXY", "*")
    assert proxy_for(url, "http://explicit:8080") == "http://explicit:8080"


@pytest.mark.parametrize(
    ("environment", "url", "expected"),
    [
        ({"HTTPS_PROXY": PROXY}, "https://api.crun.ai/api/v1", PROXY),
        ({"HTTPS_PROXY": PROXY, "NO_PROXY": "crun.ai"}, "https://api.crun.ai/api/v1", None),
        ({"HTTPS_PROXY": PROXY, "NO_PROXY": "crun.ai"}, "https://notcrun.ai/api/v1", PROXY),
        ({"HTTPS_PROXY": PROXY, "NO_PROXY": "127.0.0.1"}, "https://127.0.0.1:8443/api/v1", None),
        ({"HTTPS_PROXY": PROXY, "NO_PROXY": "127.0.0.1"}, "https://localhost:8443/api/v1", PROXY),
        ({"HTTPS_PROXY": PROXY, "NO_PROXY": "10.0.0.0/8"}, "https://10.1.2.3/api/v1", PROXY),
        ({"HTTPS_PROXY": PROXY, "NO_PROXY": "api.crun.ai:443"}, "https://api.crun.ai/api/v1", PROXY),
        ({"HTTP_PROXY": PROXY}, "https://api.crun.ai/api/v1", None),
        ({"HTTP_PROXY": PROXY}, "http://127.0.0.1:8089/api/v1", PROXY),
        ({"ALL_PROXY": PROXY}, "https://api.crun.ai/api/v1", None),
        ({}, "https://api.crun.ai/api/v1", None),
    ],
)
def test_the_documented_rule(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], url: str, expected: str | None
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert proxy_for(url, None) == expected


async def test_a_shared_session_reads_the_proxy_environment_once_when_it_opens(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A thousand pollers share one read of the environment; the next session reads it again."""
    monkeypatch.delenv("https_proxy", raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy-one:3128")
    async with hold_lease(BASE) as lease:
        monkeypatch.setenv("HTTPS_PROXY", "http://proxy-two:3128")
        held = lease.proxy_environment
    async with hold_lease(BASE) as reopened:
        fresh = reopened.proxy_environment

    url = "https://api.crun.example/api/v1/client/job/TaskInfo"
    assert proxy_for(url, None, held) == "http://proxy-one:3128"
    assert proxy_for(url, None, fresh) == "http://proxy-two:3128"
