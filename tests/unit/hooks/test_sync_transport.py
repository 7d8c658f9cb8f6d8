"""
The sync transport: which ``requests`` / urllib3 failures may have reached Crun, and its retries.

``SYNC_TABLE`` is the module docstring's table as data: one row per way the installed
``requests`` and urllib3 report a failure, built the way their code builds it (the loopback
integration tests raise the common ones for real).
"""

from __future__ import annotations

import http.client
import inspect
import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import requests
import requests.exceptions as rx
import requests_mock
import urllib3.exceptions as ux
from urllib3.connection import HTTPSConnection
from urllib3.connectionpool import HTTPSConnectionPool
from urllib3.util.ssl_match_hostname import CertificateError as Urllib3CertificateError

from airflow_provider_crun.hooks import _sync_transport
from airflow_provider_crun.protocol import errors, retry
from tests.support.fakes import FakeClock
from tests.support.transport import API_KEY, BASE_URL, CREATE, READ, settings

CONN = HTTPSConnection("api.crun.ai", 443)
POOL = HTTPSConnectionPool("api.crun.ai", 443)
PATH = "/api/v1/client/job/CreateTask"
LOG = logging.getLogger("tests.sync_transport")


def max_retry(reason: Exception) -> ux.MaxRetryError:
    """What urllib3 raises once ``Retry(0, read=False)`` (requests' default) is exhausted."""
    return ux.MaxRetryError(POOL, PATH, reason)


def aborted(cause: BaseException) -> ux.ProtocolError:
    """urllib3's wrapper for an ``OSError`` / ``HTTPException`` on a connection it had open."""
    return ux.ProtocolError("Connection aborted.", cause)


@dataclass(frozen=True)
class Row:
    """One line of the table: how the failure is built, whether it may have reached Crun, why."""

    name: str
    make: Callable[[], Exception]
    sent: bool
    why: str


SYNC_TABLE: list[Row] = [
    # -- certainly not written: a creation call may be sent again -----------------------------
    Row(
        "connect-timeout",
        lambda: rx.ConnectTimeout(max_retry(ux.ConnectTimeoutError(CONN, "Connection timed out."))),
        False,
        "the TCP connect never completed",
    ),
    Row(
        "connection-refused",
        lambda: rx.ConnectionError(
            max_retry(ux.NewConnectionError(CONN, "Failed to establish a new connection: [Errno 111]"))
        ),
        False,
        "refused: nothing to write to",
    ),
    Row(
        "name-resolution",
        lambda: rx.ConnectionError(
            max_retry(ux.NameResolutionError("api.crun.ai", CONN, socket.gaierror(-2, "Name unknown")))
        ),
        False,
        "DNS failed before connecting",
    ),
    Row(
        "proxy-unreachable",
        lambda: rx.ProxyError(
            max_retry(ux.ProxyError("Unable to connect to proxy", ux.NewConnectionError(CONN, "refused")))
        ),
        False,
        "urllib3 wraps only errors before the proxy connection is up",
    ),
    Row(
        "proxy-error-unwrapped",
        lambda: rx.ProxyError(ux.ProxyError("Unable to connect to proxy", OSError("refused"))),
        False,
        "same, through requests' direct except-branch",
    ),
    Row(
        "proxy-refused-connect",
        lambda: rx.ConnectionError(aborted(OSError("Tunnel connection failed: 403 Forbidden"))),
        False,
        "http.client's _tunnel(), inside connect(), before a request byte",
    ),
    Row(
        "tls-certificate-verify-failed",
        lambda: rx.SSLError(
            max_retry(ux.SSLError(ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED]")))
        ),
        False,
        "certificates are checked only in the handshake",
    ),
    Row(
        "tls-hostname-mismatch",
        lambda: rx.SSLError(max_retry(ux.SSLError(Urllib3CertificateError("hostname doesn't match")))),
        False,
        "urllib3's own hostname check runs in connect()",
    ),
    Row(
        "closed-pool",
        lambda: rx.ConnectionError(ux.ClosedPoolError(POOL, "Pool is closed.")),
        False,
        "no connection was taken",
    ),
    Row(
        "empty-pool",
        lambda: ux.EmptyPoolError(POOL, "Pool is empty and a new connection can't be opened."),
        False,
        "no connection was taken (re-raised unwrapped by requests)",
    ),
    Row("invalid-url", lambda: rx.InvalidURL("No host supplied"), False, "refused while preparing"),
    Row("invalid-proxy-url", lambda: rx.InvalidProxyURL("malformed proxy"), False, "refused while preparing"),
    Row("missing-schema", lambda: rx.MissingSchema("No scheme supplied"), False, "refused while preparing"),
    Row(
        "invalid-schema", lambda: rx.InvalidSchema("No connection adapters"), False, "refused while preparing"
    ),
    Row("url-required", lambda: rx.URLRequired("A valid URL is required"), False, "refused while preparing"),
    Row(
        "invalid-header-in-request",
        lambda: rx.InvalidHeader("Invalid leading whitespace in header value"),
        False,
        "requests' own header check, while preparing",
    ),
    Row(
        "invalid-json-body",
        lambda: rx.InvalidJSONError(TypeError("Object of type datetime is not JSON serializable")),
        False,
        "the body could not be encoded",
    ),
    # -- may have reached Crun: a creation call is never sent again --------------------------
    Row(
        "tls-error-after-handshake",
        lambda: rx.SSLError(
            max_retry(ux.SSLError(ssl.SSLError(1, "[SSL: DECRYPTION_FAILED_OR_BAD_RECORD_MAC]")))
        ),
        True,
        "urllib3 raises SSLError while reading the answer too",
    ),
    Row(
        "tls-error-in-handshake",
        lambda: rx.SSLError(max_retry(ux.SSLError(ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER]")))),
        True,
        "indistinguishable from the same error after the request",
    ),
    Row(
        "read-timeout",
        lambda: rx.ReadTimeout(ux.ReadTimeoutError(POOL, PATH, "Read timed out. (read timeout=30)")),
        True,
        "the request was written; also how a TLS-handshake timeout looks",
    ),
    Row(
        "read-timeout-streaming-body",
        lambda: rx.ConnectionError(ux.ReadTimeoutError(POOL, PATH, "Read timed out.")),
        True,
        "the answer was under way",
    ),
    Row(
        "remote-disconnected",
        lambda: rx.ConnectionError(aborted(http.client.RemoteDisconnected("Remote end closed connection"))),
        True,
        "closed after the request was written",
    ),
    Row(
        "connection-reset",
        lambda: rx.ConnectionError(aborted(ConnectionResetError(104, "Connection reset by peer"))),
        True,
        "reset after (or while) writing",
    ),
    Row(
        "broken-pipe",
        lambda: rx.ConnectionError(aborted(BrokenPipeError(32, "Broken pipe"))),
        True,
        "part of the request may have been written",
    ),
    Row(
        "reset-mimicking-tunnel-text",
        lambda: rx.ConnectionError(aborted(ConnectionResetError(104, "Tunnel connection failed: 403 x"))),
        True,
        "only http.client's errno-less OSError means a refused tunnel",
    ),
    Row(
        "max-retries-other-reason",
        lambda: rx.ConnectionError(max_retry(aborted(ConnectionResetError(104, "reset")))),
        True,
        "with read retries configured, a broken exchange ends up here",
    ),
    Row(
        "chunked-encoding",
        lambda: rx.ChunkedEncodingError(ux.ProtocolError("Connection broken", ux.IncompleteRead(10, 20))),
        True,
        "broken answer body",
    ),
    Row(
        "content-decoding",
        lambda: rx.ContentDecodingError(ux.DecodeError("failed to decode gzip")),
        True,
        "broken answer body",
    ),
    Row(
        "invalid-header-in-answer",
        lambda: rx.InvalidHeader(ux.InvalidHeader("Content-Length contained multiple unmatching values")),
        True,
        "urllib3 parsed the answer's headers",
    ),
    Row(
        "retry-error",
        lambda: rx.RetryError(max_retry(ux.ResponseError("too many 500 error responses"))),
        True,
        "raised after answers",
    ),
    Row("too-many-redirects", lambda: rx.TooManyRedirects("Exceeded 30 redirects."), True, "after answers"),
    Row("unrewindable-body", lambda: rx.UnrewindableBodyError("cannot rewind"), True, "after an answer"),
    Row("json-decode", lambda: rx.JSONDecodeError("Expecting value", "x", 0), True, "decoding an answer"),
    Row("stream-consumed", lambda: rx.StreamConsumedError(), True, "reading an answer"),
    Row("http-error", lambda: rx.HTTPError("500 Server Error"), True, "raised on an answer"),
    Row("timeout-base", lambda: rx.Timeout("timed out"), True, "which timeout is unknown"),
    Row("connection-error-bare", lambda: rx.ConnectionError("boom"), True, "unknown cause"),
    Row("request-exception-bare", lambda: rx.RequestException("boom"), True, "unknown"),
    Row("urllib3-http-error", lambda: ux.HTTPError("boom"), True, "unknown urllib3 error"),
    Row(
        "urllib3-full-pool",
        lambda: ux.FullPoolError(POOL, "pool full"),
        True,
        "raised returning a connection",
    ),
    Row(
        "http-client-exception",
        lambda: http.client.BadStatusLine("garbage"),
        True,
        "unknown, from http.client",
    ),
    Row(
        "os-error",
        lambda: OSError("Could not find a suitable TLS CA certificate bundle"),
        True,
        "unknown origin (this one happens to be before connecting)",
    ),
]


@pytest.mark.parametrize("row", SYNC_TABLE, ids=lambda row: row.name)
def test_request_was_sent_follows_the_table(row: Row) -> None:
    assert _sync_transport.request_was_sent(row.make()) is row.sent, row.why


def test_the_table_covers_every_requests_exception() -> None:
    """A new ``requests`` exception class fails here until it gets a row."""
    listed = {type(row.make()) for row in SYNC_TABLE}
    exported = {
        cls
        for cls in vars(rx).values()
        if inspect.isclass(cls) and issubclass(cls, rx.RequestException) and cls.__module__ == rx.__name__
    }
    assert exported - listed == set()


def test_the_class_hierarchy_the_table_relies_on() -> None:
    """What the installed requests and urllib3 must still look like for the table to hold."""
    assert issubclass(ux.NameResolutionError, ux.NewConnectionError)
    assert issubclass(ux.NewConnectionError, ux.ConnectTimeoutError)
    assert issubclass(rx.ConnectTimeout, rx.ConnectionError)
    assert issubclass(rx.ProxyError, rx.ConnectionError)
    assert issubclass(rx.SSLError, rx.ConnectionError)
    assert issubclass(rx.JSONDecodeError, rx.InvalidJSONError)
    assert issubclass(rx.InvalidProxyURL, rx.InvalidURL)
    assert issubclass(rx.ContentDecodingError, ux.HTTPError)
    assert not issubclass(rx.ReadTimeout, rx.ConnectionError)
    # requests turns urllib3's read errors into these instead of retrying: no hidden re-send.
    assert requests.adapters.HTTPAdapter().max_retries.read is False
    assert requests.adapters.HTTPAdapter().max_retries.total == 0


# -- send_once ---------------------------------------------------------------------------------


def last(adapter: requests_mock.Adapter) -> Any:
    """The last request the mock adapter saw."""
    assert adapter.last_request is not None
    return adapter.last_request


@pytest.fixture
def mock_session() -> tuple[requests.Session, requests_mock.Adapter]:
    session = requests.Session()
    adapter = requests_mock.Adapter()
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session, adapter


@pytest.mark.parametrize("row", SYNC_TABLE, ids=lambda row: row.name)
def test_send_once_raises_every_row_as_a_transport_error(
    mock_session: tuple[requests.Session, requests_mock.Adapter], row: Row
) -> None:
    session, adapter = mock_session
    adapter.register_uri("POST", BASE_URL + CREATE.path, exc=row.make())
    with pytest.raises(errors.TransportError) as caught:
        _sync_transport.send_once(session, settings(), CREATE)
    assert caught.value.request_sent is row.sent
    assert API_KEY not in str(caught.value)


def test_send_once_lets_programming_errors_through(
    mock_session: tuple[requests.Session, requests_mock.Adapter],
) -> None:
    session, adapter = mock_session
    adapter.register_uri("POST", BASE_URL + CREATE.path, exc=TypeError("a bug"))
    with pytest.raises(TypeError):
        _sync_transport.send_once(session, settings(), CREATE)


def test_send_once_returns_data(mock_session: tuple[requests.Session, requests_mock.Adapter]) -> None:
    session, adapter = mock_session
    adapter.register_uri(
        "POST", BASE_URL + CREATE.path, json={"code": 200, "message": "success", "data": {"task_id": "t1"}}
    )
    assert _sync_transport.send_once(session, settings(), CREATE) == {"task_id": "t1"}
    assert last(adapter).headers["x-api-key"] == API_KEY


def test_send_once_passes_the_sessions_ca_bundle_over_requests_ca_bundle(
    mock_session: tuple[requests.Session, requests_mock.Adapter], monkeypatch: pytest.MonkeyPatch
) -> None:
    """requests lets ``REQUESTS_CA_BUNDLE`` override ``session.verify``; the transport does not."""
    session, adapter = mock_session
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/env/bundle.pem")
    session.verify = "/session/bundle.pem"
    adapter.register_uri("GET", BASE_URL + READ.path, json={"code": 200, "message": "ok", "data": {}})
    _sync_transport.send_once(session, settings(), READ)
    assert last(adapter).verify == "/session/bundle.pem"


def test_send_once_keeps_requests_ca_bundle_for_a_default_session(
    mock_session: tuple[requests.Session, requests_mock.Adapter], monkeypatch: pytest.MonkeyPatch
) -> None:
    session, adapter = mock_session
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/env/bundle.pem")
    adapter.register_uri("GET", BASE_URL + READ.path, json={"code": 200, "message": "ok", "data": {}})
    _sync_transport.send_once(session, settings(), READ)
    assert last(adapter).verify == "/env/bundle.pem"


# -- proxies -----------------------------------------------------------------------------------


def sent_proxies(
    mock_session: tuple[requests.Session, requests_mock.Adapter], **overrides: Any
) -> dict[str, str]:
    session, adapter = mock_session
    adapter.register_uri("GET", requests_mock.ANY, json={"code": 200, "message": "ok", "data": {}})
    _sync_transport.send_once(session, settings(**overrides), READ)
    return {key: value for key, value in last(adapter).proxies.items() if key != "no"}


def test_the_environments_https_proxy_is_used(
    mock_session: tuple[requests.Session, requests_mock.Adapter], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://env-proxy:3128")
    assert sent_proxies(mock_session)["https"] == "http://env-proxy:3128"


def test_the_explicit_proxy_wins_over_the_environment_and_no_proxy(
    mock_session: tuple[requests.Session, requests_mock.Adapter], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://env-proxy:3128")
    monkeypatch.setenv("NO_PROXY", "api.crun.ai")
    assert sent_proxies(mock_session, proxy="http://explicit:8080")["https"] == "http://explicit:8080"


def test_no_proxy_keeps_requests_from_adding_the_environments_proxy(
    mock_session: tuple[requests.Session, requests_mock.Adapter], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://env-proxy:3128")
    monkeypatch.setenv("NO_PROXY", ".crun.ai")
    assert sent_proxies(mock_session) == {}


def test_a_cidr_no_proxy_entry_does_not_bypass_like_aiohttp(
    mock_session: tuple[requests.Session, requests_mock.Adapter], monkeypatch: pytest.MonkeyPatch
) -> None:
    """requests alone would bypass 10.1.2.3 for ``10.0.0.0/8``; aiohttp would not. Same rule here."""
    monkeypatch.setenv("HTTPS_PROXY", "http://env-proxy:3128")
    monkeypatch.setenv("NO_PROXY", "10.0.0.0/8")
    proxies = sent_proxies(mock_session, base_url="https://10.1.2.3/api/v1")
    assert proxies["https"] == "http://env-proxy:3128"


def test_all_proxy_is_not_used(
    mock_session: tuple[requests.Session, requests_mock.Adapter], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALL_PROXY", "socks5://all-proxy:1080")
    assert sent_proxies(mock_session) == {}


# -- call: the retry loop ----------------------------------------------------------------------


def test_a_creation_that_may_have_been_written_is_sent_once(
    mock_session: tuple[requests.Session, requests_mock.Adapter], clock: FakeClock
) -> None:
    session, adapter = mock_session
    adapter.register_uri("POST", BASE_URL + CREATE.path, exc=requests.ReadTimeout("read timed out"))
    with pytest.raises(errors.TransportError) as caught:
        _sync_transport.call(session, settings(), CREATE, clock=clock, log=LOG)
    assert caught.value.request_sent is True
    assert retry.may_have_created(caught.value)
    assert adapter.call_count == 1
    assert clock.sleeps == []


def test_a_creation_never_written_is_retried_up_to_max_retries(
    mock_session: tuple[requests.Session, requests_mock.Adapter], clock: FakeClock
) -> None:
    session, adapter = mock_session
    refused = rx.ConnectionError(max_retry(ux.NewConnectionError(CONN, "refused")))
    adapter.register_uri("POST", BASE_URL + CREATE.path, exc=refused)
    with pytest.raises(errors.TransportError) as caught:
        _sync_transport.call(session, settings(), CREATE, clock=clock, log=LOG)
    assert caught.value.request_sent is False
    assert adapter.call_count == 4
    assert len(clock.sleeps) == 3


def test_a_creation_succeeds_after_unsent_failures(
    mock_session: tuple[requests.Session, requests_mock.Adapter], clock: FakeClock
) -> None:
    session, adapter = mock_session
    adapter.register_uri(
        "POST",
        BASE_URL + CREATE.path,
        [
            {"exc": rx.ConnectTimeout("connect timed out")},
            {"json": {"code": 200, "message": "success", "data": {"task_id": "t9"}}},
        ],
    )
    assert _sync_transport.call(session, settings(), CREATE, clock=clock, log=LOG) == {"task_id": "t9"}
    assert adapter.call_count == 2


def test_a_read_is_retried_even_after_it_was_written(
    mock_session: tuple[requests.Session, requests_mock.Adapter], clock: FakeClock
) -> None:
    session, adapter = mock_session
    adapter.register_uri("GET", BASE_URL + READ.path, exc=requests.ReadTimeout("read timed out"))
    with pytest.raises(errors.TransportError):
        _sync_transport.call(session, settings(), READ, clock=clock, log=LOG)
    assert adapter.call_count == 4


def test_a_retry_announcement_masks_a_key_crun_echoed(
    mock_session: tuple[requests.Session, requests_mock.Adapter],
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    session, adapter = mock_session
    echoed = {"code": 429, "message": f"slow down, key {API_KEY}", "data": None}
    success = {"code": 200, "message": "success", "data": {"status": "running"}}
    adapter.register_uri(
        "GET", BASE_URL + READ.path, [{"status_code": 429, "json": echoed}, {"json": success}]
    )
    log = logging.getLogger("crun.test.announce")

    with caplog.at_level(logging.WARNING, logger=log.name):
        _sync_transport.call(session, settings(), READ, clock=clock, log=log)

    (line,) = [record.getMessage() for record in caplog.records]
    assert "slow down, key ***" in line
    assert API_KEY not in line
