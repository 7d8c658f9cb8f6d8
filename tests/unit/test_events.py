"""Trigger events: small JSON that rebuilds, on resume, what the blocking path returns or raises."""

from __future__ import annotations

import json
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_crun import events, exceptions
from airflow_provider_crun.protocol import errors, jobs
from tests.support.crun_answers import DETECT_TASK_ID, TASK_ID, detection_data, task_data

ATTRIBUTES = ("message", "code", "http_status", "retry_after", "request_sent", "job_id", "limit")
MISSING = object()


def attributes(error: BaseException) -> dict[str, Any]:
    return {name: getattr(error, name, MISSING) for name in ATTRIBUTES}


def through_the_database(event: dict[str, Any]) -> Any:
    return json.loads(json.dumps(event))


def task_summary() -> dict[str, Any]:
    result = jobs.read_task(task_data("success"), TASK_ID).result
    assert result is not None
    return result


class TestSuccess:
    @pytest.mark.parametrize(
        ("kind", "job_id", "answer"),
        [
            (jobs.TASK, TASK_ID, jobs.read_task(task_data("success"), TASK_ID)),
            (jobs.DETECTION, DETECT_TASK_ID, jobs.read_detection(detection_data(), DETECT_TASK_ID)),
        ],
        ids=["task", "detection"],
    )
    def test_round_trip(self, kind: jobs.JobKind, job_id: str, answer: jobs.JobRead) -> None:
        assert answer.result is not None
        event = through_the_database(events.success_event(kind, job_id, answer.result, {"model": "m"}))
        assert events.result_from_event(event, kind) == (job_id, answer.result, {"model": "m"})

    def test_carries_only_id_status_message_and_summary(self) -> None:
        event = events.success_event(jobs.TASK, TASK_ID, task_summary(), None)
        assert event == {
            "status": "success",
            "crun_task_id": TASK_ID,
            "message": f"Crun task {TASK_ID} succeeded.",
            "result": task_summary(),
        }

    @pytest.mark.parametrize("state", [None, {}], ids=["none", "empty"])
    def test_resume_state_travels_only_when_given(self, state: dict[str, Any] | None) -> None:
        event = events.success_event(jobs.TASK, TASK_ID, task_summary(), state)
        assert "resume_state" not in event
        assert events.result_from_event(event, jobs.TASK)[2] == {}

    def test_detection_uses_its_own_id_key(self) -> None:
        event = events.success_event(jobs.DETECTION, DETECT_TASK_ID, {"detect_id": "m1", "faces": []}, None)
        assert event["detect_task_id"] == DETECT_TASK_ID
        assert "crun_task_id" not in event

    def test_event_is_small_without_the_raw_answer(self) -> None:
        raw = task_data("success", logs="x" * 50_000)
        summary = jobs.read_task(raw, TASK_ID).result
        assert summary is not None
        event = events.success_event(jobs.TASK, TASK_ID, summary, {"model": "m"})
        assert "data" not in event
        assert len(json.dumps(event)) < 1_000


# Representative errors a trigger reports, and the class a resumed task raises.
FAILURES = [
    (errors.ValidationError(422, "image_url is required"), exceptions.CrunValidationError, "error", True),
    (errors.RateLimitError(429, "slow down", retry_after=3.0), exceptions.CrunRateLimitError, "error", False),
    (errors.ServerError(502, "bad gateway"), exceptions.CrunServerError, "error", False),
    (
        errors.MalformedResponseError(200, "not an envelope"),
        exceptions.CrunMalformedResponseError,
        "error",
        False,
    ),
    (errors.TransportError("reset", request_sent=True), exceptions.CrunTransportError, "error", False),
    (errors.AuthError(401, "bad key"), exceptions.CrunAuthError, "error", True),
    (
        errors.JobFailedError(f"Crun task {TASK_ID} failed: no face", job_id=TASK_ID),
        exceptions.CrunJobFailedError,
        "failed",
        True,
    ),
    (
        errors.JobTimeoutError(f"Crun task {TASK_ID} is late", job_id=TASK_ID, limit="execution_timeout"),
        exceptions.CrunTimeoutError,
        "timeout",
        False,
    ),
    (errors.CrunProtocolError("odd"), exceptions.CrunUnclassifiedError, "error", False),
]
FAILURE_IDS = [
    "422-validation-fails",
    "429-rate-limit-retries",
    "502-server-retries",
    "malformed-retries",
    "transport-retries",
    "401-auth-fails",
    "job-failed-fails",
    "execution-timeout-retries",
    "unclassified-retries",
]


class TestFailure:
    @pytest.mark.parametrize(("error", "raised_class", "status", "fails"), FAILURES, ids=FAILURE_IDS)
    def test_rebuilds_the_blocking_paths_error(
        self, error: errors.CrunProtocolError, raised_class: type[Exception], status: str, fails: bool
    ) -> None:
        event = through_the_database(events.failure_event(jobs.TASK, TASK_ID, error, {"model": "m"}))

        with pytest.raises(exceptions.CrunError) as raised:
            events.result_from_event(event, jobs.TASK)

        assert type(raised.value) is raised_class is type(exceptions.airflow_error(error))
        assert isinstance(raised.value, type(error))
        assert attributes(raised.value) == attributes(error)
        assert str(raised.value) == str(error)
        assert isinstance(raised.value, AirflowFailException) is fails

    @pytest.mark.parametrize(("error", "_class", "status", "_fails"), FAILURES, ids=FAILURE_IDS)
    def test_event_shape(
        self, error: errors.CrunProtocolError, _class: type[Exception], status: str, _fails: bool
    ) -> None:
        event = events.failure_event(jobs.DETECTION, DETECT_TASK_ID, error, None)
        assert event == {
            "status": status,
            "detect_task_id": DETECT_TASK_ID,
            "message": str(error),
            "error": error.fields(),
        }
        assert through_the_database(event) == event

    def test_resume_state_travels_with_a_failure(self) -> None:
        event = events.failure_event(jobs.TASK, TASK_ID, errors.ServerError(500, "x"), {"model": "m"})
        assert event["resume_state"] == {"model": "m"}


def success(**changes: Any) -> dict[str, Any]:
    event = events.success_event(jobs.TASK, TASK_ID, task_summary(), None)
    event.update(changes)
    return {key: value for key, value in event.items() if value is not MISSING}


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (None, "Crun trigger returned no usable event: None"),
        ("success", "Crun trigger returned no usable event: 'success'"),
        ([success()], "Crun trigger returned no usable event"),
        (success(crun_task_id=MISSING), "Crun trigger event without a crun_task_id"),
        (success(crun_task_id=""), "Crun trigger event without a crun_task_id"),
        (success(crun_task_id=7), "Crun trigger event without a crun_task_id"),
        (success(status="cancelled"), f"Crun task {TASK_ID} ended with status 'cancelled': Crun task"),
        (success(status=MISSING), f"Crun task {TASK_ID} ended with status None"),
        (success(status="SUCCESS"), f"Crun task {TASK_ID} ended with status 'SUCCESS'"),
        (success(result=MISSING), f"Crun task {TASK_ID}: success event without a result."),
        (success(result=None), f"Crun task {TASK_ID}: success event without a result."),
        (success(result=["x"]), f"Crun task {TASK_ID}: success event without a result."),
        (success(resume_state=["m"]), f"Crun task {TASK_ID}: success event without a result."),
        (
            {"status": "failed", "crun_task_id": TASK_ID, "message": "it failed"},
            f"Crun task {TASK_ID} ended with status 'failed': it failed",
        ),
        (
            {"status": "error", "crun_task_id": TASK_ID, "error": "boom"},
            f"Crun task {TASK_ID} ended with status 'error': no message",
        ),
        (
            {"status": "timeout", "detect_task_id": TASK_ID, "error": {"kind": "timeout"}},
            "Crun trigger event without a crun_task_id",
        ),
    ],
    ids=[
        "none",
        "text",
        "list",
        "missing-id",
        "empty-id",
        "numeric-id",
        "unknown-status",
        "missing-status",
        "status-wrong-case",
        "success-without-result",
        "success-result-null",
        "success-result-a-list",
        "resume-state-a-list",
        "failed-without-error-fields",
        "error-fields-not-an-object",
        "id-under-the-other-kinds-key",
    ],
)
def test_anything_but_a_well_formed_success_raises_retryably(event: object, message: str) -> None:
    with pytest.raises(exceptions.CrunError) as raised:
        events.result_from_event(event, jobs.TASK)
    assert type(raised.value) is exceptions.CrunUnclassifiedError
    assert not isinstance(raised.value, AirflowFailException)
    assert str(raised.value).startswith(message)
