"""CrunHook.test_connection against real loopback sockets: one attempt, short, one line per cause."""

from __future__ import annotations

import json
import time

import pytest

from airflow_provider_crun.hooks._connection_check import TEST_TIMEOUT_S, probe_settings
from airflow_provider_crun.hooks.crun import CrunHook
from tests.support.connections import TEST_API_KEY, crun_connection_json
from tests.support.sockets import Behaviour, LoopbackServer, Peer, answering, refused_port
from tests.support.tls import TlsFiles

# A connection id like the random one Airflow's UI tests a form under.
TEMP_ID = "EEFsGHcw"
# What urllib3 and requests put in their own texts; none of it may reach the user.
INTERNALS = ("urllib3", "Max retries", "HTTPConnection", "NewConnectionError", "Errno", "object at 0x")


def answer(status: int, code: int, message: str) -> Behaviour:
    """Answer every request with ``status`` and a Crun error envelope."""
    body = json.dumps({"code": code, "message": message, "data": None}).encode()
    head = f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"

    def behaviour(peer: Peer, server: LoopbackServer) -> None:
        while True:
            server.record(peer.read_request())
            peer.send(head.encode() + body)

    return behaviour


def silent(peer: Peer, server: LoopbackServer) -> None:
    """Read the request, then never answer (until the client hangs up)."""
    server.record(peer.read_request())
    while peer.recv():
        pass


def plain_http(peer: Peer, server: LoopbackServer) -> None:
    """Answer whatever arrives, a TLS ClientHello included, with plain HTTP (as a web server does)."""
    peer.recv()
    peer.send_raw(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    peer.close()


def run_connection_test(
    monkeypatch: pytest.MonkeyPatch, host: str, **extra: object
) -> tuple[bool, str, float]:
    """Run the hook's test on a connection stored under a temporary id, as the UI does."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{TEMP_ID.upper()}", crun_connection_json(host=host, **extra))
    start = time.monotonic()
    healthy, message = CrunHook(TEMP_ID).test_connection()
    return healthy, message, time.monotonic() - start


def assert_one_clean_line(message: str) -> None:
    assert "\n" not in message
    assert TEMP_ID not in message
    assert TEST_API_KEY not in message
    assert [text for text in INTERNALS if text in message] == []


def test_success_names_the_base_url_and_the_balance(monkeypatch: pytest.MonkeyPatch) -> None:
    with LoopbackServer(answering({"balance": 990})) as server:
        healthy, message, _ = run_connection_test(monkeypatch, server.url())

    assert (healthy, message) == (True, f"Connected to Crun at {server.url()}/api/v1; balance: 990 credits.")
    assert server.count("GET") == 1


def test_refused(monkeypatch: pytest.MonkeyPatch, no_backoff: list[float]) -> None:
    with refused_port() as port:
        healthy, message, _ = run_connection_test(monkeypatch, f"http://127.0.0.1:{port}", max_retries=5)

    assert not healthy
    assert (
        message
        == f"Connection refused by 127.0.0.1:{port}: nothing listens there. Check the Base URL and port."
    )
    assert no_backoff == []  # one attempt: no retry, although the connection allows 5
    assert_one_clean_line(message)


def test_unknown_host(monkeypatch: pytest.MonkeyPatch) -> None:
    healthy, message, _ = run_connection_test(monkeypatch, "https://crun.invalid")

    assert not healthy
    assert message == "The host 'crun.invalid' cannot be resolved: check the Base URL."
    assert_one_clean_line(message)


def test_untrusted_certificate(monkeypatch: pytest.MonkeyPatch, tls: TlsFiles) -> None:
    with LoopbackServer(answering({"balance": 1}), tls=tls.server_context()) as server:
        healthy, message, _ = run_connection_test(monkeypatch, server.url())
        trusted, _, _ = run_connection_test(monkeypatch, server.url(), ca_bundle=str(tls.cert))

    assert not healthy
    assert message.startswith(f"TLS to 127.0.0.1:{server.port} failed: its certificate cannot be verified (")
    assert "self-signed certificate" in message
    assert message.endswith("Behind a TLS-inspecting proxy, set the ca_bundle extra.")
    assert trusted  # the same server passes once its certificate is trusted
    assert_one_clean_line(message)


def test_https_to_a_plain_http_port(monkeypatch: pytest.MonkeyPatch) -> None:
    with LoopbackServer(plain_http) as server:
        healthy, message, _ = run_connection_test(monkeypatch, server.url().replace("http://", "https://"))

    assert not healthy
    assert message == (
        f"TLS to 127.0.0.1:{server.port} failed during the handshake: check that the Base URL speaks https."
    )
    assert_one_clean_line(message)


def test_wrong_key(monkeypatch: pytest.MonkeyPatch) -> None:
    with LoopbackServer(answer(401, 401, f"invalid api key {TEST_API_KEY}")) as server:
        healthy, message, _ = run_connection_test(monkeypatch, server.url())

    assert not healthy
    assert (
        message == "Crun rejected the API key (401 Unauthorized): check the connection's API key (password)."
    )
    assert server.count() == 1
    assert_one_clean_line(message)


def test_no_answer_times_out_after_one_attempt(
    monkeypatch: pytest.MonkeyPatch, no_backoff: list[float]
) -> None:
    with LoopbackServer(silent) as server:
        healthy, message, _ = run_connection_test(monkeypatch, server.url(), timeout=1, max_retries=5)

    assert not healthy
    assert message == f"Crun did not answer within 1 s at 127.0.0.1:{server.port}: check the Base URL."
    assert server.count() == 1
    assert no_backoff == []
    assert_one_clean_line(message)


def test_a_transient_error_is_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    with LoopbackServer(answer(503, 503, "busy,\n try later")) as server:
        healthy, message, _ = run_connection_test(monkeypatch, server.url(), max_retries=5)

    assert (healthy, message) == (False, "Crun answered 503: busy, try later")
    assert server.count() == 1


def test_not_crun(monkeypatch: pytest.MonkeyPatch) -> None:
    with LoopbackServer(answering("not a balance")) as server:
        healthy, message, _ = run_connection_test(monkeypatch, server.url())

    assert not healthy
    assert message == f"{server.url()}/api/v1 answered, but not as the Crun API: check the Base URL."


def test_missing_key_names_no_connection_id(monkeypatch: pytest.MonkeyPatch) -> None:
    healthy, message, _ = run_connection_test(monkeypatch, "http://127.0.0.1:1", api_key=None)

    assert not healthy
    assert message.startswith("No API key: put your Crun API key in the connection's password field")
    assert_one_clean_line(message)


@pytest.fixture
def conn() -> object:
    from airflow.models.connection import Connection

    return Connection(
        conn_type="crun", host="https://api.crun.ai", password=TEST_API_KEY, extra={"timeout": 30}
    )


def test_the_test_waits_at_most_five_seconds_and_never_retries(conn: object) -> None:
    settings = probe_settings(conn)

    assert (settings.timeout, settings.max_retries) == (TEST_TIMEOUT_S, 0)
    assert TEST_TIMEOUT_S <= 5
