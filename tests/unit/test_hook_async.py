"""CrunHook's async transport over a scripted loopback aiohttp server."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from airflow_provider_crun import __version__
from airflow_provider_crun.exceptions import (
    CrunApiError,
    CrunConfigError,
    CrunRedirectError,
    CrunServerError,
    CrunTransportError,
)
from airflow_provider_crun.hooks import _session_pool
from airflow_provider_crun.hooks.crun import CrunHook
from tests.conftest import TEST_API_KEY, crun_connection_json
from tests.support.scripted_server import DROP, ScriptedServer, fail, ok
from tests.unit.test_hook import DETECTION_EXAMPLE, TASK_EXAMPLE
from tests.unit.test_protocol import DOCUMENTED_ERRORS, ERROR_IDS

TASK_INFO = "/client/job/TaskInfo"
DETECT_RESULT = "/client/job/detect-face-result"


@pytest.fixture
async def server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[ScriptedServer]:
    scripted = ScriptedServer()
    await scripted.start()
    monkeypatch.setenv(
        "AIRFLOW_CONN_CRUN_DEFAULT", crun_connection_json(host=scripted.url, timeout=2, max_retries=3)
    )
    yield scripted
    await scripted.stop()


@pytest.fixture
def no_sync_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    """The async path must never use the blocking connection lookup."""

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("sync get_connection called from async code")

    monkeypatch.setattr(CrunHook, "get_connection", classmethod(forbidden))


@pytest.mark.usefixtures("no_sync_lookup")
class TestAsyncCalls:
    async def test_aget_task(self, server: ScriptedServer) -> None:
        server.script(TASK_INFO, ok(TASK_EXAMPLE))
        assert await CrunHook().aget_task("task_12345678") == TASK_EXAMPLE
        (sent,) = server.requests
        assert (sent.method, sent.path, sent.query) == (
            "GET",
            "/api/v1" + TASK_INFO,
            {"task_id": "task_12345678"},
        )
        assert sent.headers["x-api-key"] == TEST_API_KEY
        assert sent.headers["User-Agent"] == f"airflow-provider-crun/{__version__}"

    async def test_aget_face_detection(self, server: ScriptedServer) -> None:
        server.script(DETECT_RESULT, ok(DETECTION_EXAMPLE))
        assert await CrunHook().aget_face_detection("dit60yt8reqplt1c16") == DETECTION_EXAMPLE
        assert server.requests[0].query == {"detect_task_id": "dit60yt8reqplt1c16"}

    @pytest.mark.parametrize(("code", "error_class"), DOCUMENTED_ERRORS, ids=ERROR_IDS)
    async def test_error_as_http_status(self, server, retry_waits, code, error_class) -> None:
        server.script(TASK_INFO, fail(code, status=code))
        with pytest.raises(error_class) as raised:
            await CrunHook().aget_task("t")
        assert (raised.value.code, raised.value.message) == (code, f"crun error {code}")

    @pytest.mark.parametrize(("code", "error_class"), DOCUMENTED_ERRORS, ids=ERROR_IDS)
    async def test_error_as_body_code(self, server, retry_waits, code, error_class) -> None:
        server.script(TASK_INFO, fail(code, status=200))
        with pytest.raises(error_class):
            await CrunHook().aget_task("t")

    @pytest.mark.parametrize(
        ("responses", "requests_sent", "succeeds"),
        [
            ([fail(429, 429, {"Retry-After": "2"}), ok(TASK_EXAMPLE)], 2, True),
            ([fail(455, 200), fail(500, 500), ok(TASK_EXAMPLE)], 3, True),
            ([(502, b"<html>", {}), ok(TASK_EXAMPLE)], 2, True),
            ([(200, b"garbage", {}), ok(TASK_EXAMPLE)], 2, True),
            # aiohttp itself re-sends an idempotent GET once on a dropped connection, so the
            # tenacity wait count is not asserted for this row; the request count still is.
            ([DROP, ok(TASK_EXAMPLE)], 2, True),
            ([fail(500, 500)], 4, False),
            ([fail(401, 401)], 1, False),
            ([fail(404, 200)], 1, False),
            ([fail(501, 200)], 1, False),
        ],
        ids=[
            "429-then-ok",
            "455-500-then-ok",
            "502-then-ok",
            "malformed-then-ok",
            "dropped-connection-then-ok",
            "500-forever-gives-up",
            "401-not-retried",
            "404-not-retried",
            "501-not-retried",
        ],
    )
    async def test_retries(self, server, retry_waits, responses, requests_sent, succeeds) -> None:
        server.script(TASK_INFO, *responses)
        if succeeds:
            assert (await CrunHook().aget_task("t"))["task_id"] == "task_12345678"
        else:
            with pytest.raises(CrunApiError):
                await CrunHook().aget_task("t")
        assert server.count(TASK_INFO) == requests_sent
        if DROP not in responses:
            assert len(retry_waits) == requests_sent - 1

    async def test_retry_after_is_honoured(self, server, retry_waits) -> None:
        server.script(TASK_INFO, fail(429, 429, {"Retry-After": "4"}), ok(TASK_EXAMPLE))
        await CrunHook().aget_task("t")
        assert retry_waits == [4.0]

    async def test_refused_connection_is_retried_then_raised(self, monkeypatch, retry_waits) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        monkeypatch.setenv("AIRFLOW_CONN_CRUN_DEFAULT", crun_connection_json(host=f"http://127.0.0.1:{port}"))
        with pytest.raises(CrunTransportError) as raised:
            await CrunHook().aget_task("t")
        assert raised.value.request_sent is False
        assert len(retry_waits) == 5

    async def test_redirect_is_not_followed(self, server, retry_waits) -> None:
        server.script(TASK_INFO, (302, b"", {"Location": f"{server.url}/elsewhere"}))
        server.script("/elsewhere", ok(TASK_EXAMPLE))
        with pytest.raises(CrunRedirectError):
            await CrunHook().aget_task("t")
        assert [r.path for r in server.requests] == ["/api/v1" + TASK_INFO]

    async def test_plain_http_remote_host_refused(self, monkeypatch) -> None:
        monkeypatch.setenv("AIRFLOW_CONN_CRUN_DEFAULT", crun_connection_json(host="http://crun.example.com"))
        with pytest.raises(CrunConfigError, match="unencrypted"):
            await CrunHook().aget_task("t")

    async def test_key_never_in_errors(self, server, retry_waits, capsys) -> None:
        server.script(TASK_INFO, fail(500, 500))
        with pytest.raises(CrunServerError) as raised:
            await CrunHook().aget_task("t")
        captured = capsys.readouterr()
        assert "Retrying in" in captured.out
        for text in (str(raised.value), repr(raised.value), captured.out, captured.err):
            assert TEST_API_KEY not in text


@pytest.mark.usefixtures("no_sync_lookup")
class TestSharedSession:
    async def test_concurrent_callers_share_one_session_and_few_connections(self, server) -> None:
        server.script(TASK_INFO, ok(TASK_EXAMPLE))
        hooks = [CrunHook() for _ in range(50)]

        async def poll(hook: CrunHook) -> None:
            async with hook.async_session():
                for _ in range(4):
                    await hook.aget_task("t")
                    await asyncio.sleep(0.01)

        async def watch() -> int:
            await asyncio.sleep(0.02)
            return _session_pool.open_session_count()

        *_, open_during = await asyncio.gather(*(poll(hook) for hook in hooks), watch())
        assert open_during == 1
        assert server.count(TASK_INFO) == 200
        assert server.connections <= 50
        assert _session_pool.open_session_count() == 0

    async def test_sequential_polls_reuse_one_connection(self, server) -> None:
        server.script(TASK_INFO, ok(TASK_EXAMPLE))
        hook = CrunHook()
        async with hook.async_session():
            for _ in range(20):
                await hook.aget_task("t")
        assert server.connections == 1

    async def test_session_is_closed_after_last_lease(self, server) -> None:
        server.script(TASK_INFO, ok(TASK_EXAMPLE))
        hook = CrunHook()
        async with _session_pool.leased_session((await hook.aget_settings()).base_url) as session:
            await hook.aget_task("t")
            assert not session.closed
        assert session.closed

    async def test_one_session_per_base_url(self, server, monkeypatch) -> None:
        server.script(TASK_INFO, ok(TASK_EXAMPLE))
        first = CrunHook()
        await first.aget_settings()
        monkeypatch.setenv("AIRFLOW_CONN_OTHER", crun_connection_json(host=server.url + "/api/v1/../other"))
        other = CrunHook("other")
        async with first.async_session(), other.async_session():
            assert _session_pool.open_session_count() == 2
