"""
Many Crun triggers at once, on one event loop, against the scripted loopback Crun.

What unit tests with a stub hook cannot show: that the triggers share one pooled ``aiohttp``
session, reuse its keep-alive connections, close it when the last one finishes, and do no
synchronous I/O inside ``run()``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
import requests

from airflow_provider_crun.hooks import _session_pool
from airflow_provider_crun.hooks.crun import CrunHook
from airflow_provider_crun.triggers.crun import CrunFaceDetectionTrigger, CrunTaskTrigger
from tests.support.connections import TEST_API_KEY, crun_connection_json
from tests.support.crun_answers import detection_data, task_data
from tests.support.loop_guard import guarded
from tests.support.scripted_server import ScriptedServer, ok
from tests.support.sockets import LoopbackServer, answering
from tests.support.tls import TlsFiles

pytestmark = pytest.mark.integration

TASK_INFO = "/client/job/TaskInfo"
DETECT_RESULT = "/client/job/detect-face-result"
TASKS = 150
DETECTIONS = 50
POLLS_EACH = 4
POLL_INTERVAL = 0.05


@pytest.fixture
def blocking_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make every synchronous I/O entry point the triggers could reach fail, and record it."""
    calls: list[str] = []

    lookup = guarded("CrunHook.get_connection", CrunHook.get_connection, calls)
    monkeypatch.setattr(CrunHook, "get_connection", classmethod(lambda cls, *a, **k: lookup(*a, **k)))
    monkeypatch.setattr(
        requests.Session, "request", guarded("requests.Session.request", requests.Session.request, calls)
    )
    monkeypatch.setattr(time, "sleep", guarded("time.sleep", time.sleep, calls))
    return calls


@pytest.fixture
def sessions(monkeypatch: pytest.MonkeyPatch) -> list[aiohttp.ClientSession]:
    """Every pooled session opened while the test runs."""
    opened: list[aiohttp.ClientSession] = []
    new_session = _session_pool._new_session

    def recorded() -> aiohttp.ClientSession:
        session = new_session()
        opened.append(session)
        return session

    monkeypatch.setattr(_session_pool, "_new_session", recorded)
    return opened


async def first_event(trigger: CrunTaskTrigger | CrunFaceDetectionTrigger) -> dict[str, Any]:
    # A guard, not a timing check: a broken trigger fails here instead of hanging the suite.
    async with asyncio.timeout(120):
        events = [event.payload async for event in trigger.run()]
    assert len(events) == 1
    return events[0]


async def test_many_triggers_share_one_pooled_session_and_reuse_connections(
    scripted_crun: ScriptedServer, blocking_calls: list[str], sessions: list[aiohttp.ClientSession]
) -> None:
    # Each path answers "running" until every trigger of its kind could poll POLLS_EACH - 1
    # times, then "success" for good: each trigger ends on its first success.
    scripted_crun.script(
        TASK_INFO, *[ok(task_data("running"))] * (TASKS * (POLLS_EACH - 1)), ok(task_data("success"))
    )
    scripted_crun.script(
        DETECT_RESULT,
        *[ok(detection_data("processing"))] * (DETECTIONS * (POLLS_EACH - 1)),
        ok(detection_data()),
    )
    deadline = time.time() + 120
    triggers: list[CrunTaskTrigger | CrunFaceDetectionTrigger] = [
        CrunTaskTrigger(f"task-{n}", deadline=deadline, poll_interval=POLL_INTERVAL) for n in range(TASKS)
    ]
    triggers += [
        CrunFaceDetectionTrigger(f"dit-{n}", deadline=deadline, poll_interval=POLL_INTERVAL)
        for n in range(DETECTIONS)
    ]

    payloads = await asyncio.gather(*(first_event(trigger) for trigger in triggers))

    assert blocking_calls == []
    assert [payload["status"] for payload in payloads] == ["success"] * (TASKS + DETECTIONS)
    assert {payload.get("crun_task_id") or payload["detect_task_id"] for payload in payloads} == {
        trigger.job_id for trigger in triggers
    }
    # Exactly the scripted answers were consumed: every poll was one request, nothing retried.
    assert scripted_crun.count(TASK_INFO) == TASKS * POLLS_EACH
    assert scripted_crun.count(DETECT_RESULT) == DETECTIONS * POLLS_EACH
    polled = {
        request.query.get("task_id") or request.query["detect_task_id"] for request in scripted_crun.requests
    }
    assert polled == {trigger.job_id for trigger in triggers}
    assert {request.headers["x-api-key"] for request in scripted_crun.requests} == {TEST_API_KEY}
    # One session for all of them, closed once the last trigger released it.
    assert len(sessions) == 1
    assert sessions[0].closed
    # Keep-alive connections from a bounded pool, each carrying many polls.
    assert scripted_crun.connections <= _session_pool.CONNECTION_LIMIT
    assert len(scripted_crun.requests) >= POLLS_EACH * scripted_crun.connections


async def test_a_trigger_trusts_the_connections_ca_bundle_over_tls(
    tls: TlsFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The triggers' path with ``ca_bundle``: a self-signed Crun is trusted only through it."""
    with LoopbackServer(answering(task_data("success")), tls=tls.server_context()) as server:
        monkeypatch.setenv(
            "AIRFLOW_CONN_CRUN_DEFAULT", crun_connection_json(server.url(), ca_bundle=str(tls.cert))
        )
        trusted = await first_event(
            CrunTaskTrigger("task-tls", deadline=time.time() + 60, poll_interval=POLL_INTERVAL)
        )
        monkeypatch.setenv("AIRFLOW_CONN_CRUN_OTHER", crun_connection_json(server.url(), max_retries=0))
        untrusted = await first_event(
            CrunTaskTrigger(
                "task-tls", crun_conn_id="crun_other", deadline=time.time() + 60, poll_interval=POLL_INTERVAL
            )
        )

    assert trusted["status"] == "success", trusted
    assert server.count("GET") == 1
    assert untrusted["status"] == "error", untrusted
    assert "certificate verify failed" in untrusted["message"], untrusted
