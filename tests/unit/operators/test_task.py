"""The task operators: what they send, what they return and push, and how they resume."""

from __future__ import annotations

import time
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException, TaskDeferred

from airflow_provider_crun.events import failure_event, success_event
from airflow_provider_crun.exceptions import (
    CrunAuthError,
    CrunError,
    CrunJobFailedError,
    CrunTimeoutError,
    CrunUnclassifiedError,
)
from airflow_provider_crun.operators.task import RESULT_URL_XCOM_KEY, CrunCreateTaskOperator, CrunResultLink
from airflow_provider_crun.protocol import calls, errors, jobs
from tests.support.crun_answers import CREATE, IMAGE, RESULT, TASK_ID, TASK_INFO, ok, task_data
from tests.support.fakes import FakeClock, FakeTaskStateStore, make_context

MODEL = "video-face-swap-multi"
INPUT = {"video_url": IMAGE}
CALLBACK = "https://hooks.example/crun"
API_KEY = "crun-test-key-5ecr3t-7f3a9b"  # what crun_conn puts in the connection


@pytest.fixture(autouse=True)
def _crun(crun_conn: str, no_backoff: list[float]) -> None:
    """Every test talks to the loopback connection, and no retry really sleeps."""


def create_operator(**kwargs: Any) -> CrunCreateTaskOperator:
    arguments: dict[str, Any] = {"task_id": "create", "model": MODEL, "input": INPUT, "poll_interval": 1}
    arguments.update(kwargs)
    return CrunCreateTaskOperator(**arguments)


# --------------------------------------------------------------------------------------------
# Blocking


def test_blocking_sends_the_request_and_returns_the_result_shape(
    requests_mock: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    requests_mock.post(CREATE, **ok({"task_id": TASK_ID}))
    requests_mock.get(
        TASK_INFO, [ok(task_data("pending")), ok(task_data("running")), ok(task_data("success"))]
    )
    context = make_context()

    result = create_operator(callback_url=CALLBACK).execute(context)

    assert requests_mock.request_history[0].json() == {
        "model": MODEL,
        "input": INPUT,
        "callback_url": CALLBACK,
    }
    assert result == {
        "crun_task_id": TASK_ID,
        "model": MODEL,
        "status": "success",
        "media_urls": [RESULT],
        "credits": 6,
        "duration_s": 4.2,
        "stored_paths": [],
    }
    assert "data" not in result  # no raw Crun answer in XCom
    assert context["ti"].xcoms == {RESULT_URL_XCOM_KEY: RESULT}
    logs = capsys.readouterr().out
    for line in (f"Created Crun task {TASK_ID}", "pending -> running", "running -> success", RESULT):
        assert line in logs
    assert API_KEY not in logs


def test_callback_url_is_left_out_of_the_request_when_not_given(requests_mock: Any) -> None:
    requests_mock.post(CREATE, **ok({"task_id": TASK_ID}))
    requests_mock.get(TASK_INFO, **ok(task_data("success")))

    create_operator().execute(make_context())

    assert requests_mock.request_history[0].json() == {"model": MODEL, "input": INPUT}


@pytest.mark.parametrize(
    "rendered",
    ['{"video_url": "https://example.com/group.png"}', "{'video_url': 'https://example.com/group.png'}"],
    ids=["json-text", "python-repr-text"],
)
def test_input_rendered_as_text_is_sent_as_an_object(requests_mock: Any, rendered: str) -> None:
    requests_mock.post(CREATE, **ok({"task_id": TASK_ID}))
    requests_mock.get(TASK_INFO, **ok(task_data("success")))

    create_operator(input=rendered).execute(make_context())

    assert requests_mock.request_history[0].json()["input"] == INPUT


def test_success_without_media_urls_keeps_the_empty_link(
    requests_mock: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    requests_mock.post(CREATE, **ok({"task_id": TASK_ID}))
    requests_mock.get(TASK_INFO, **ok({"task_id": TASK_ID, "status": "SUCCESS", "result": {}}))
    context = make_context()

    result = create_operator().execute(context)

    assert (result["media_urls"], result["credits"], result["duration_s"]) == ([], None, None)
    assert context["ti"].xcoms == {RESULT_URL_XCOM_KEY: ""}
    assert "returned no media_urls" in capsys.readouterr().out


def test_blocking_failed_task_raises_with_crun_message(requests_mock: Any) -> None:
    requests_mock.post(CREATE, **ok({"task_id": TASK_ID}))
    failed = task_data("failed", result={"code": 501, "message": "no face in new_face"})
    requests_mock.get(TASK_INFO, [ok(task_data("running")), ok(failed)])

    with pytest.raises(CrunJobFailedError, match=rf"task {TASK_ID} failed: no face in new_face \(code 501\)"):
        create_operator().execute(make_context())


def test_blocking_timeout_names_the_task_and_the_limit(requests_mock: Any) -> None:
    requests_mock.post(CREATE, **ok({"task_id": TASK_ID}))
    requests_mock.get(TASK_INFO, **ok(task_data("running")))
    operator = create_operator(timeout=5, poll_interval=2)
    operator.hook.clock = clock = FakeClock(start=time.time())

    with pytest.raises(
        CrunTimeoutError, match=rf"task {TASK_ID} did not finish by .* \(its timeout\)"
    ) as caught:
        operator.execute(make_context())

    assert caught.value.limit == "timeout"
    assert not isinstance(caught.value, AirflowFailException)  # a retry reattaches
    assert "a retry of this task reattaches" in str(caught.value)
    # Polls every 2 s, and the last sleep is cut short at the deadline.
    assert clock.sleeps[:2] == [2.0, 2.0]
    assert len(clock.sleeps) == 3
    assert clock.sleeps[2] < 2


# --------------------------------------------------------------------------------------------
# Not waiting


def test_wait_for_completion_false_returns_right_after_creating(requests_mock: Any) -> None:
    requests_mock.post(CREATE, **ok({"task_id": TASK_ID}))
    store = FakeTaskStateStore()

    result = create_operator(wait_for_completion=False).execute(make_context(store))

    assert result == {"crun_task_id": TASK_ID, "model": MODEL, "status": "submitted"}
    assert store.values["crun_task_id"] == TASK_ID
    assert [request.method for request in requests_mock.request_history] == ["POST"]


@pytest.mark.parametrize("status", ["success", "running", "pending"])
def test_issue_10_submit_only_reattach_reports_the_real_status(requests_mock: Any, status: str) -> None:
    """A reattached task is not "submitted": say what Crun said, e.g. that it already succeeded."""
    requests_mock.get(TASK_INFO, **ok(task_data(status)))
    fingerprint = calls.create_task_request(MODEL, INPUT).fingerprint
    store = FakeTaskStateStore(crun_task_id=TASK_ID, crun_task_id_fingerprint=fingerprint)

    result = create_operator(wait_for_completion=False).execute(make_context(store))

    assert result == {"crun_task_id": TASK_ID, "model": MODEL, "status": status}
    assert [request.method for request in requests_mock.request_history] == ["GET"]


# --------------------------------------------------------------------------------------------
# Deferrable and its resume


def test_deferral_pushes_the_empty_link_and_carries_the_model(requests_mock: Any) -> None:
    requests_mock.post(CREATE, **ok({"task_id": TASK_ID}))
    requests_mock.get(TASK_INFO, **ok(task_data("running")))
    context = make_context()

    with pytest.raises(TaskDeferred) as deferral:
        create_operator(deferrable=True).execute(context)

    assert deferral.value.trigger.serialize()[1]["resume_state"] == {"model": MODEL}
    # Airflow resolves the extra link at the deferral too: it must find an XCom, even an empty one.
    assert context["ti"].xcoms == {RESULT_URL_XCOM_KEY: ""}


def test_execute_complete_uses_the_event_not_the_operator(requests_mock: Any) -> None:
    result = {"status": "success", "media_urls": [RESULT], "credits": 6.0, "duration_s": 4.2}
    event = success_event(jobs.TASK, TASK_ID, result, {"model": "image-face-swap-multi"})
    context = make_context()

    outcome = create_operator().execute_complete(context, event=event)

    assert outcome["crun_task_id"] == TASK_ID
    assert outcome["model"] == "image-face-swap-multi"
    assert outcome["media_urls"] == [RESULT]
    assert context["ti"].xcoms == {RESULT_URL_XCOM_KEY: RESULT}
    assert requests_mock.request_history == []


RESUME_FAILURES = {
    "failed event -> CrunJobFailedError, not retried": (
        failure_event(
            jobs.TASK, TASK_ID, errors.JobFailedError("Crun said: face too small", job_id=TASK_ID), None
        ),
        CrunJobFailedError,
        "face too small",
    ),
    "timeout event -> CrunTimeoutError, retried": (
        failure_event(jobs.TASK, TASK_ID, errors.JobTimeoutError("deadline passed", job_id=TASK_ID), None),
        CrunTimeoutError,
        "deadline passed",
    ),
    "error event with a 401 -> CrunAuthError, not retried": (
        failure_event(jobs.TASK, TASK_ID, errors.AuthError(401, "bad key"), None),
        CrunAuthError,
        "bad key",
    ),
    "unknown status -> CrunUnclassifiedError": (
        {"status": "cancelled", "crun_task_id": TASK_ID, "message": "?"},
        CrunUnclassifiedError,
        "'cancelled'",
    ),
    "success without a result -> CrunUnclassifiedError": (
        {"status": "success", "crun_task_id": TASK_ID},
        CrunUnclassifiedError,
        "success event without a result",
    ),
    "event without the task id -> CrunUnclassifiedError": (
        {"status": "success", "result": {}},
        CrunUnclassifiedError,
        "without a crun_task_id",
    ),
    "no event -> CrunUnclassifiedError": (None, CrunUnclassifiedError, "no usable event"),
}


@pytest.mark.parametrize(
    ("event", "error", "fragment"), list(RESUME_FAILURES.values()), ids=list(RESUME_FAILURES)
)
def test_execute_complete_raises_on_anything_but_success(
    event: dict[str, Any] | None, error: type[CrunError], fragment: str
) -> None:
    context = make_context()

    with pytest.raises(error, match=fragment) as caught:
        create_operator().execute_complete(context, event=event)

    assert type(caught.value) is error
    assert context["ti"].xcoms == {}


# --------------------------------------------------------------------------------------------
# The "Crun result" link, and arguments the task operators do not take


def test_result_link_reads_the_pushed_url(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.providers.common.compat.sdk import XCom

    asked: list[dict[str, Any]] = []

    def get_value(**kwargs: Any) -> str:
        asked.append(kwargs)
        return RESULT

    monkeypatch.setattr(XCom, "get_value", get_value)
    link = CrunResultLink()

    assert link.get_link(create_operator(), ti_key="ti-key") == RESULT  # type: ignore[arg-type]
    assert asked == [{"ti_key": "ti-key", "key": RESULT_URL_XCOM_KEY}]
    monkeypatch.setattr(XCom, "get_value", lambda **kwargs: None)
    assert link.get_link(create_operator(), ti_key="ti-key") == ""  # type: ignore[arg-type]


def test_swap_only_arguments_are_refused_by_the_generic_operator() -> None:
    with pytest.raises(
        TypeError, match=r"(?s)Invalid arguments were passed to CrunCreateTaskOperator.*'faces'"
    ):
        create_operator(faces={0: RESULT})
