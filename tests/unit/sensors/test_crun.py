"""The Crun sensors: poke mode against requests-mock, deferrable mode through the real trigger."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests_mock as requests_mock_module
from airflow.providers.common.compat.sdk import (
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowTaskTimeout,
    TaskDeferred,
)
from airflow.sdk.bases.operator import ExecutorSafeguard

from airflow_provider_crun.exceptions import (
    CrunAuthError,
    CrunError,
    CrunJobFailedError,
    CrunNotFoundError,
    CrunServerError,
    CrunUnclassifiedError,
    CrunValidationError,
)
from airflow_provider_crun.sensors.crun import CrunFaceDetectionSensor, CrunTaskSensor
from airflow_provider_crun.triggers.crun import CrunFaceDetectionTrigger, CrunTaskTrigger
from tests.support.crun_answers import (
    BASE,
    DETECT_ID,
    DETECT_RESULT,
    DETECT_TASK_ID,
    FACE_0,
    FACE_1,
    RESULT,
    TASK_ID,
    TASK_INFO,
    api_error,
    detection_data,
    ok,
    task_data,
)
from tests.support.fakes import make_context
from tests.support.scripted_server import ScriptedServer, fail
from tests.support.scripted_server import ok as served

Mocker = requests_mock_module.Mocker
Sensor = CrunTaskSensor | CrunFaceDetectionSensor
Trigger = CrunTaskTrigger | CrunFaceDetectionTrigger

TASK_XCOM = {
    "crun_task_id": TASK_ID,
    "status": "success",
    "media_urls": [RESULT],
    "credits": 6.0,
    "duration_s": 4.2,
}
DETECTION_XCOM = {
    "detect_task_id": DETECT_TASK_ID,
    "detect_id": DETECT_ID,
    "faces": [{"id": 0, "link": FACE_0}, {"id": 1, "link": FACE_1}],
}
KINDS = pytest.mark.parametrize(
    ("kind", "url", "path", "running", "done", "xcom"),
    [
        ("task", TASK_INFO, "/client/job/TaskInfo", task_data("running"), task_data("success"), TASK_XCOM),
        (
            "detection",
            DETECT_RESULT,
            "/client/job/detect-face-result",
            detection_data("processing"),
            detection_data(),
            DETECTION_XCOM,
        ),
    ],
    ids=["task", "face-detection"],
)


@pytest.fixture(autouse=True)
def _allow_direct_execute(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let the tests call ``execute`` directly, outside the task runner."""
    monkeypatch.setattr(ExecutorSafeguard, "test_mode", True)


def sensor(kind: str, **kwargs: Any) -> Sensor:
    if kind == "task":
        return CrunTaskSensor(task_id="wait", crun_task_id=TASK_ID, **kwargs)
    return CrunFaceDetectionSensor(task_id="wait", detect_task_id=DETECT_TASK_ID, **kwargs)


def deferred_trigger(
    kind: str, requests_mock: Mocker, url: str, running: dict[str, Any], **kwargs: Any
) -> Trigger:
    """Run a deferrable sensor's execute: its first poke sees ``running``, so it defers."""
    requests_mock.get(url, **ok(running))
    with pytest.raises(TaskDeferred) as deferred:
        sensor(kind, deferrable=True, **kwargs).execute(make_context())
    trigger = deferred.value.trigger
    assert isinstance(trigger, (CrunTaskTrigger, CrunFaceDetectionTrigger))
    return trigger


async def event_of(trigger: Trigger) -> dict[str, Any]:
    # A guard, not a timing check: a broken trigger fails here instead of hanging the suite.
    async with asyncio.timeout(30):
        events = [event async for event in trigger.run()]
    assert len(events) == 1
    return events[0].payload


# --------------------------------------------------------------------------------------------
# poke()


@KINDS
def test_poke_is_done_with_the_summary_as_xcom(
    crun_conn: str,
    requests_mock: Mocker,
    kind: str,
    url: str,
    path: str,
    running: dict[str, Any],
    done: dict[str, Any],
    xcom: dict[str, Any],
) -> None:
    requests_mock.get(url, **ok(done))

    result = sensor(kind).poke(make_context())

    assert result.is_done is True
    assert result.xcom_value == xcom
    assert requests_mock.call_count == 1


@KINDS
def test_poke_is_not_done_while_the_job_runs(
    crun_conn: str,
    requests_mock: Mocker,
    kind: str,
    url: str,
    path: str,
    running: dict[str, Any],
    done: dict[str, Any],
    xcom: dict[str, Any],
) -> None:
    requests_mock.get(url, **ok(running))

    assert sensor(kind).poke(make_context()).is_done is False


def test_blocking_execute_pokes_until_done(crun_conn: str, requests_mock: Mocker) -> None:
    requests_mock.get(
        TASK_INFO, [ok(task_data("pending")), ok(task_data("running")), ok(task_data("success"))]
    )

    assert sensor("task", poke_interval=0).execute(make_context()) == TASK_XCOM
    assert requests_mock.call_count == 3


@pytest.mark.parametrize(
    ("answer", "error", "permanent"),
    [
        (api_error(401), CrunAuthError, True),
        (api_error(404, in_body=True), CrunNotFoundError, True),
        (api_error(422), CrunValidationError, True),
        (ok(task_data("failed")), CrunJobFailedError, True),
        (api_error(501), CrunJobFailedError, True),
        (api_error(500), CrunServerError, False),
    ],
    ids=["401", "404-in-body", "422", "failed-task", "501-read", "500-after-hook-retries"],
)
def test_poke_raises_the_airflow_twin(
    crun_conn: str,
    requests_mock: Mocker,
    no_backoff: list[float],
    answer: dict[str, Any],
    error: type[CrunError],
    permanent: bool,
) -> None:
    requests_mock.get(TASK_INFO, **answer)

    with pytest.raises(error) as raised:
        sensor("task").poke(make_context())

    assert type(raised.value) is error
    assert isinstance(raised.value, AirflowFailException) is permanent
    # Permanent answers are read once; a 500 goes through the hook's max_retries=3 first.
    assert requests_mock.call_count == (1 if permanent else 4)


# --------------------------------------------------------------------------------------------
# Deferrable mode


@KINDS
def test_deferrable_execute_returns_at_once_when_the_first_poke_is_done(
    crun_conn: str,
    requests_mock: Mocker,
    kind: str,
    url: str,
    path: str,
    running: dict[str, Any],
    done: dict[str, Any],
    xcom: dict[str, Any],
) -> None:
    requests_mock.get(url, **ok(done))

    assert sensor(kind, deferrable=True).execute(make_context()) == xcom
    assert requests_mock.call_count == 1


@pytest.mark.parametrize(
    ("kind", "url", "running", "trigger_cls", "id_key", "job_id"),
    [
        ("task", TASK_INFO, task_data("running"), CrunTaskTrigger, "crun_task_id", TASK_ID),
        (
            "detection",
            DETECT_RESULT,
            detection_data("processing"),
            CrunFaceDetectionTrigger,
            "detect_task_id",
            DETECT_TASK_ID,
        ),
    ],
    ids=["task", "face-detection"],
)
def test_deferrable_execute_defers_to_a_trigger_holding_the_deadline(
    crun_conn: str,
    requests_mock: Mocker,
    kind: str,
    url: str,
    running: dict[str, Any],
    trigger_cls: type,
    id_key: str,
    job_id: str,
) -> None:
    requests_mock.get(url, **ok(running))
    before = time.time()

    with pytest.raises(TaskDeferred) as deferred:
        sensor(kind, deferrable=True, poke_interval=3, timeout=900, crun_conn_id="crun_default").execute(
            make_context()
        )

    after = time.time()
    assert type(deferred.value.trigger) is trigger_cls
    assert deferred.value.method_name == "execute_complete"
    # The deadline lives in the trigger: a framework timeout would skip execute_complete.
    assert deferred.value.timeout is None
    kwargs = deferred.value.trigger.serialize()[1]
    assert before + 900 <= kwargs.pop("deadline") <= after + 900
    assert kwargs == {
        id_key: job_id,
        "crun_conn_id": "crun_default",
        "poll_interval": 3.0,
        "limit": "timeout",
        "resume_state": None,
    }
    assert requests_mock.call_count == 1


@KINDS
async def test_deferrable_resume_returns_the_same_xcom_as_poke(
    scripted_crun: ScriptedServer,
    requests_mock: Mocker,
    kind: str,
    url: str,
    path: str,
    running: dict[str, Any],
    done: dict[str, Any],
    xcom: dict[str, Any],
) -> None:
    scripted_crun.script(path, served(running), served(done))
    served_url = url.replace(BASE, scripted_crun.url)
    trigger = deferred_trigger(kind, requests_mock, served_url, running, poke_interval=0.01)

    event = await event_of(trigger)

    assert sensor(kind).execute_complete(make_context(), event) == xcom


async def test_deferrable_resume_after_the_deadline_raises_sensor_timeout(
    scripted_crun: ScriptedServer, requests_mock: Mocker
) -> None:
    scripted_crun.script("/client/job/TaskInfo", served(task_data("running")))
    trigger = deferred_trigger(
        "task",
        requests_mock,
        f"{scripted_crun.url}/api/v1/client/job/TaskInfo",
        task_data("running"),
        timeout=0,
    )

    event = await event_of(trigger)

    assert event["status"] == "timeout"
    with pytest.raises(AirflowSensorTimeout, match=f"{TASK_ID} did not finish by"):
        sensor("task").execute_complete(make_context(), event)


def test_deferrable_deadline_is_execution_timeout_when_it_comes_first(
    crun_conn: str, requests_mock: Mocker
) -> None:
    requests_mock.get(TASK_INFO, **ok(task_data("running")))
    started = datetime.now(UTC)

    with pytest.raises(TaskDeferred) as deferred:
        sensor("task", deferrable=True, timeout=3 * 3600, execution_timeout=timedelta(seconds=60)).execute(
            make_context(started=started)
        )

    kwargs = deferred.value.trigger.serialize()[1]
    assert (kwargs["deadline"], kwargs["limit"]) == (started.timestamp() + 60, "execution_timeout")


async def test_deferrable_resume_after_execution_timeout_raises_task_timeout(
    scripted_crun: ScriptedServer, requests_mock: Mocker
) -> None:
    """Like poke mode, where Airflow's own execution_timeout ends the try: a retry may follow."""
    scripted_crun.script("/client/job/TaskInfo", served(task_data("running")))
    url = f"{scripted_crun.url}/api/v1/client/job/TaskInfo"
    requests_mock.get(url, **ok(task_data("running")))
    with pytest.raises(TaskDeferred) as deferred:
        sensor("task", deferrable=True, execution_timeout=timedelta(seconds=1)).execute(
            make_context(started=datetime.now(UTC) - timedelta(seconds=5))
        )

    event = await event_of(deferred.value.trigger)

    assert (event["status"], event["error"]["limit"]) == ("timeout", "execution_timeout")
    with pytest.raises(AirflowTaskTimeout, match=r"\(its execution_timeout\)"):
        sensor("task").execute_complete(make_context(), event)


@pytest.mark.parametrize(
    ("served_answer", "mocked_answer", "error"),
    [
        (fail(422, 422), api_error(422), CrunValidationError),
        (fail(401, 200), api_error(401, in_body=True), CrunAuthError),
        (served(task_data("failed")), ok(task_data("failed")), CrunJobFailedError),
        (fail(501, 501), api_error(501), CrunJobFailedError),
    ],
    ids=["422", "401-in-body", "failed-task", "501-read"],
)
async def test_poke_and_deferrable_raise_the_same_exception_for_the_same_answer(
    scripted_crun: ScriptedServer,
    requests_mock: Mocker,
    served_answer: tuple[int, bytes, dict[str, str]],
    mocked_answer: dict[str, Any],
    error: type[CrunError],
) -> None:
    url = f"{scripted_crun.url}/api/v1/client/job/TaskInfo"
    requests_mock.get(url, **mocked_answer)
    with pytest.raises(CrunError) as poked:
        sensor("task").poke(make_context())

    scripted_crun.script("/client/job/TaskInfo", served_answer)
    trigger = deferred_trigger("task", requests_mock, url, task_data("running"), poke_interval=0.01)
    with pytest.raises(CrunError) as resumed:
        sensor("task").execute_complete(make_context(), await event_of(trigger))

    assert type(poked.value) is type(resumed.value) is error
    assert str(poked.value) == str(resumed.value)
    assert isinstance(resumed.value, AirflowFailException)


@pytest.mark.parametrize(
    "event",
    [
        None,
        "success",
        {"status": "cancelled", "crun_task_id": TASK_ID, "result": {}},
        {"status": "success", "crun_task_id": TASK_ID},
        {"status": "success", "result": {"status": "success"}},
        {"status": "error", "crun_task_id": TASK_ID, "message": "no error fields"},
    ],
    ids=[
        "none",
        "bare-string",
        "unknown-status",
        "success-without-result",
        "without-id",
        "error-without-fields",
    ],
)
def test_execute_complete_rejects_anything_but_a_well_formed_success(event: Any) -> None:
    with pytest.raises(CrunUnclassifiedError) as raised:
        sensor("task").execute_complete(make_context(), event)

    # Retryable: a retry reattaches, it never pays twice.
    assert not isinstance(raised.value, AirflowFailException)
