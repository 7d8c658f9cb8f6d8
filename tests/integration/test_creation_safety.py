"""
Creation safety against real loopback sockets, for both transports.

Each server misbehaves at one precise moment and counts the complete requests it read. A
creation call (billed, no idempotency key on Crun) must never reach a server twice; a read is
retried. The sync transport retries itself (tenacity); the async transport makes one attempt and
leaves retries to the trigger's loop, which :func:`run_async` plays here with the same
:func:`~airflow_provider_crun.protocol.retry.is_retryable` predicate.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import requests

from airflow_provider_crun.hooks import _async_transport, _sync_transport
from airflow_provider_crun.protocol import calls, errors, retry
from airflow_provider_crun.protocol.settings import CrunConnectionSettings
from tests.support import sockets
from tests.support.fakes import FakeClock
from tests.support.proxy import clear_proxy_env
from tests.support.tls import TlsFiles, self_signed

pytestmark = pytest.mark.integration

API_KEY = "crun-loopback-key-5ecr3t-4d1e"
MAX_RETRIES = 3
# Only the never-accepting listener waits for it; every other server fails at once.
TIMEOUT = 0.5
LOG = logging.getLogger("tests.creation_safety")

CREATE = calls.detect_faces_request("https://example.com/group.png")
READ = calls.detection_result_request("dit-1")


@pytest.fixture(autouse=True)
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_proxy_env(monkeypatch)


@pytest.fixture(scope="module")
def untrusted(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A second self-signed certificate that no client in these tests trusts."""
    return self_signed(tmp_path_factory.mktemp("untrusted"))


def settings(origin: str) -> CrunConnectionSettings:
    return CrunConnectionSettings(
        base_url=origin + "/api/v1", api_key=API_KEY, timeout=TIMEOUT, max_retries=MAX_RETRIES
    )


@dataclass
class Outcome:
    """How a call ended: its error and how many attempts the retry policy made."""

    error: errors.TransportError
    attempts: int


def run_sync(origin: str, request: calls.CrunRequest, cafile: Path) -> Outcome:
    """The sync transport's own retry loop, with a session trusting only ``cafile``."""
    session = requests.Session()
    session.verify = str(cafile)
    clock = FakeClock()
    try:
        with pytest.raises(errors.TransportError) as caught:
            _sync_transport.call(session, settings(origin), request, clock=clock, log=LOG)
    finally:
        session.close()
    return Outcome(caught.value, attempts=len(clock.sleeps) + 1)


async def run_async(origin: str, request: calls.CrunRequest, tls: TlsFiles) -> Outcome:
    """One-attempt exchanges, repeated as a trigger's poll loop would, in a trust_env session."""
    connector = aiohttp.TCPConnector(ssl=tls.client_context())
    async with aiohttp.ClientSession(connector=connector, trust_env=True) as session:
        attempts = 0
        while True:
            attempts += 1
            try:
                await _async_transport.send_once(session, settings(origin), request)
            except errors.TransportError as error:
                retryable = retry.is_retryable(error, creates_billable=request.creates_billable)
                if attempts > MAX_RETRIES or not retryable:
                    return Outcome(error, attempts)
            else:
                pytest.fail("the misbehaving server cannot have answered")


def run(transport: str, origin: str, request: calls.CrunRequest, tls: TlsFiles) -> Outcome:
    if transport == "sync":
        return run_sync(origin, request, tls.cert)
    return asyncio.run(run_async(origin, request, tls))


# -- servers that read the whole request, then fail: it may have reached Crun -----------------


@dataclass(frozen=True)
class AfterRequest:
    """A server that reads the request and then fails in one way."""

    name: str
    behaviour: sockets.Behaviour
    use_tls: bool
    # What the transports' messages name, as observed with the pinned versions.
    sync_errors: frozenset[str]
    async_errors: frozenset[str]


AFTER_REQUEST = [
    AfterRequest(
        "closed-without-answer",
        sockets.close_after_request,
        False,
        frozenset({"ConnectionError"}),
        frozenset({"ServerDisconnectedError"}),
    ),
    AfterRequest(
        "reset-mid-response",
        sockets.reset_mid_response,
        False,
        frozenset({"ChunkedEncodingError", "ConnectionError"}),
        frozenset({"ClientPayloadError", "ClientOSError", "ServerDisconnectedError"}),
    ),
    AfterRequest(
        "tls-then-broken-records",
        sockets.broken_tls_after_request,
        True,
        frozenset({"SSLError"}),
        frozenset({"ClientOSError"}),
    ),
    AfterRequest(
        "tls-then-reset-mid-response",
        sockets.reset_mid_response,
        True,
        frozenset({"ChunkedEncodingError", "ConnectionError", "SSLError"}),
        frozenset({"ClientPayloadError", "ClientOSError", "ServerDisconnectedError"}),
    ),
]


def named(error: errors.TransportError, names: frozenset[str]) -> bool:
    return any(f": {name}: " in error.message for name in names)


@pytest.mark.parametrize("transport", ["sync", "async"])
@pytest.mark.parametrize("case", AFTER_REQUEST, ids=lambda case: case.name)
def test_a_creation_that_reached_the_server_is_never_sent_again(
    case: AfterRequest, transport: str, tls: TlsFiles
) -> None:
    with sockets.LoopbackServer(case.behaviour, tls=tls.server_context() if case.use_tls else None) as server:
        outcome = run(transport, server.url(), CREATE, tls)
    assert outcome.error.request_sent is True
    assert retry.may_have_created(outcome.error)
    assert server.count("POST") == 1
    assert outcome.attempts == 1
    assert named(outcome.error, case.sync_errors if transport == "sync" else case.async_errors)
    assert API_KEY not in outcome.error.message
    assert server.errors == []


@pytest.mark.parametrize("transport", ["sync", "async"])
@pytest.mark.parametrize("case", AFTER_REQUEST, ids=lambda case: case.name)
def test_a_read_that_reached_the_server_is_retried(case: AfterRequest, transport: str, tls: TlsFiles) -> None:
    with sockets.LoopbackServer(case.behaviour, tls=tls.server_context() if case.use_tls else None) as server:
        outcome = run(transport, server.url(), READ, tls)
    assert outcome.error.request_sent is True
    assert outcome.attempts == MAX_RETRIES + 1
    if transport == "sync":
        assert server.count("GET") == MAX_RETRIES + 1
    else:
        # aiohttp re-sends a GET once itself when the connection is lost before the answer's
        # head (see test_aiohttp_itself_resends_a_get_but_never_a_post).
        assert MAX_RETRIES + 1 <= server.count("GET") <= 2 * (MAX_RETRIES + 1)


async def test_aiohttp_itself_resends_a_get_but_never_a_post(tls: TlsFiles) -> None:
    """
    One ``send_once`` is one attempt, but aiohttp re-sends an idempotent request once when the
    connection drops before the answer's head, fresh connection or not (RFC 9112 9.3.1). It
    never does so for a POST.
    """
    with sockets.LoopbackServer(sockets.close_after_request) as server:
        async with aiohttp.ClientSession(trust_env=True) as session:
            for request in (READ, CREATE):
                with pytest.raises(errors.TransportError):
                    await _async_transport.send_once(session, settings(server.url()), request)
    assert server.count("GET") == 2
    assert server.count("POST") == 1


# -- failures before the request: nothing reached Crun, so even a creation is retried ----------


@contextmanager
def refused() -> Iterator[str]:
    with sockets.refused_port() as port:
        yield f"http://127.0.0.1:{port}"


@contextmanager
def never_accepted() -> Iterator[str]:
    with sockets.unaccepting_port() as port:
        if port is None:
            pytest.skip("this kernel accepts connections beyond a full listen backlog")
        yield f"http://127.0.0.1:{port}"


@dataclass(frozen=True)
class BeforeRequest:
    name: str
    origin: Callable[[], AbstractContextManager[str]]
    sync_errors: frozenset[str]
    async_errors: frozenset[str]


BEFORE_REQUEST = [
    BeforeRequest("refused", refused, frozenset({"ConnectionError"}), frozenset({"ClientConnectorError"})),
    BeforeRequest(
        "never-accepted", never_accepted, frozenset({"ConnectTimeout"}), frozenset({"ConnectionTimeoutError"})
    ),
]


@pytest.mark.parametrize("transport", ["sync", "async"])
@pytest.mark.parametrize("request_", [CREATE, READ], ids=["create", "read"])
@pytest.mark.parametrize("case", BEFORE_REQUEST, ids=lambda case: case.name)
def test_a_call_that_never_connected_is_retried(
    case: BeforeRequest, request_: calls.CrunRequest, transport: str, tls: TlsFiles
) -> None:
    with case.origin() as origin:
        outcome = run(transport, origin, request_, tls)
    assert outcome.error.request_sent is False
    assert not retry.may_have_created(outcome.error)
    assert outcome.attempts == MAX_RETRIES + 1
    assert named(outcome.error, case.sync_errors if transport == "sync" else case.async_errors)


@pytest.mark.parametrize("transport", ["sync", "async"])
def test_an_untrusted_certificate_fails_in_the_handshake_before_the_request(
    transport: str, tls: TlsFiles, untrusted: TlsFiles
) -> None:
    """A certificate error can only happen in the handshake, so even a creation may be retried."""
    with sockets.LoopbackServer(
        sockets.answering({"detect_task_id": "d1"}), tls=untrusted.server_context()
    ) as server:
        outcome = run(transport, server.url(), CREATE, tls)
    assert outcome.error.request_sent is False
    assert server.count() == 0
    assert outcome.attempts == MAX_RETRIES + 1
    assert named(outcome.error, frozenset({"SSLError", "ClientConnectorCertificateError"}))


# -- a reused keep-alive connection --------------------------------------------------------


def answer_once_then_close_on_the_next(peer: sockets.Peer, server: sockets.LoopbackServer) -> None:
    """Answer the first request on the connection, then read the second and close."""
    server.record(peer.read_request())
    peer.send(sockets.envelope({"status": "processing"}))
    server.record(peer.read_request())
    peer.close()


def test_sync_never_resends_a_creation_on_a_dead_keep_alive_connection(tls: TlsFiles) -> None:
    with sockets.LoopbackServer(answer_once_then_close_on_the_next, tls=tls.server_context()) as server:
        session = requests.Session()
        session.verify = str(tls.cert)
        clock = FakeClock()
        try:
            _sync_transport.call(session, settings(server.url()), READ, clock=clock, log=LOG)
            with pytest.raises(errors.TransportError) as caught:
                _sync_transport.call(session, settings(server.url()), CREATE, clock=clock, log=LOG)
        finally:
            session.close()
    assert caught.value.request_sent is True
    assert server.connections == 1
    assert server.count("POST") == 1


async def test_async_never_resends_a_creation_on_a_dead_keep_alive_connection(tls: TlsFiles) -> None:
    with sockets.LoopbackServer(answer_once_then_close_on_the_next, tls=tls.server_context()) as server:
        connector = aiohttp.TCPConnector(ssl=tls.client_context())
        async with aiohttp.ClientSession(connector=connector, trust_env=True) as session:
            await _async_transport.send_once(session, settings(server.url()), READ)
            with pytest.raises(errors.TransportError) as caught:
                await _async_transport.send_once(session, settings(server.url()), CREATE)
    assert caught.value.request_sent is True
    assert server.connections == 1
    assert server.count("POST") == 1
