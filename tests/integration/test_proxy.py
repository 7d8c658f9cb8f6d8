"""
Proxies, through a real forward proxy on 127.0.0.1, for both transports.

The target is an HTTPS loopback server with a self-signed certificate, so a proxy that is used
sees a ``CONNECT`` and ciphertext only; the proxy records every byte that crosses it, and no test
may find the API key there. Neither ``requests`` nor aiohttp bypasses loopback hosts by itself
on Linux (only ``NO_PROXY`` does), and the proxy's ``CONNECT`` count proves each route.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from airflow_provider_crun.hooks import _async_transport, _sync_transport
from airflow_provider_crun.hooks._session_pool import hold_lease
from airflow_provider_crun.protocol import calls, errors, retry
from airflow_provider_crun.protocol.settings import CrunConnectionSettings
from tests.support import sockets
from tests.support.fakes import FakeClock
from tests.support.proxy import ForwardProxy, clear_proxy_env
from tests.support.tls import TlsFiles

pytestmark = pytest.mark.integration

API_KEY = "crun-proxy-key-5ecr3t-77b0"
MAX_RETRIES = 3
LOG = logging.getLogger("tests.proxy")
READ = calls.task_info_request("task-1")
CREATE = calls.create_task_request(
    "image-face-swap", {"image_url": "https://x/a.png", "new_face": "https://x/b.png"}
)
TRANSPORTS = ["sync", "async"]


@pytest.fixture(autouse=True)
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_proxy_env(monkeypatch)


@pytest.fixture
def crun(tls: TlsFiles) -> Iterator[sockets.LoopbackServer]:
    """An HTTPS stand-in for Crun on 127.0.0.1 that answers every request."""
    with sockets.LoopbackServer(sockets.answering({"task_id": "t1"}), tls=tls.server_context()) as server:
        yield server


@pytest.fixture
def proxy() -> Iterator[ForwardProxy]:
    with ForwardProxy() as running:
        yield running


def settings(origin: str, **overrides: Any) -> CrunConnectionSettings:
    values: dict[str, Any] = {"timeout": 5.0, "max_retries": MAX_RETRIES, **overrides}
    return CrunConnectionSettings(base_url=origin + "/api/v1", api_key=API_KEY, **values)


def send(
    transport: str, conn: CrunConnectionSettings, tls: TlsFiles, request: calls.CrunRequest = READ
) -> Any:
    """One call through ``transport``: sync with its retry loop, async as one exchange."""
    if transport == "sync":
        session = requests.Session()
        session.verify = str(tls.cert)
        try:
            return _sync_transport.call(session, conn, request, clock=FakeClock(), log=LOG)
        finally:
            session.close()

    async def exchange() -> Any:
        # The triggers' own path: the pooled session (trust_env off) and its proxy snapshot.
        async with hold_lease(conn.base_url) as lease:
            return await _async_transport.send_once(
                lease.session,
                conn,
                request,
                _async_transport.tls_context(str(tls.cert)),
                lease.proxy_environment,
            )

    return asyncio.run(exchange())


def assert_tunnelled_without_the_key(proxy: ForwardProxy, crun: sockets.LoopbackServer) -> None:
    assert proxy.connects == 1
    assert proxy.forwarded == 0
    [connect] = proxy.requests
    assert connect.target == f"localhost:{crun.port}"
    assert "x-api-key" not in connect.headers
    assert not proxy.saw(API_KEY.encode())
    [received] = crun.received
    assert received.headers["x-api-key"] == API_KEY


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_environments_https_proxy_tunnels_and_never_sees_the_key(
    transport: str,
    tls: TlsFiles,
    crun: sockets.LoopbackServer,
    proxy: ForwardProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    assert send(transport, settings(crun.url("localhost")), tls) == {"task_id": "t1"}
    assert_tunnelled_without_the_key(proxy, crun)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_explicit_proxy_tunnels_and_never_sees_the_key(
    transport: str, tls: TlsFiles, crun: sockets.LoopbackServer, proxy: ForwardProxy
) -> None:
    assert send(transport, settings(crun.url("localhost"), proxy=proxy.url), tls) == {"task_id": "t1"}
    assert_tunnelled_without_the_key(proxy, crun)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_creation_through_the_proxy_never_shows_the_key_either(
    transport: str,
    tls: TlsFiles,
    crun: sockets.LoopbackServer,
    proxy: ForwardProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    send(transport, settings(crun.url("localhost")), tls, CREATE)
    assert_tunnelled_without_the_key(proxy, crun)
    assert not proxy.saw(b"image-face-swap")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_explicit_proxy_wins_over_the_environments(
    transport: str,
    tls: TlsFiles,
    crun: sockets.LoopbackServer,
    proxy: ForwardProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with ForwardProxy() as decoy:
        monkeypatch.setenv("HTTPS_PROXY", decoy.url)
        send(transport, settings(crun.url("localhost"), proxy=proxy.url), tls)
    assert decoy.connects == 0
    assert_tunnelled_without_the_key(proxy, crun)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_explicit_proxy_ignores_no_proxy(
    transport: str,
    tls: TlsFiles,
    crun: sockets.LoopbackServer,
    proxy: ForwardProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As with requests' own ``proxies=``: NO_PROXY is about the environment's proxies only."""
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    send(transport, settings(crun.url("localhost"), proxy=proxy.url), tls)
    assert_tunnelled_without_the_key(proxy, crun)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_no_proxy_naming_the_host_bypasses_the_environments_proxy(
    transport: str,
    tls: TlsFiles,
    crun: sockets.LoopbackServer,
    proxy: ForwardProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert send(transport, settings(crun.url("127.0.0.1")), tls) == {"task_id": "t1"}
    assert proxy.requests == []
    assert crun.count() == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_no_proxy_matches_names_not_addresses(
    transport: str,
    tls: TlsFiles,
    crun: sockets.LoopbackServer,
    proxy: ForwardProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``localhost`` is not ``127.0.0.1`` to NO_PROXY, in either transport."""
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    send(transport, settings(crun.url("localhost")), tls)
    assert_tunnelled_without_the_key(proxy, crun)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_cidr_no_proxy_entry_bypasses_in_neither_transport(
    transport: str,
    tls: TlsFiles,
    crun: sockets.LoopbackServer,
    proxy: ForwardProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """requests alone would bypass 127.0.0.1 for ``127.0.0.0/8`` and aiohttp would not: both do not."""
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.0/8")
    send(transport, settings(crun.url("127.0.0.1")), tls)
    assert proxy.connects == 1
    assert not proxy.saw(API_KEY.encode())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_proxy_credentials_go_to_the_proxy_and_the_key_does_not(
    transport: str, tls: TlsFiles, crun: sockets.LoopbackServer, proxy: ForwardProxy
) -> None:
    authenticated = proxy.url.replace("http://", "http://squid:pa55@")
    send(transport, settings(crun.url("localhost"), proxy=authenticated), tls)
    assert_tunnelled_without_the_key(proxy, crun)
    assert proxy.requests[0].headers["proxy-authorization"] == "Basic c3F1aWQ6cGE1NQ=="


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_proxy_refusing_the_tunnel_means_the_creation_was_not_sent(
    transport: str, tls: TlsFiles, crun: sockets.LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refused CONNECT happens before a request byte: even a creation is tried again."""
    with ForwardProxy(refuse_connect=403) as refusing:
        monkeypatch.setenv("HTTPS_PROXY", refusing.url)
        with pytest.raises(errors.TransportError) as caught:
            send(transport, settings(crun.url("localhost")), tls, CREATE)
    # The sync transport retries by itself; the async one makes one attempt (its trigger retries).
    assert refusing.connects == (MAX_RETRIES + 1 if transport == "sync" else 1)
    assert caught.value.request_sent is False
    assert retry.is_retryable(caught.value, creates_billable=True)
    assert crun.count() == 0
    assert not refusing.saw(API_KEY.encode())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_plain_http_loopback_url_follows_http_proxy_alike(
    transport: str, tls: TlsFiles, proxy: ForwardProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    The emulator's plain-http loopback URL follows HTTP_PROXY the same way in both transports.

    Such a proxy is forwarded the request in clear, key included, as for any plain-http URL;
    only a loopback host may be plain http, and Crun itself is always reached through CONNECT.
    """
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    with sockets.LoopbackServer(sockets.answering({"task_id": "t1"})) as emulator:
        assert send(transport, settings(emulator.url("localhost")), tls) == {"task_id": "t1"}
    assert proxy.forwarded == 1
    assert proxy.connects == 0
    assert emulator.count() == 1
    # The recorder does catch a key that crosses in clear: the other tests' "never saw" holds.
    assert proxy.saw(API_KEY.encode())
