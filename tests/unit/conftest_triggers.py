"""
Helpers for the trigger tests: a scripted loopback Crun server and a fake clock.

Imported explicitly (``from tests.unit.conftest_triggers import ...``); pytest does not load this
file on its own. Import the fixtures under their ``*_fixture`` names; tests ask for them as
``crun_server`` and ``fake_clock``.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

API_KEY = "crun-trigger-test-key-9f8e7d"


@dataclass(frozen=True)
class Reply:
    """One scripted HTTP answer."""

    http_status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def ok(data: dict[str, Any] | None) -> Reply:
    """A ``code: 200`` envelope around ``data``."""
    return Reply(200, json.dumps({"code": 200, "message": "success", "data": data}).encode())


def status(word: str, **fields: Any) -> Reply:
    """A job ``data`` object whose ``status`` is ``word`` (both id keys set; extra keys are harmless)."""
    return ok({"status": word, **fields})


def api_error(code: int, message: str, *, http_status: int | None = None, **headers: str) -> Reply:
    """An error envelope, sent with HTTP status ``http_status`` (default: the code itself)."""
    body = json.dumps({"code": code, "message": message, "data": None}).encode()
    return Reply(http_status or code, body, dict(headers))


class ScriptedCrun:
    """
    A loopback Crun answering the two status endpoints from per-job scripts.

    Each job's script is a list of replies consumed in order; the last one repeats. It runs on
    its own thread and event loop, so the loop under test carries only the triggers' work.
    """

    def __init__(self) -> None:
        self.scripts: dict[str, list[Reply]] = {}
        self.requests: list[tuple[str, str]] = []
        self.connections = 0
        self._lock = threading.Lock()
        self.port = 0

    def script(self, job_id: str, *replies: Reply) -> None:
        """Set the replies for ``job_id``."""
        with self._lock:
            self.scripts[job_id] = list(replies)

    def count(self, job_id: str) -> int:
        """How many requests asked about ``job_id``."""
        with self._lock:
            return sum(1 for _, asked in self.requests if asked == job_id)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def connection_json(self, api_key: str | None = API_KEY, **extra: Any) -> str:
        """An ``AIRFLOW_CONN_*`` value pointing at this server."""
        conn: dict[str, Any] = {"conn_type": "crun", "host": self.base, "extra": {"timeout": 5, **extra}}
        if api_key is not None:
            conn["password"] = api_key
        return json.dumps(conn)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        job_id = request.query.get("task_id") or request.query.get("detect_task_id") or ""
        with self._lock:
            self.requests.append((request.path, job_id))
            script = self.scripts.get(job_id)
            reply = (script.pop(0) if len(script) > 1 else script[0]) if script else None
        if request.headers.get("x-api-key") != API_KEY:
            reply = api_error(401, "invalid api key")
        if reply is None:
            reply = api_error(404, f"no such job {job_id}")
        return web.Response(
            status=reply.http_status, body=reply.body, headers=reply.headers, content_type="application/json"
        )

    @contextmanager
    def running(self) -> Iterator[ScriptedCrun]:
        """Serve on 127.0.0.1 from a background thread while inside."""
        loop = asyncio.new_event_loop()
        started = threading.Event()
        app = web.Application()
        app.router.add_get("/api/v1/client/job/TaskInfo", self._handle)
        app.router.add_get("/api/v1/client/job/detect-face-result", self._handle)
        runner = web.AppRunner(app, access_log=None)

        async def start() -> None:
            await runner.setup()
            server = runner.server
            assert server is not None
            accept = server.connection_made

            def counting_accept(handler: Any, transport: Any) -> None:
                self.connections += 1
                accept(handler, transport)

            server.connection_made = counting_accept
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(start())
            started.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        thread = threading.Thread(target=serve, name="scripted-crun", daemon=True)
        thread.start()
        started.wait(10)
        try:
            yield self
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)


@pytest.fixture(name="crun_server")
def crun_server_fixture(monkeypatch: pytest.MonkeyPatch) -> Iterator[ScriptedCrun]:
    """A running :class:`ScriptedCrun`, with ``crun_default`` pointing at it (2 hook retries)."""
    server = ScriptedCrun()
    with server.running():
        monkeypatch.setenv("AIRFLOW_CONN_CRUN_DEFAULT", server.connection_json(max_retries=2))
        yield server


class FakeClock:
    """Wall clock for the triggers that only moves when they sleep."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self.hook_sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        # Still yield to the loop, as a real sleep would.
        await asyncio.sleep(0)

    async def hook_sleep(self, seconds: float) -> None:
        self.hook_sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


@pytest.fixture(name="fake_clock")
def fake_clock_fixture(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """Replace the triggers' clock and sleep, and the hook's retry sleep, with a fake clock."""
    from airflow_provider_crun.hooks.crun import CrunHook
    from airflow_provider_crun.triggers.crun import _CrunPollingTrigger

    clock = FakeClock()
    monkeypatch.setattr(_CrunPollingTrigger, "_now", staticmethod(clock.time))
    monkeypatch.setattr(_CrunPollingTrigger, "_sleep", staticmethod(clock.sleep))
    monkeypatch.setattr(CrunHook, "_async_sleep", staticmethod(clock.hook_sleep))
    return clock
