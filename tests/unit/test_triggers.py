"""Tests for the Crun triggers, against a scripted loopback server and a fake clock."""

from __future__ import annotations

import asyncio
import importlib
import json
from typing import Any

import pytest
from airflow.triggers.base import TriggerEvent
from structlog.testing import capture_logs

from airflow_provider_crun.hooks.crun import CrunHook
from airflow_provider_crun.triggers.crun import (
    CrunFaceDetectionTrigger,
    CrunTaskTrigger,
    _CrunPollingTrigger,
)
from tests.unit.conftest_triggers import (  # noqa: F401 (fixtures)
    API_KEY,
    FakeClock,
    Reply,
    ScriptedCrun,
    api_error,
    crun_server_fixture,
    fake_clock_fixture,
    ok,
    status,
)

TRIGGERS = pytest.mark.parametrize(
    ("trigger_cls", "id_key"),
    [(CrunTaskTrigger, "crun_task_id"), (CrunFaceDetectionTrigger, "detect_task_id")],
    ids=["task", "face-detection"],
)
MEDIA = {"media_urls": ["https://cdn.example/out-0.png"]}


def make(trigger_cls: type[_CrunPollingTrigger], job_id: str, **kwargs: Any) -> _CrunPollingTrigger:
    kwargs.setdefault("poll_interval", 5.0)
    kwargs.setdefault("timeout", 60.0)
    kwargs.setdefault("first_poll_jitter", False)
    return trigger_cls(job_id, **kwargs)


async def events_of(trigger: _CrunPollingTrigger) -> list[TriggerEvent]:
    return [event async for event in trigger.run()]


async def only_event(trigger: _CrunPollingTrigger) -> dict[str, Any]:
    events = await events_of(trigger)
    assert len(events) == 1
    return events[0].payload


# --------------------------------------------------------------------------------------------
# serialize()


@TRIGGERS
def test_serialize_round_trip(
    trigger_cls: type[_CrunPollingTrigger], id_key: str, fake_clock: FakeClock
) -> None:
    trigger = trigger_cls(
        "job-1",
        crun_conn_id="crun_other",
        poll_interval=7,
        timeout=120,
        resume_state={"submitted_at": 1.5, "model": "image-face-swap-multi"},
    )
    classpath, kwargs = trigger.serialize()

    assert classpath == f"airflow_provider_crun.triggers.crun.{trigger_cls.__name__}"
    assert kwargs == {
        id_key: "job-1",
        "crun_conn_id": "crun_other",
        "poll_interval": 7.0,
        "timeout": 120.0,
        "deadline": fake_clock.now + 120,
        "resume_state": {"submitted_at": 1.5, "model": "image-face-swap-multi"},
        "first_poll_jitter": True,
    }
    # Kwargs are stored through airflow.sdk.serde and must come back unchanged: plain JSON only.
    from airflow.sdk import serde

    assert serde.deserialize(serde.serialize(kwargs)) == kwargs
    assert json.loads(json.dumps(kwargs)) == kwargs

    module, _, name = classpath.rpartition(".")
    rebuilt = getattr(importlib.import_module(module), name)(**kwargs)
    assert rebuilt.serialize() == (classpath, kwargs)
    assert getattr(rebuilt, id_key) == "job-1"


@TRIGGERS
async def test_rebuilt_trigger_keeps_its_original_deadline(
    trigger_cls: type[_CrunPollingTrigger], id_key: str, crun_server: ScriptedCrun, fake_clock: FakeClock
) -> None:
    crun_server.script("job-1", status("running"))
    original = make(trigger_cls, "job-1", poll_interval=10, timeout=100)
    fake_clock.now += 60  # the triggerer restarts a minute later

    rebuilt = trigger_cls(**original.serialize()[1])
    assert rebuilt.deadline == original.deadline
    event = await only_event(rebuilt)

    assert event["status"] == "timeout"
    assert fake_clock.now == original.deadline
    # Polls at +60, +70, +80, +90 and a last one right at the deadline, +100.
    assert crun_server.count("job-1") == 5


@TRIGGERS
async def test_expired_deadline_polls_once_then_times_out(
    trigger_cls: type[_CrunPollingTrigger], id_key: str, crun_server: ScriptedCrun, fake_clock: FakeClock
) -> None:
    crun_server.script("job-1", status("running"))
    kwargs = make(trigger_cls, "job-1", timeout=30).serialize()[1]
    fake_clock.now += 3600  # the triggerer was down for an hour

    event = await only_event(trigger_cls(**kwargs))

    assert event["status"] == "timeout"
    assert crun_server.count("job-1") == 1
    assert fake_clock.sleeps == []


async def test_expired_deadline_still_reports_a_job_that_finished_meanwhile(
    crun_server: ScriptedCrun, fake_clock: FakeClock
) -> None:
    crun_server.script("task-1", status("success", result=MEDIA))
    kwargs = make(CrunTaskTrigger, "task-1", timeout=30).serialize()[1]
    fake_clock.now += 3600

    event = await only_event(CrunTaskTrigger(**kwargs))

    assert event["status"] == "success"


# --------------------------------------------------------------------------------------------
# Outcomes


@pytest.mark.parametrize(
    ("trigger_cls", "id_key", "word"),
    [
        (CrunTaskTrigger, "crun_task_id", "success"),
        (CrunTaskTrigger, "crun_task_id", "SUCCEEDED"),
        (CrunTaskTrigger, "crun_task_id", "Succeed"),
        (CrunFaceDetectionTrigger, "detect_task_id", "succeeded"),
        (CrunFaceDetectionTrigger, "detect_task_id", "Success"),
        (CrunFaceDetectionTrigger, "detect_task_id", "SUCCEED"),
    ],
    ids=[
        "task-success",
        "task-SUCCEEDED",
        "task-Succeed",
        "detect-succeeded",
        "detect-Success",
        "detect-SUCCEED",
    ],
)
async def test_success_event_carries_data(
    trigger_cls: type[_CrunPollingTrigger],
    id_key: str,
    word: str,
    crun_server: ScriptedCrun,
    fake_clock: FakeClock,
) -> None:
    data = {"status": word, "result": MEDIA, "some_new_field": [1, 2]}
    crun_server.script("job-1", status("running"), ok(data))

    event = await only_event(make(trigger_cls, "job-1"))

    assert event == {
        "status": "success",
        id_key: "job-1",
        "data": data,
        "message": event["message"],
    }
    assert "job-1" in event["message"]
    assert crun_server.count("job-1") == 2
    assert fake_clock.sleeps == [5.0]


@TRIGGERS
async def test_failed_status_gives_failed_event_with_crun_detail(
    trigger_cls: type[_CrunPollingTrigger], id_key: str, crun_server: ScriptedCrun, fake_clock: FakeClock
) -> None:
    data = {"status": "failed", "result": {"code": 501, "message": "no face in target image"}}
    crun_server.script("job-1", status("pending"), ok(data))

    event = await only_event(make(trigger_cls, "job-1", resume_state={"attempt": 1}))

    assert event["status"] == "failed"
    assert event[id_key] == "job-1"
    assert event["data"] == data
    assert "no face in target image (code 501)" in event["message"]
    assert event["resume_state"] == {"attempt": 1}


@pytest.mark.parametrize(
    ("reply", "expected_status", "expected_text"),
    [
        (api_error(401, "invalid api key"), "error", "invalid api key"),
        (api_error(402, "insufficient credits"), "error", "insufficient credits"),
        (api_error(404, "task not found"), "error", "task not found"),
        (api_error(422, "task_id is required"), "error", "task_id is required"),
        (api_error(505, "feature disabled"), "error", "feature disabled"),
        (api_error(402, "insufficient credits", http_status=200), "error", "insufficient credits"),
        (api_error(501, "generation failed: nsfw"), "failed", "generation failed: nsfw"),
        (api_error(501, "generation failed", http_status=200), "failed", "generation failed"),
    ],
    ids=[
        "401-auth",
        "402-credits",
        "404-not-found",
        "422-validation",
        "505-disabled",
        "402-in-http-200-body",
        "501-generation-failed",
        "501-in-http-200-body",
    ],
)
@TRIGGERS
async def test_permanent_api_errors_end_the_trigger(
    trigger_cls: type[_CrunPollingTrigger],
    id_key: str,
    reply: Reply,
    expected_status: str,
    expected_text: str,
    crun_server: ScriptedCrun,
    fake_clock: FakeClock,
) -> None:
    crun_server.script("job-1", status("running"), reply)

    event = await only_event(make(trigger_cls, "job-1"))

    assert event["status"] == expected_status
    assert event[id_key] == "job-1"
    assert expected_text in event["message"]
    assert event["data"] is None
    # Permanent errors are not retried, neither by the hook nor by the trigger.
    assert crun_server.count("job-1") == 2


async def test_missing_api_key_gives_error_event(
    crun_server: ScriptedCrun, fake_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_CRUN_DEFAULT", crun_server.connection_json(api_key=None))

    event = await only_event(make(CrunTaskTrigger, "task-1"))

    assert event["status"] == "error"
    assert "no API key" in event["message"]
    assert crun_server.requests == []


async def test_missing_connection_gives_error_event(fake_clock: FakeClock) -> None:
    event = await only_event(make(CrunTaskTrigger, "task-1", crun_conn_id="crun_does_not_exist"))

    assert event["status"] == "error"
    assert "crun_does_not_exist" in event["message"]


async def test_unexpected_exception_gives_error_event_without_the_key(
    crun_server: ScriptedCrun, fake_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(self: CrunHook, task_id: str) -> dict[str, Any]:
        raise RuntimeError(f"something broke near {API_KEY}")

    monkeypatch.setattr(CrunHook, "aget_task", broken)

    event = await only_event(make(CrunTaskTrigger, "task-1"))

    assert event["status"] == "error"
    assert "RuntimeError: something broke near ***" in event["message"]
    assert API_KEY not in json.dumps(event)


async def test_timeout_event_names_the_id_and_says_crun_keeps_running(
    crun_server: ScriptedCrun, fake_clock: FakeClock
) -> None:
    crun_server.script("task-1", status("running"))
    trigger = make(CrunTaskTrigger, "task-1", poll_interval=10, timeout=35, resume_state={"k": "v"})

    event = await only_event(trigger)

    assert event["status"] == "timeout"
    assert event["crun_task_id"] == "task-1"
    assert event["data"] == {"status": "running"}
    assert event["resume_state"] == {"k": "v"}
    assert "task-1" in event["message"]
    assert "Crun keeps running it" in event["message"]
    # Polls at 0, 10, 20, 30 and at the deadline (35): the last sleep is cut short.
    assert fake_clock.sleeps == [10, 10, 10, 5]
    assert crun_server.count("task-1") == 5


# --------------------------------------------------------------------------------------------
# Transient errors


async def test_recovers_from_a_burst_of_429_and_500(crun_server: ScriptedCrun, fake_clock: FakeClock) -> None:
    too_many = api_error(429, "slow down", **{"Retry-After": "7"})
    crun_server.script(
        "task-1",
        # The hook tries 3 times (max_retries=2), then the trigger backs off 7 s as asked.
        too_many,
        too_many,
        too_many,
        # Then a 500 burst: the hook gives up again, the trigger backs off once more.
        api_error(500, "oops"),
        api_error(500, "oops"),
        api_error(500, "oops"),
        api_error(500, "oops"),
        status("success", result=MEDIA),
    )

    event = await only_event(make(CrunTaskTrigger, "task-1", poll_interval=5, timeout=600))

    assert event["status"] == "success"
    assert crun_server.count("task-1") == 8
    assert fake_clock.hook_sleeps[:2] == [7.0, 7.0]
    assert fake_clock.sleeps[0] == 7.0  # Retry-After honoured by the trigger too
    assert 1.0 <= fake_clock.sleeps[1] <= 2.0  # exponential backoff, second failure


@pytest.mark.parametrize(
    "reply",
    [
        api_error(455, "maintenance"),
        api_error(503, "unavailable"),
        Reply(200, b"<html>proxy error</html>"),
        Reply(502, b"Bad gateway"),
    ],
    ids=["455-maintenance", "503", "malformed-body", "502-html"],
)
async def test_transient_errors_until_the_deadline_give_timeout(
    reply: Reply, crun_server: ScriptedCrun, fake_clock: FakeClock
) -> None:
    crun_server.script("task-1", reply)

    trigger = make(CrunTaskTrigger, "task-1", timeout=120)

    event = await only_event(trigger)

    assert event["status"] == "timeout"
    assert "Last poll failed" in event["message"]
    # The trigger never stops before the deadline; only the hook's own retries (2 here, up to
    # 30 s each) can run past it.
    assert trigger.deadline <= fake_clock.now < trigger.deadline + 2 * 30
    assert crun_server.count("task-1") >= 6


async def test_hook_retries_never_carry_a_poll_past_the_deadline(
    crun_server: ScriptedCrun, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The hook's retry sleep honours Retry-After (60 s) and then never returns: only the trigger's
    # own deadline bound can end this poll. Without it the test hangs until pytest-timeout.
    import airflow_provider_crun.triggers.crun as triggers_module

    hook_waits: list[float] = []

    async def stuck_retry_sleep(seconds: float) -> None:
        hook_waits.append(seconds)
        await asyncio.Event().wait()

    monkeypatch.setattr(CrunHook, "_async_sleep", staticmethod(stuck_retry_sleep))
    monkeypatch.setattr(triggers_module, "LAST_POLL_GRACE_SECONDS", 0.1)
    crun_server.script("task-1", api_error(429, "slow down", **{"Retry-After": "60"}))

    event = await only_event(make(CrunTaskTrigger, "task-1", timeout=0.5))

    assert event["status"] == "timeout"
    assert hook_waits == [60.0]
    assert crun_server.count("task-1") == 1


async def test_transport_errors_keep_polling_until_the_deadline(
    fake_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A port nothing listens on: every attempt is a refused connection.
    server = ScriptedCrun()
    server.port = 9
    monkeypatch.setenv("AIRFLOW_CONN_CRUN_DEFAULT", server.connection_json(max_retries=0))
    trigger = make(CrunTaskTrigger, "task-1", timeout=60)

    event = await only_event(trigger)

    assert event["status"] == "timeout"
    assert "Last poll failed: Crun TaskInfo: ClientConnectorError" in event["message"]
    assert fake_clock.now == trigger.deadline
    assert all(wait <= 30 for wait in fake_clock.sleeps)


# --------------------------------------------------------------------------------------------
# Logging, jitter, cleanup


def rendered(entries: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """``(level, message)`` of structlog entries captured by ``capture_logs``."""
    return [(e["log_level"], e["event"] % tuple(e.get("positional_args", ()))) for e in entries]


async def test_unknown_status_is_logged_once_and_polling_continues(
    crun_server: ScriptedCrun, fake_clock: FakeClock
) -> None:
    crun_server.script(
        "dit-1",
        status("queued_somewhere"),
        status("queued_somewhere"),
        status("queued_somewhere"),
        status("succeeded", result={"id": "m1oZzqYp9dN", "faces": []}),
    )

    with capture_logs() as entries:
        event = await only_event(make(CrunFaceDetectionTrigger, "dit-1"))

    assert event["status"] == "success"
    assert crun_server.count("dit-1") == 4
    unknown = [(level, text) for level, text in rendered(entries) if "unknown status" in text]
    assert unknown == [
        ("warning", "Crun face detection dit-1: unknown status 'queued_somewhere', treating as not finished")
    ]


async def test_status_changes_are_logged_with_elapsed_time(
    crun_server: ScriptedCrun, fake_clock: FakeClock
) -> None:
    crun_server.script("task-1", status("pending"), status("running"), status("running"), status("success"))

    with capture_logs() as entries:
        await only_event(make(CrunTaskTrigger, "task-1"))

    changes = [text for level, text in rendered(entries) if " -> " in text and level == "info"]
    assert [message.split(" after ")[0] for message in changes] == [
        "Crun task task-1: (start) -> pending",
        "Crun task task-1: pending -> running",
        "Crun task task-1: running -> success",
    ]
    assert all(message.endswith(" s") for message in changes)


async def test_first_poll_is_jittered_within_the_poll_interval(
    crun_server: ScriptedCrun, fake_clock: FakeClock
) -> None:
    crun_server.script("task-1", status("success"))

    await only_event(make(CrunTaskTrigger, "task-1", poll_interval=8, first_poll_jitter=True))

    assert len(fake_clock.sleeps) <= 1
    assert all(0 <= wait < 8 for wait in fake_clock.sleeps)


async def test_cleanup_does_not_report_a_cancellation() -> None:
    trigger = CrunTaskTrigger("task-1")

    with capture_logs() as entries:
        await trigger.cleanup()

    assert entries == []
