"""The Crun triggers: what they serialize, and the one event ``run()`` yields against a loopback Crun."""

from __future__ import annotations

import asyncio
import importlib
import json
import time
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException
from airflow.triggers.base import TriggerEvent

from airflow_provider_crun.exceptions import (
    CrunAuthError,
    CrunError,
    CrunFeatureDisabledError,
    CrunNotFoundError,
    CrunServerError,
    CrunValidationError,
)
from airflow_provider_crun.hooks.crun import CrunHook
from airflow_provider_crun.operators.crun import CrunCreateTaskOperator
from airflow_provider_crun.protocol import jobs
from airflow_provider_crun.triggers.crun import TRIGGERS, CrunFaceDetectionTrigger, CrunTaskTrigger
from tests.support.connections import TEST_API_KEY, crun_connection_json
from tests.support.crun_answers import (
    DETECT_ID,
    DETECT_TASK_ID,
    FACE_0,
    FACE_1,
    IMAGE,
    RESULT,
    TASK_ID,
    detection_data,
    task_data,
)
from tests.support.fakes import make_context
from tests.support.scripted_server import ScriptedServer, fail, ok

TASK_INFO = "/client/job/TaskInfo"
DETECT_RESULT = "/client/job/detect-face-result"
TASK_SUMMARY = {"status": "success", "media_urls": [RESULT], "credits": 6.0, "duration_s": 4.2}
DETECTION_SUMMARY = {"detect_id": DETECT_ID, "faces": [{"id": 0, "link": FACE_0}, {"id": 1, "link": FACE_1}]}
# A Retry-After of 0 keeps the real-clock backoff of these tests instant.
NO_WAIT = {"Retry-After": "0"}
GUARD_SECONDS = 30

KINDS = pytest.mark.parametrize(
    ("trigger_cls", "id_key"),
    [(CrunTaskTrigger, "crun_task_id"), (CrunFaceDetectionTrigger, "detect_task_id")],
    ids=["task", "face-detection"],
)


def crun_says(code: int, message: str, status: int | None = None) -> tuple[int, bytes, dict[str, str]]:
    body = json.dumps({"code": code, "message": message, "data": None}).encode()
    return status or code, body, {}


def task_trigger(**kwargs: Any) -> CrunTaskTrigger:
    kwargs.setdefault("deadline", time.time() + 60)
    kwargs.setdefault("poll_interval", 0.01)
    return CrunTaskTrigger(TASK_ID, **kwargs)


async def only_event(trigger: CrunTaskTrigger | CrunFaceDetectionTrigger) -> dict[str, Any]:
    # A guard, not a timing check: a broken loop fails here instead of hanging the suite.
    async with asyncio.timeout(GUARD_SECONDS):
        events = [event async for event in trigger.run()]
    assert len(events) == 1
    assert isinstance(events[0], TriggerEvent)
    payload = events[0].payload
    # Events cross the metadata database: plain JSON only.
    assert json.loads(json.dumps(payload)) == payload
    return payload


# --------------------------------------------------------------------------------------------
# serialize()


@KINDS
def test_serialize_returns_exactly_the_constructor_arguments(trigger_cls: type, id_key: str) -> None:
    arguments = {
        id_key: "job-1",
        "crun_conn_id": "crun_other",
        "poll_interval": 7.0,
        "deadline": 1_800_000_123.5,
        "limit": "execution_timeout",
        "resume_state": {"model": "image-face-swap-multi", "image_url": IMAGE},
    }

    classpath, kwargs = trigger_cls(**arguments).serialize()

    assert classpath == f"airflow_provider_crun.triggers.crun.{trigger_cls.__name__}"
    assert kwargs == arguments
    module, _, name = classpath.rpartition(".")
    rebuilt = getattr(importlib.import_module(module), name)(**kwargs)
    assert rebuilt.serialize() == (classpath, kwargs)


@KINDS
def test_serialize_of_the_defaults_round_trips_through_serde(trigger_cls: type, id_key: str) -> None:
    try:
        from airflow.sdk import serde
    except ImportError:  # Airflow 3.1
        from airflow.serialization import serde  # type: ignore[no-redef]

    classpath, kwargs = trigger_cls("job-1", deadline=1_800_000_000).serialize()

    assert kwargs == {
        id_key: "job-1",
        "crun_conn_id": "crun_default",
        "poll_interval": 10.0,
        "deadline": 1_800_000_000.0,
        "limit": "timeout",
        "resume_state": None,
    }
    assert serde.deserialize(serde.serialize(kwargs)) == kwargs
    assert TRIGGERS[id_key](**kwargs).serialize() == (classpath, kwargs)


# --------------------------------------------------------------------------------------------
# run(): exactly one event per outcome


async def test_success_event_carries_the_summary_and_the_resume_state(scripted_crun: ScriptedServer) -> None:
    scripted_crun.script(
        TASK_INFO, ok(task_data("pending")), ok(task_data("running")), ok(task_data("success"))
    )

    event = await only_event(task_trigger(resume_state={"model": "image-face-swap"}))

    assert event == {
        "status": "success",
        "crun_task_id": TASK_ID,
        "message": f"Crun task {TASK_ID} succeeded.",
        "result": TASK_SUMMARY,
        "resume_state": {"model": "image-face-swap"},
    }
    assert scripted_crun.count(TASK_INFO) == 3
    assert {request.query["task_id"] for request in scripted_crun.requests} == {TASK_ID}


async def test_detection_success_event(scripted_crun: ScriptedServer) -> None:
    scripted_crun.script(DETECT_RESULT, ok(detection_data("processing")), ok(detection_data()))

    event = await only_event(
        CrunFaceDetectionTrigger(DETECT_TASK_ID, deadline=time.time() + 60, poll_interval=0.01)
    )

    assert event["status"] == "success"
    assert event["detect_task_id"] == DETECT_TASK_ID
    assert event["result"] == DETECTION_SUMMARY


async def test_failed_job_gives_a_failed_event_with_crun_explanation(scripted_crun: ScriptedServer) -> None:
    scripted_crun.script(TASK_INFO, ok(task_data("running")), ok(task_data("failed")))

    event = await only_event(task_trigger())

    assert event["status"] == "failed"
    assert event["message"] == f"Crun task {TASK_ID} failed: the model crashed (code 500)"
    assert event["error"] == {
        "kind": "job_failed",
        "message": event["message"],
        "permanent": True,
        "job_id": TASK_ID,
    }


async def test_501_read_gives_a_failed_event(scripted_crun: ScriptedServer) -> None:
    scripted_crun.script(TASK_INFO, fail(501, 200))

    event = await only_event(task_trigger())

    assert event["status"] == "failed"
    assert event["error"]["kind"] == "job_failed"
    assert scripted_crun.count(TASK_INFO) == 1


@pytest.mark.parametrize("limit", ["timeout", "execution_timeout"], ids=["timeout", "execution-timeout"])
async def test_deadline_in_the_past_polls_once_then_gives_a_timeout_event(
    scripted_crun: ScriptedServer, limit: str
) -> None:
    scripted_crun.script(TASK_INFO, ok(task_data("running")))

    event = await only_event(task_trigger(deadline=time.time() - 3600, limit=limit, resume_state={"k": "v"}))

    assert event["status"] == "timeout"
    assert event["error"]["kind"] == "timeout"
    assert event["error"]["limit"] == limit
    assert f"(its {limit})" in event["message"]
    assert event["resume_state"] == {"k": "v"}
    assert scripted_crun.count(TASK_INFO) == 1


async def test_deadline_in_the_past_still_reports_a_job_that_finished(scripted_crun: ScriptedServer) -> None:
    scripted_crun.script(TASK_INFO, ok(task_data("success")))

    event = await only_event(task_trigger(deadline=time.time() - 3600))

    assert event["status"] == "success"


async def test_422_gives_an_error_event_with_the_errors_fields(scripted_crun: ScriptedServer) -> None:
    scripted_crun.script(TASK_INFO, ok(task_data("running")), fail(422, 422), ok(task_data("success")))

    event = await only_event(task_trigger())

    assert event["status"] == "error"
    assert event["error"] == {
        "kind": "validation",
        "message": "crun error 422",
        "permanent": True,
        "code": 422,
        "http_status": 422,
        "retry_after": None,
    }
    assert scripted_crun.count(TASK_INFO) == 2


async def test_missing_api_key_gives_a_config_error_event_and_sends_nothing(
    scripted_crun: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_CRUN_DEFAULT", crun_connection_json(host=scripted_crun.url, api_key=None)
    )

    event = await only_event(task_trigger())

    assert event["status"] == "error"
    assert event["error"]["kind"] == "config"
    assert event["error"]["permanent"] is True
    assert "'crun_default' has no API key" in event["message"]
    assert scripted_crun.requests == []


async def test_missing_connection_gives_an_error_event_naming_it(scripted_crun: ScriptedServer) -> None:
    event = await only_event(task_trigger(crun_conn_id="crun_does_not_exist"))

    assert event["status"] == "error"
    assert "crun_does_not_exist" in event["message"]
    assert scripted_crun.requests == []


async def test_transient_errors_past_max_retries_give_a_retryable_error_event(
    scripted_crun: ScriptedServer,
) -> None:
    scripted_crun.script(TASK_INFO, fail(500, 500, NO_WAIT))

    event = await only_event(task_trigger())

    assert event["status"] == "error"
    assert (event["error"]["kind"], event["error"]["permanent"]) == ("server", False)
    # scripted_crun's connection allows max_retries=2 failed polls after the first.
    assert scripted_crun.count(TASK_INFO) == 3
    with pytest.raises(CrunServerError) as raised:
        CrunCreateTaskOperator(
            task_id="swap", model="image-face-swap", input={"image_url": IMAGE}
        ).execute_complete(make_context(), event)
    assert not isinstance(raised.value, AirflowFailException)


async def test_an_unexpected_exception_becomes_an_error_event(
    scripted_crun: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(self: CrunHook, kind: jobs.JobKind, job_id: str) -> dict[str, Any]:
        raise RuntimeError(f"something broke near {TEST_API_KEY}")

    monkeypatch.setattr(CrunHook, "aget_job", broken)

    event = await only_event(task_trigger())

    assert event["status"] == "error"
    assert event["message"] == "RuntimeError: something broke near ***"
    assert event["error"]["permanent"] is False


# --------------------------------------------------------------------------------------------
# The API key never reaches an event


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        (crun_says(422, f"task_id is invalid for key {TEST_API_KEY}"), "error"),
        (crun_says(401, f"invalid api key {TEST_API_KEY}", status=200), "error"),
        (crun_says(501, f"generation failed for {TEST_API_KEY}"), "failed"),
        (ok(task_data("failed", result={"code": 500, "message": f"bad key {TEST_API_KEY}"})), "failed"),
    ],
    ids=[
        "422-echoes-the-key",
        "401-in-body-echoes-the-key",
        "501-echoes-the-key",
        "failure-detail-echoes-it",
    ],
)
async def test_a_key_echoed_by_crun_is_masked_in_the_event(
    scripted_crun: ScriptedServer, answer: tuple[int, bytes, dict[str, str]], status: str
) -> None:
    scripted_crun.script(TASK_INFO, answer)

    event = await only_event(task_trigger())

    assert event["status"] == status
    assert TEST_API_KEY not in json.dumps(event)
    assert "***" in event["message"]
    assert "***" in event["error"]["message"]


# --------------------------------------------------------------------------------------------
# Issue #14


async def test_issue_14_item_4_each_poll_is_exactly_one_request(
    scripted_crun: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rate-limited poll is not retried inside the hook: the trigger backs off and polls again."""
    polls: list[str] = []
    read_once = CrunHook.aget_job

    async def counted(self: CrunHook, kind: jobs.JobKind, job_id: str) -> dict[str, Any]:
        polls.append(job_id)
        return await read_once(self, kind, job_id)

    monkeypatch.setattr(CrunHook, "aget_job", counted)
    scripted_crun.script(TASK_INFO, fail(429, 429, NO_WAIT), ok(task_data("success")))

    event = await only_event(task_trigger())

    assert event["status"] == "success"
    # (HTTP requests, polls): one request per poll.
    assert (scripted_crun.count(TASK_INFO), len(polls)) == (2, 2)


@pytest.mark.parametrize(
    ("code", "twin"),
    [
        (401, CrunAuthError),
        (404, CrunNotFoundError),
        (422, CrunValidationError),
        (505, CrunFeatureDisabledError),
    ],
    ids=["401-auth", "404-not-found", "422-validation", "505-disabled"],
)
async def test_issue_14_item_2_a_permanent_poll_error_fails_the_operator_without_retry(
    scripted_crun: ScriptedServer, code: int, twin: type[CrunError]
) -> None:
    scripted_crun.script(TASK_INFO, fail(code, code))
    operator = CrunCreateTaskOperator(task_id="swap", model="image-face-swap", input={"image_url": IMAGE})

    event = await only_event(task_trigger(resume_state={"model": "image-face-swap"}))

    assert event["status"] == "error"
    assert (event["error"]["code"], event["error"]["permanent"]) == (code, True)
    with pytest.raises(twin) as raised:
        operator.execute_complete(make_context(), event)
    assert type(raised.value) is twin
    assert isinstance(raised.value, AirflowFailException)
    assert raised.value.code == code
    assert scripted_crun.count(TASK_INFO) == 1
