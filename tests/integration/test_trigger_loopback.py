"""
The Crun triggers against real loopback HTTP servers, with real sleeps.

These check what unit tests with a fake clock cannot: that many triggers share one pooled
session, reuse keep-alive connections, and never block the event loop.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import resource
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from airflow.triggers.base import TriggerEvent

from airflow_provider_crun.hooks import _session_pool
from airflow_provider_crun.hooks.crun import CrunHook
from airflow_provider_crun.triggers.crun import CrunTaskTrigger
from tests.unit.conftest_triggers import API_KEY, ScriptedCrun, crun_server_fixture, status  # noqa: F401

pytestmark = pytest.mark.integration

TRIGGERS = 200
MAX_LAG = 0.1


class _SlowCallbacks(logging.Handler):
    """Collect asyncio's debug-mode "Executing <...> took 0.123 seconds" warnings."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Executing") and " took " in message:
            self.messages.append(message)


@pytest.fixture
def slow_callbacks() -> Iterator[_SlowCallbacks]:
    handler = _SlowCallbacks()
    logger = logging.getLogger("asyncio")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


async def test_pending_running_running_success_yields_one_success_event(crun_server: ScriptedCrun) -> None:
    media_urls = ["https://cdn.example/swap-0.png"]
    crun_server.script(
        "task_12345678",
        status("pending"),
        status("running"),
        status("running"),
        status("success", task_id="task_12345678", result={"media_urls": media_urls}, credits=6),
    )
    trigger = CrunTaskTrigger("task_12345678", poll_interval=0.01, timeout=30)

    events = [event async for event in trigger.run()]

    assert len(events) == 1
    assert isinstance(events[0], TriggerEvent)
    payload = events[0].payload
    assert payload["status"] == "success"
    assert payload["crun_task_id"] == "task_12345678"
    assert payload["data"]["result"]["media_urls"] == media_urls
    assert crun_server.count("task_12345678") == 4


# A Crun that answers TaskInfo for any id: "running" until the id's POLLS_EACH-th poll, then
# "success". It runs in its own process, so its work never competes with the loop under test for
# the GIL, and it counts the TCP connections it accepts.
_SERVER = """
import asyncio, json, sys
from aiohttp import web

polls_each = int(sys.argv[1])
polls, connections = {}, [0]

async def task_info(request):
    task_id = request.query["task_id"]
    polls[task_id] = polls.get(task_id, 0) + 1
    status = "success" if polls[task_id] >= polls_each else "running"
    result = {"media_urls": []} if status == "success" else None
    data = {"task_id": task_id, "status": status, "result": result}
    return web.json_response({"code": 200, "message": "success", "data": data})

async def stats(request):
    return web.json_response({"polls": sum(polls.values()), "connections": connections[0]})

async def main():
    app = web.Application()
    app.router.add_get("/api/v1/client/job/TaskInfo", task_info)
    app.router.add_get("/stats", stats)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    accept = runner.server.connection_made

    def counting_accept(handler, transport):
        connections[0] += 1
        accept(handler, transport)

    runner.server.connection_made = counting_accept
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(site._server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


class _CountingCrun:
    """Client side of :data:`_SERVER`."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def stats(self) -> dict[str, int]:
        """Polls answered and TCP connections accepted, not counting this request's own."""
        with urllib.request.urlopen(f"{self.base}/stats", timeout=5) as response:
            stats = dict(json.load(response))
        stats["connections"] -= 1
        return stats


@pytest.fixture
def counting_crun(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[_CountingCrun]:
    """Start :data:`_SERVER` (``polls_each`` by indirect parametrization) and point ``crun_default`` at it."""
    polls_each = request.param
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER, str(polls_each)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        crun = _CountingCrun(int(server.stdout.readline()))
        conn = {"conn_type": "crun", "host": crun.base, "password": API_KEY, "extra": {"timeout": 10}}
        monkeypatch.setenv("AIRFLOW_CONN_CRUN_DEFAULT", json.dumps(conn))
        yield crun
    finally:
        server.kill()
        server.wait(10)


@dataclass
class _CallbackTimer:
    """
    Time every callback the loop thread runs, and keep those that blocked it.

    A callback blocked the loop when it computed for ``MAX_LAG`` or more (this thread's CPU time)
    or waited for ``MAX_LAG`` or more while giving up the CPU on its own (a voluntary context
    switch: ``time.sleep``, blocking socket or file I/O, a lock). Plain wall time would also blame
    the loop for being preempted by other processes, which on a busy machine happens for longer
    than ``MAX_LAG``.
    """

    blocked: list[str] = field(default_factory=list)
    slowest_cpu: float = 0.0

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        original = asyncio.events.Handle._run
        loop_thread = threading.get_ident()

        def timed_run(handle: asyncio.events.Handle) -> None:
            if threading.get_ident() != loop_thread:
                return original(handle)
            wall, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_THREAD)
            try:
                return original(handle)
            finally:
                wall = time.perf_counter() - wall
                after = resource.getrusage(resource.RUSAGE_THREAD)
                cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
                waits = after.ru_nvcsw - before.ru_nvcsw
                self.slowest_cpu = max(self.slowest_cpu, cpu)
                if cpu >= MAX_LAG or (waits and wall >= MAX_LAG):
                    self.blocked.append(f"{handle!r}: {wall:.3f} s wall, {cpu:.3f} s CPU, {waits} waits")

        monkeypatch.setattr(asyncio.events.Handle, "_run", timed_run)


async def _run_triggers(
    *, poll_interval: float
) -> tuple[list[dict[str, Any]], list[aiohttp.ClientSession], set[int]]:
    """Run :data:`TRIGGERS` task triggers to their event while watching the shared session."""
    triggers = [
        CrunTaskTrigger(f"task-{n}", poll_interval=poll_interval, timeout=60) for n in range(TRIGGERS)
    ]
    loop = asyncio.get_running_loop()
    sessions: dict[int, aiohttp.ClientSession] = {}
    open_counts: set[int] = set()

    async def first_event(trigger: CrunTaskTrigger) -> dict[str, Any]:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("no event")

    async def watch(until: asyncio.Future[Any]) -> None:
        while not until.done():
            await asyncio.sleep(0.01)
            open_counts.add(_session_pool.open_session_count())
            for lease in _session_pool._sessions.get(loop, {}).values():
                sessions[id(lease.session)] = lease.session

    everything = asyncio.gather(*(first_event(trigger) for trigger in triggers))
    watcher = asyncio.create_task(watch(everything))
    payloads = await everything
    await watcher
    return payloads, list(sessions.values()), open_counts


@pytest.fixture
def quiet_heap() -> Iterator[None]:
    """
    Freeze the heap pytest and Airflow built, for the length of a timing test.

    A full garbage collection over those ~200k objects takes ~0.1 s in whichever callback
    happens to trigger it; that is the test process's cost, not the triggers'.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@pytest.mark.parametrize("counting_crun", [3], indirect=True, ids=["3-polls-each"])
async def test_200_triggers_never_block_the_event_loop(
    counting_crun: _CountingCrun,
    slow_callbacks: _SlowCallbacks,
    quiet_heap: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The first connection lookup imports Airflow's supervisor module once (~0.1 s); a running
    # triggerer has long done that.
    await CrunHook().aget_settings()
    timer = _CallbackTimer()
    timer.install(monkeypatch)
    loop = asyncio.get_running_loop()
    loop.set_debug(True)
    loop.slow_callback_duration = MAX_LAG
    try:
        payloads, _, _ = await _run_triggers(poll_interval=0.5)
    finally:
        loop.set_debug(False)

    assert [p["status"] for p in payloads] == ["success"] * TRIGGERS
    assert counting_crun.stats()["polls"] == TRIGGERS * 3
    # asyncio's own debug-mode report is kept for the failure message: on its own it cannot
    # tell a blocked loop from a preempted process.
    assert timer.blocked == [], f"asyncio debug mode also reported: {slow_callbacks.messages}"
    assert timer.slowest_cpu < MAX_LAG


@pytest.mark.parametrize("counting_crun", [5], indirect=True, ids=["5-polls-each"])
async def test_200_triggers_share_one_session_and_few_connections(counting_crun: _CountingCrun) -> None:
    payloads, sessions, open_counts = await _run_triggers(poll_interval=0.1)

    assert [p["status"] for p in payloads] == ["success"] * TRIGGERS
    stats = counting_crun.stats()
    assert stats["polls"] == TRIGGERS * 5
    # Pooled keep-alive connections: far fewer TCP connections than polls.
    assert stats["connections"] <= _session_pool.CONNECTION_LIMIT
    assert stats["connections"] * 5 < stats["polls"]
    # One shared session while the triggers ran, closed once the last one released it.
    assert len(sessions) == 1
    assert 1 in open_counts
    assert open_counts <= {0, 1}
    assert _session_pool.open_session_count() == 0
    assert sessions[0].closed
