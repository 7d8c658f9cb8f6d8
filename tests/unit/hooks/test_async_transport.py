"""
The async transport: which aiohttp failures may have reached Crun, and what one exchange sends.

``ASYNC_TABLE`` is the module docstring's table as data: one row per exception class the
installed aiohttp raises, built with the arguments aiohttp itself passes (the loopback
integration tests raise the common ones for real).
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiohttp
import aiohttp.client_exceptions as cx
import pytest
from aiohttp.client_reqrep import ConnectionKey, RequestInfo
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from airflow_provider_crun.hooks import _async_transport
from airflow_provider_crun.protocol import errors
from tests.support.transport import API_KEY, BASE_URL, CREATE, READ, settings

KEY = ConnectionKey("api.crun.ai", 443, True, True, None, None, None, None)
INFO = RequestInfo(URL(BASE_URL + CREATE.path), "POST", CIMultiDictProxy(CIMultiDict()), URL(BASE_URL))
REFUSED = ConnectionRefusedError(111, "Connect call failed ('203.0.113.7', 443)")


@dataclass(frozen=True)
class Row:
    """One line of the table: how the failure is built, whether it may have reached Crun, why."""

    name: str
    make: Callable[[], BaseException]
    sent: bool
    why: str


ASYNC_TABLE: list[Row] = [
    # -- certainly not written: a creation call may be sent again -----------------------------
    Row("connector", lambda: aiohttp.ClientConnectorError(KEY, REFUSED), False, "refused, in the connector"),
    Row(
        "connector-dns",
        lambda: aiohttp.ClientConnectorDNSError(KEY, socket.gaierror(-2, "Name or service not known")),
        False,
        "DNS failed",
    ),
    Row(
        "proxy-connection",
        lambda: aiohttp.ClientProxyConnectionError(KEY, REFUSED),
        False,
        "no TCP connection to the proxy",
    ),
    Row(
        "unix-connector",
        lambda: cx.UnixClientConnectorError("/run/crun.sock", KEY, REFUSED),
        False,
        "no connection to the socket",
    ),
    Row(
        "connector-ssl",
        lambda: aiohttp.ClientConnectorSSLError(KEY, ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER]")),
        False,
        "TLS handshake failed; raised only from the connector",
    ),
    Row(
        "connector-certificate",
        lambda: aiohttp.ClientConnectorCertificateError(
            KEY, ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED]")
        ),
        False,
        "certificate refused in the handshake",
    ),
    Row(
        "connection-timeout",
        lambda: aiohttp.ConnectionTimeoutError("Connection timeout to host https://api.crun.ai"),
        False,
        "the connect phase timed out in the connector",
    ),
    Row(
        "http-proxy-error",
        lambda: aiohttp.ClientHttpProxyError(INFO, (), status=403, message="Forbidden"),
        False,
        "the proxy refused CONNECT",
    ),
    Row(
        "fingerprint-mismatch",
        lambda: aiohttp.ServerFingerprintMismatch(b"a" * 32, b"b" * 32, "api.crun.ai", 443),
        False,
        "checked right after the handshake",
    ),
    Row("invalid-url", lambda: aiohttp.InvalidURL("https://"), False, "refused before connecting"),
    Row("invalid-url-client", lambda: aiohttp.InvalidUrlClientError("https://"), False, "before connecting"),
    Row("non-http-url", lambda: aiohttp.NonHttpUrlClientError("ftp://x"), False, "before connecting"),
    # -- may have reached Crun: a creation call is never sent again --------------------------
    Row(
        "invalid-url-redirect",
        lambda: aiohttp.InvalidUrlRedirectClientError("https://"),
        True,
        "a redirect answer came back first",
    ),
    Row(
        "non-http-url-redirect",
        lambda: aiohttp.NonHttpUrlRedirectClientError("ftp://x"),
        True,
        "a redirect answer came back first",
    ),
    Row("redirect-client", lambda: aiohttp.RedirectClientError("x"), True, "after a redirect answer"),
    Row("too-many-redirects", lambda: aiohttp.TooManyRedirects(INFO, ()), True, "after answers"),
    Row(
        "ssl-error-bare",
        lambda: aiohttp.ClientSSLError(KEY, ssl.SSLError(1, "[SSL] bad record")),
        True,
        "aiohttp never raises it itself: unknown origin",
    ),
    Row(
        "os-error-tls-after-handshake",
        lambda: aiohttp.ClientOSError(1, "[SSL: DECRYPTION_FAILED_OR_BAD_RECORD_MAC] decryption failed"),
        True,
        "what a TLS error while reading the answer becomes",
    ),
    Row(
        "os-error-reset",
        lambda: aiohttp.ClientOSError(104, "Connection reset by peer"),
        True,
        "reset after (or while) writing",
    ),
    Row("server-disconnected", lambda: aiohttp.ServerDisconnectedError(), True, "closed after writing"),
    Row(
        "connection-reset",
        lambda: aiohttp.ClientConnectionResetError("Cannot write to closing transport"),
        True,
        "broke while writing",
    ),
    Row(
        "connection-error",
        lambda: aiohttp.ClientConnectionError("Connection closed"),
        True,
        "broke while writing or reading",
    ),
    Row("server-connection", lambda: aiohttp.ServerConnectionError(), True, "unknown stage"),
    Row(
        "socket-timeout",
        lambda: aiohttp.SocketTimeoutError("Timeout on reading data from socket"),
        True,
        "sock_read expired awaiting the answer",
    ),
    Row("server-timeout", lambda: aiohttp.ServerTimeoutError("timeout"), True, "unknown stage"),
    Row("timeout-error", lambda: TimeoutError(), True, "the total timeout fires at any stage"),
    Row(
        "payload",
        lambda: aiohttp.ClientPayloadError("Response payload is not completed"),
        True,
        "broken answer body",
    ),
    Row(
        "response",
        lambda: aiohttp.ClientResponseError(INFO, (), status=400, message="Invalid status line"),
        True,
        "a malformed answer",
    ),
    Row("content-type", lambda: aiohttp.ContentTypeError(INFO, ()), True, "after an answer"),
    Row("ws-handshake", lambda: aiohttp.WSServerHandshakeError(INFO, ()), True, "after an answer"),
    Row(
        "upload-aborted",
        lambda: aiohttp.UploadAbortedError("The request body was not fully sent"),
        True,
        "part of the body was sent",
    ),
    Row("client-error-bare", lambda: aiohttp.ClientError("boom"), True, "unknown"),
    Row("os-error", lambda: OSError("boom"), True, "unknown"),
]


@pytest.mark.parametrize("row", ASYNC_TABLE, ids=lambda row: row.name)
def test_request_was_sent_follows_the_table(row: Row) -> None:
    assert _async_transport.request_was_sent(row.make()) is row.sent, row.why


def test_the_table_covers_every_aiohttp_client_error() -> None:
    """A new aiohttp exception class fails here until it gets a row."""
    listed = {type(row.make()) for row in ASYNC_TABLE}
    defined = {
        cls
        for cls in vars(cx).values()
        if inspect.isclass(cls) and issubclass(cls, aiohttp.ClientError) and cls.__module__ == cx.__name__
    }
    assert defined - listed == set()


def test_the_class_hierarchy_the_table_relies_on() -> None:
    """What the installed aiohttp must still look like for the table to hold."""
    assert issubclass(aiohttp.ClientSSLError, aiohttp.ClientConnectorError)
    assert issubclass(aiohttp.ClientConnectorSSLError, aiohttp.ClientSSLError)
    assert issubclass(aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError)
    assert issubclass(aiohttp.ClientProxyConnectionError, aiohttp.ClientConnectorError)
    assert issubclass(aiohttp.ClientConnectorDNSError, aiohttp.ClientConnectorError)
    assert issubclass(aiohttp.ConnectionTimeoutError, aiohttp.ServerTimeoutError)
    assert issubclass(aiohttp.SocketTimeoutError, aiohttp.ServerTimeoutError)
    assert issubclass(aiohttp.ServerTimeoutError, asyncio.TimeoutError)
    assert issubclass(aiohttp.ClientHttpProxyError, aiohttp.ClientResponseError)
    assert issubclass(aiohttp.InvalidUrlRedirectClientError, aiohttp.InvalidURL)
    assert issubclass(aiohttp.NonHttpUrlRedirectClientError, aiohttp.NonHttpUrlClientError)


# -- send_once ---------------------------------------------------------------------------------


class FakeResponse:
    status = 200
    headers: dict[str, str] = {"Content-Type": "application/json"}

    async def read(self) -> bytes:
        return b'{"code": 200, "message": "success", "data": {"task_id": "t1"}}'


class FakeExchange:
    def __init__(self, error: BaseException | None) -> None:
        self.error = error

    async def __aenter__(self) -> FakeResponse:
        if self.error is not None:
            raise self.error
        return FakeResponse()

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None


class FakeSession:
    """Records what ``send_once`` asks for; fails with ``error`` if given."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def request(self, method: str, url: str, **kwargs: Any) -> FakeExchange:
        self.calls.append((method, url, kwargs))
        return FakeExchange(self.error)


@pytest.mark.parametrize("row", ASYNC_TABLE, ids=lambda row: row.name)
async def test_send_once_raises_every_row_as_a_transport_error(row: Row) -> None:
    session = FakeSession(row.make())
    with pytest.raises(errors.TransportError) as caught:
        await _async_transport.send_once(session, settings(), CREATE)  # type: ignore[arg-type]
    assert caught.value.request_sent is row.sent
    assert len(session.calls) == 1


async def test_send_once_lets_programming_errors_through() -> None:
    with pytest.raises(TypeError):
        await _async_transport.send_once(FakeSession(TypeError("a bug")), settings(), CREATE)  # type: ignore[arg-type]


async def test_send_once_sends_one_request_and_returns_data() -> None:
    session = FakeSession()
    assert await _async_transport.send_once(session, settings(), CREATE) == {"task_id": "t1"}  # type: ignore[arg-type]
    [(method, url, kwargs)] = session.calls
    assert (method, url) == ("POST", BASE_URL + CREATE.path)
    assert kwargs["headers"]["x-api-key"] == API_KEY
    assert kwargs["allow_redirects"] is False
    assert kwargs["proxy"] is None


def test_timeouts_bound_the_connect_and_the_whole_exchange_with_no_per_read_timer() -> None:
    timeout = _async_transport.client_timeout(settings(timeout=7.0))
    assert timeout.connect == 7.0
    assert timeout.sock_read is None  # re-armed on every chunk: two timer operations per poll
    # The overall cap leaves the connect timeout room to fire first, as a "never sent" error.
    assert timeout.total is not None
    assert timeout.total > timeout.connect


async def test_the_environments_https_proxy_is_passed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://env-proxy:3128")
    session = FakeSession()
    await _async_transport.send_once(session, settings(), READ)  # type: ignore[arg-type]
    assert session.calls[0][2]["proxy"] == "http://env-proxy:3128"


async def test_the_explicit_proxy_wins_over_the_environment_and_no_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://env-proxy:3128")
    monkeypatch.setenv("NO_PROXY", "api.crun.ai")
    session = FakeSession()
    await _async_transport.send_once(session, settings(proxy="http://explicit:8080"), READ)  # type: ignore[arg-type]
    assert session.calls[0][2]["proxy"] == "http://explicit:8080"


async def test_no_proxy_leaves_the_proxy_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://env-proxy:3128")
    monkeypatch.setenv("NO_PROXY", "crun.ai")
    session = FakeSession()
    await _async_transport.send_once(session, settings(), READ)  # type: ignore[arg-type]
    assert session.calls[0][2]["proxy"] is None
