"""Tests for the Crun sensors: poke mode against requests-mock, deferral and resume."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import (
    AirflowFailException,
    AirflowSensorTimeout,
    PokeReturnValue,
    TaskDeferred,
)
from airflow.sdk.bases.operator import ExecutorSafeguard

from airflow_provider_crun.exceptions import CrunAuthError, CrunError, CrunJobFailedError
from airflow_provider_crun.sensors.crun import CrunFaceDetectionSensor, CrunTaskSensor, _CrunJobSensor
from airflow_provider_crun.triggers.crun import CrunFaceDetectionTrigger, CrunTaskTrigger
from tests.conftest import TEST_API

TASK_INFO = f"{TEST_API}/client/job/TaskInfo"
DETECT_RESULT = f"{TEST_API}/client/job/detect-face-result"

SENSORS = pytest.mark.parametrize(
    ("sensor_cls", "id_key", "url", "trigger_cls"),
    [
        (CrunTaskSensor, "crun_task_id", TASK_INFO, CrunTaskTrigger),
        (CrunFaceDetectionSensor, "detect_task_id", DETECT_RESULT, CrunFaceDetectionTrigger),
    ],
    ids=["task", "face-detection"],
)


@pytest.fixture(autouse=True)
def _allow_direct_execute(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let the tests call ``execute`` directly, outside the task runner."""
    monkeypatch.setattr(ExecutorSafeguard, "test_mode", True)


def make(sensor_cls: type[_CrunJobSensor], id_key: str, **kwargs: Any) -> _CrunJobSensor:
    return sensor_cls(task_id="wait", **{id_key: "job-1"}, **kwargs)


def envelope(data: dict[str, Any] | None, code: int = 200, message: str = "success") -> dict[str, Any]:
    return {"code": code, "message": message, "data": data}


# --------------------------------------------------------------------------------------------
# Construction


@SENSORS
def test_construction_touches_no_connection(
    sensor_cls: type[_CrunJobSensor], id_key: str, url: str, trigger_cls: type
) -> None:
    sensor = make(sensor_cls, id_key, crun_conn_id="does_not_exist")

    assert sensor.template_fields == (id_key,)
    assert "hook" not in sensor.__dict__
    assert sensor.deferrable is False
    assert sensor.poke_interval == 10.0


def test_importing_the_sensors_loads_no_http_stack() -> None:
    code = (
        "import json, sys\n"
        "import airflow.providers.common.compat.sdk as sdk\n"
        "sdk.BaseSensorOperator, sdk.conf, sdk.PokeReturnValue, sdk.AirflowSensorTimeout\n"
        "before = set(sys.modules)\n"
        "import airflow_provider_crun.sensors.crun\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = json.loads(out.strip().splitlines()[-1])

    heavy = (
        "aiohttp",
        "requests",
        "tenacity",
        "airflow_provider_crun.triggers",
        "airflow_provider_crun.hooks",
    )
    assert [name for name in loaded if name.startswith(heavy)] == []


# --------------------------------------------------------------------------------------------
# poke()


@pytest.mark.parametrize("word", ["success", "SUCCEEDED", "succeed"], ids=["success", "SUCCEEDED", "succeed"])
@SENSORS
def test_poke_done_returns_the_data(
    sensor_cls: type[_CrunJobSensor],
    id_key: str,
    url: str,
    trigger_cls: type,
    word: str,
    crun_conn: str,
    requests_mock: Any,
) -> None:
    data = {"status": word, "result": {"media_urls": ["https://cdn.example/x.png"]}}
    requests_mock.get(url, json=envelope(data))

    result = make(sensor_cls, id_key).poke({})

    assert result.is_done is True
    assert result.xcom_value == data
    assert requests_mock.last_request.qs == {id_key.replace("crun_", ""): ["job-1"]}


@pytest.mark.parametrize(
    "word", ["pending", "running", "starting", "processing", "queued", ""], ids=lambda w: w or "empty"
)
@SENSORS
def test_poke_not_done(
    sensor_cls: type[_CrunJobSensor],
    id_key: str,
    url: str,
    trigger_cls: type,
    word: str,
    crun_conn: str,
    requests_mock: Any,
) -> None:
    requests_mock.get(url, json=envelope({"status": word}))

    result = make(sensor_cls, id_key).poke({})

    assert isinstance(result, PokeReturnValue)
    assert result.is_done is False


@SENSORS
def test_poke_failed_status_raises_a_fail_exception(
    sensor_cls: type[_CrunJobSensor],
    id_key: str,
    url: str,
    trigger_cls: type,
    crun_conn: str,
    requests_mock: Any,
) -> None:
    requests_mock.get(url, json=envelope({"status": "failed", "error": "no face found"}))

    with pytest.raises(CrunJobFailedError, match="job-1 failed: no face found") as caught:
        make(sensor_cls, id_key).poke({})

    assert isinstance(caught.value, AirflowFailException)
    assert caught.value.job_id == "job-1"


@SENSORS
def test_poke_generation_failed_code_raises_a_fail_exception(
    sensor_cls: type[_CrunJobSensor],
    id_key: str,
    url: str,
    trigger_cls: type,
    crun_conn: str,
    requests_mock: Any,
) -> None:
    requests_mock.get(url, json=envelope(None, 501, "generation failed"))

    with pytest.raises(CrunJobFailedError, match="generation failed"):
        make(sensor_cls, id_key).poke({})


def test_poke_transient_error_after_hook_retries_is_not_done(
    crun_conn: str, retry_waits: list[float], requests_mock: Any
) -> None:
    requests_mock.get(TASK_INFO, status_code=500, json=envelope(None, 500, "oops"))

    result = make(CrunTaskSensor, "crun_task_id").poke({})

    assert result.is_done is False
    assert requests_mock.call_count == 4  # the hook's first try and its 3 retries


def test_poke_permanent_error_raises(crun_conn: str, requests_mock: Any) -> None:
    requests_mock.get(TASK_INFO, status_code=401, json=envelope(None, 401, "invalid api key"))

    with pytest.raises(CrunAuthError, match="invalid api key"):
        make(CrunTaskSensor, "crun_task_id").poke({})
    assert requests_mock.call_count == 1


def test_blocking_execute_pokes_until_done(crun_conn: str, requests_mock: Any) -> None:
    done = {"status": "success", "result": {"media_urls": ["https://cdn.example/x.png"]}}
    requests_mock.get(
        TASK_INFO,
        [
            {"json": envelope({"status": "pending"})},
            {"json": envelope({"status": "running"})},
            {"json": envelope(done)},
        ],
    )

    result = make(CrunTaskSensor, "crun_task_id", poke_interval=0).execute({})

    assert result == done
    assert requests_mock.call_count == 3


# --------------------------------------------------------------------------------------------
# Deferrable mode


@SENSORS
def test_deferrable_execute_defers_with_the_sensor_timing(
    sensor_cls: type[_CrunJobSensor],
    id_key: str,
    url: str,
    trigger_cls: type,
    crun_conn: str,
    requests_mock: Any,
) -> None:
    requests_mock.get(url, json=envelope({"status": "running"}))
    sensor = make(
        sensor_cls, id_key, deferrable=True, poke_interval=3, timeout=900, crun_conn_id="crun_default"
    )

    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})

    trigger = deferred.value.trigger
    assert type(trigger) is trigger_cls
    assert deferred.value.method_name == "execute_complete"
    # The deadline lives in the trigger; a framework timeout would skip execute_complete.
    assert deferred.value.timeout is None
    _, kwargs = trigger.serialize()
    assert kwargs[id_key] == "job-1"
    assert kwargs["crun_conn_id"] == "crun_default"
    assert kwargs["poll_interval"] == 3.0
    assert kwargs["timeout"] == 900.0
    assert requests_mock.call_count == 1


@SENSORS
def test_deferrable_execute_does_not_defer_a_finished_job(
    sensor_cls: type[_CrunJobSensor],
    id_key: str,
    url: str,
    trigger_cls: type,
    crun_conn: str,
    requests_mock: Any,
) -> None:
    data = {"status": "succeeded", "result": {"id": "m1oZzqYp9dN"}}
    requests_mock.get(url, json=envelope(data))

    assert make(sensor_cls, id_key, deferrable=True).execute({}) == data


@SENSORS
def test_execute_complete_returns_the_data_of_a_success_event(
    sensor_cls: type[_CrunJobSensor], id_key: str, url: str, trigger_cls: type
) -> None:
    data = {"status": "success", "result": {"media_urls": ["https://cdn.example/x.png"]}}
    event = {"status": "success", id_key: "job-1", "data": data, "message": "ok"}

    assert make(sensor_cls, id_key).execute_complete({}, event) == data


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ({"status": "failed", "data": {"status": "failed"}, "message": "no face"}, CrunJobFailedError),
        ({"status": "timeout", "data": None, "message": "Crun keeps running it"}, AirflowSensorTimeout),
        ({"status": "error", "data": None, "message": "Crun API error 401: invalid key"}, CrunError),
        (None, CrunError),
        ("success", CrunError),
        ({"status": "cancelled", "data": {"status": "success"}, "message": "?"}, CrunError),
        ({"status": None, "data": {"status": "success"}}, CrunError),
        ({"status": "success", "message": "no data key"}, CrunError),
        ({"status": "success", "data": None, "message": "null data"}, CrunError),
        ({"status": "success", "data": ["not", "a", "dict"], "message": "list data"}, CrunError),
    ],
    ids=[
        "failed",
        "timeout",
        "error",
        "none",
        "bare-string",
        "unknown-status",
        "null-status",
        "success-missing-data",
        "success-null-data",
        "success-list-data",
    ],
)
@SENSORS
def test_execute_complete_raises_on_anything_but_success(
    sensor_cls: type[_CrunJobSensor],
    id_key: str,
    url: str,
    trigger_cls: type,
    event: Any,
    expected: type[Exception],
) -> None:
    if isinstance(event, dict):
        event = {id_key: "job-1", **event}

    with pytest.raises(expected) as caught:
        make(sensor_cls, id_key).execute_complete({}, event)

    if isinstance(event, dict) and event.get("status") in ("failed", "timeout", "error"):
        assert "job-1" in str(caught.value)
        assert event["message"] in str(caught.value)
