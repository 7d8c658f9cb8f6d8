"""CrunDetectFacesOperator: its result, its expiry, and the stored detection on a retry."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException, TaskDeferred

from airflow_provider_crun.events import failure_event, success_event
from airflow_provider_crun.exceptions import CrunJobFailedError, CrunTimeoutError
from airflow_provider_crun.operators.detect import DETECT_SUBMITTED_AT_KEY, CrunDetectFacesOperator
from airflow_provider_crun.protocol import calls, errors, jobs
from airflow_provider_crun.triggers.crun import CrunFaceDetectionTrigger
from tests.support.crun_answers import (
    DETECT,
    DETECT_ID,
    DETECT_RESULT,
    DETECT_TASK_ID,
    FACE_0,
    FACE_1,
    IMAGE,
    api_error,
    detection_data,
    ok,
)
from tests.support.fakes import FakeClock, FakeTaskStateStore, make_context

HOUR = timedelta(hours=1)
OLD = "dit_old"
NEW = "dit_new"
FINGERPRINT = calls.detect_faces_request(IMAGE).fingerprint
MODES = pytest.mark.parametrize("deferrable", [False, True], ids=["blocking", "deferrable"])


@pytest.fixture(autouse=True)
def _crun(crun_conn: str, no_backoff: list[float]) -> None:
    """Every test talks to the loopback connection, and no retry really sleeps."""


def detect(**kwargs: Any) -> CrunDetectFacesOperator:
    return CrunDetectFacesOperator(task_id="detect", image_url=IMAGE, **{"poll_interval": 1, **kwargs})


def run(operator: Any, context: dict[str, Any]) -> Any:
    """Execute; a deferral is returned instead of raised, so both modes read alike."""
    try:
        return operator.execute(context)
    except TaskDeferred as deferral:
        return deferral


def creations(requests_mock: Any) -> int:
    return sum(request.url == DETECT for request in requests_mock.request_history)


def mock_detection(requests_mock: Any, detect_task_id: str, *answers: dict[str, Any]) -> None:
    requests_mock.get(f"{DETECT_RESULT}?detect_task_id={detect_task_id}", list(answers))


def stored_detection(age: timedelta) -> FakeTaskStateStore:
    submitted_at = datetime.now(UTC) - age
    return FakeTaskStateStore(
        detect_task_id=OLD,
        detect_task_id_fingerprint=FINGERPRINT,
        detect_submitted_at=submitted_at.isoformat(),
    )


def detection_result(detect_task_id: str = DETECT_TASK_ID) -> dict[str, Any]:
    """A succeeded detection's summary, as the trigger's event carries it."""
    return jobs.read_detection(detection_data(detect_task_id=detect_task_id), detect_task_id).result or {}


# --------------------------------------------------------------------------------------------
# A new detection


def test_blocking_returns_the_detection_and_its_expiry(requests_mock: Any) -> None:
    requests_mock.post(DETECT, **ok({"detect_task_id": DETECT_TASK_ID}))
    requests_mock.get(DETECT_RESULT, [ok(detection_data("processing")), ok(detection_data())])
    store = FakeTaskStateStore()

    result = detect().execute(make_context(store))

    assert requests_mock.request_history[0].json() == {"image_url": IMAGE}
    expires_at = datetime.fromisoformat(result.pop("expires_at"))
    assert result == {
        "detect_id": DETECT_ID,
        "detect_task_id": DETECT_TASK_ID,
        "image_url": IMAGE,
        "faces": [{"id": 0, "link": FACE_0}, {"id": 1, "link": FACE_1}],
    }
    assert expires_at.utcoffset() == timedelta(0)
    assert expires_at == datetime.fromisoformat(store.values[DETECT_SUBMITTED_AT_KEY]) + HOUR


def test_expiry_counts_from_just_before_the_creation_call(requests_mock: Any) -> None:
    """A slow creation call must not push expires_at past the real expiry."""
    reached: list[datetime] = []

    def slow_create(request: Any, context: Any) -> dict[str, Any]:
        reached.append(datetime.now(UTC))
        return {"code": 200, "message": "success", "data": {"detect_task_id": DETECT_TASK_ID}}

    requests_mock.post(DETECT, json=slow_create)
    requests_mock.get(DETECT_RESULT, **ok(detection_data()))

    result = detect().execute(make_context())

    assert datetime.fromisoformat(result["expires_at"]) <= reached[0] + HOUR


def test_no_face_found_gives_an_empty_list_and_a_warning(
    requests_mock: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    requests_mock.post(DETECT, **ok({"detect_task_id": DETECT_TASK_ID}))
    requests_mock.get(DETECT_RESULT, **ok(detection_data(faces=[])))

    result = detect().execute(make_context())

    assert result["faces"] == []
    assert "found no face" in capsys.readouterr().out


def test_failed_detection_raises_with_crun_message(requests_mock: Any) -> None:
    requests_mock.post(DETECT, **ok({"detect_task_id": DETECT_TASK_ID}))
    failed = {"detect_task_id": DETECT_TASK_ID, "status": "failed", "error": "image could not be downloaded"}
    requests_mock.get(DETECT_RESULT, **ok(failed))

    with pytest.raises(CrunJobFailedError, match=f"{DETECT_TASK_ID} failed: image could not be downloaded"):
        detect().execute(make_context())


def test_deferral_carries_the_submission_time_to_a_fresh_resume(requests_mock: Any) -> None:
    requests_mock.post(DETECT, **ok({"detect_task_id": DETECT_TASK_ID}))
    requests_mock.get(DETECT_RESULT, **ok(detection_data("starting")))
    store = FakeTaskStateStore()

    deferral = run(detect(deferrable=True), make_context(store))

    assert isinstance(deferral.trigger, CrunFaceDetectionTrigger)
    state = deferral.trigger.serialize()[1]["resume_state"]
    assert state == {"image_url": IMAGE, "submitted_at": store.values[DETECT_SUBMITTED_AT_KEY]}
    # The resume runs in another process, with only the event to go on (dags test drops kwargs).
    event = success_event(jobs.DETECTION, DETECT_TASK_ID, detection_result(), state)
    result = detect().execute_complete(make_context(), event=event)
    assert result["expires_at"] == (datetime.fromisoformat(state["submitted_at"]) + HOUR).isoformat()
    assert result["detect_id"] == DETECT_ID


def test_failed_event_raises_with_the_detection_id() -> None:
    error = errors.JobFailedError(
        f"Crun face detection {DETECT_TASK_ID} failed: no image", job_id=DETECT_TASK_ID
    )
    event = failure_event(jobs.DETECTION, DETECT_TASK_ID, error, None)

    with pytest.raises(CrunJobFailedError, match=f"{DETECT_TASK_ID} failed: no image") as caught:
        detect().execute_complete(make_context(), event=event)

    assert caught.value.job_id == DETECT_TASK_ID


# --------------------------------------------------------------------------------------------
# Issue #14.8: the wait fits inside the detect_id's hour


def test_default_deferred_wait_ends_well_inside_the_detect_id_hour(requests_mock: Any) -> None:
    requests_mock.post(DETECT, **ok({"detect_task_id": DETECT_TASK_ID}))
    requests_mock.get(DETECT_RESULT, **ok(detection_data("processing")))
    store = FakeTaskStateStore()

    deferral = run(detect(deferrable=True), make_context(store))

    submitted_at = datetime.fromisoformat(store.values[DETECT_SUBMITTED_AT_KEY]).timestamp()
    kwargs = deferral.trigger.serialize()[1]
    assert kwargs["limit"] == "timeout"
    # Half an hour after submission (plus the creation call): a detection that finishes in time
    # leaves the swap half of its hour.
    assert submitted_at + 1800 <= kwargs["deadline"] <= submitted_at + 1800 + 60


def test_default_blocking_wait_ends_well_inside_the_detect_id_hour(requests_mock: Any) -> None:
    requests_mock.post(DETECT, **ok({"detect_task_id": DETECT_TASK_ID}))
    requests_mock.get(DETECT_RESULT, **ok(detection_data("processing")))
    operator = detect(poll_interval=60)
    operator.hook.clock = clock = FakeClock(start=time.time())
    start = clock.now

    with pytest.raises(CrunTimeoutError, match=r"\(its timeout\)"):
        operator.execute(make_context())

    # The wait ended at its deadline, half an hour after it began, never near the hour.
    assert start + 1800 <= clock.now <= time.time() + 1800


def test_detection_that_finished_after_its_hour_fails_naming_the_fix() -> None:
    submitted_at = datetime.now(UTC) - timedelta(minutes=61)
    state = {"image_url": IMAGE, "submitted_at": submitted_at.isoformat()}
    event = success_event(jobs.DETECTION, DETECT_TASK_ID, detection_result(), state)

    with pytest.raises(CrunJobFailedError) as caught:
        detect(timeout=4000).execute_complete(make_context(), event=event)

    message = str(caught.value)
    assert f"{DETECT_TASK_ID} finished after its detect_id expired at" in message
    assert "Clear this task to detect again" in message
    assert "keep timeout (now 4000 s) well under an hour" in message
    assert isinstance(caught.value, AirflowFailException)


def test_reattached_detection_that_finishes_after_its_hour_fails_without_a_new_one(
    requests_mock: Any,
) -> None:
    requests_mock.post(DETECT, **ok({"detect_task_id": NEW}))
    mock_detection(
        requests_mock, OLD, ok(detection_data("processing")), ok(detection_data(detect_task_id=OLD))
    )

    with pytest.raises(CrunJobFailedError, match="Clear this task to detect again"):
        detect().execute(make_context(stored_detection(age=timedelta(minutes=61))))

    assert creations(requests_mock) == 0


# --------------------------------------------------------------------------------------------
# A stored detection


@MODES
def test_retry_reattaches_and_keeps_the_original_expiry(requests_mock: Any, deferrable: bool) -> None:
    requests_mock.post(DETECT, **ok({"detect_task_id": NEW}))
    mock_detection(
        requests_mock, OLD, ok(detection_data("processing")), ok(detection_data(detect_task_id=OLD))
    )
    store = stored_detection(age=timedelta(minutes=10))
    expected = datetime.fromisoformat(store.values[DETECT_SUBMITTED_AT_KEY]) + HOUR

    outcome = run(detect(deferrable=deferrable), make_context(store))

    assert creations(requests_mock) == 0
    assert store.writes == []
    if deferrable:
        assert outcome.trigger.job_id == OLD
        state = outcome.trigger.serialize()[1]["resume_state"]
        assert state == {"image_url": IMAGE, "submitted_at": store.values[DETECT_SUBMITTED_AT_KEY]}
    else:
        assert outcome["detect_task_id"] == OLD
        assert datetime.fromisoformat(outcome["expires_at"]) == expected


@MODES
def test_retry_returns_a_succeeded_detection_still_in_its_hour(requests_mock: Any, deferrable: bool) -> None:
    requests_mock.post(DETECT, **ok({"detect_task_id": NEW}))
    mock_detection(requests_mock, OLD, ok(detection_data(detect_task_id=OLD)))
    store = stored_detection(age=timedelta(minutes=10))

    outcome = run(detect(deferrable=deferrable), make_context(store))

    assert creations(requests_mock) == 0
    assert (outcome["detect_task_id"], outcome["detect_id"]) == (OLD, DETECT_ID)
    submitted_at = datetime.fromisoformat(store.values[DETECT_SUBMITTED_AT_KEY])
    assert datetime.fromisoformat(outcome["expires_at"]) == submitted_at + HOUR


@MODES
@pytest.mark.parametrize(
    ("prior", "age"),
    [
        (ok(detection_data("failed")), timedelta(minutes=10)),
        (api_error(404), timedelta(minutes=10)),
        (ok(detection_data()), timedelta(minutes=61)),
    ],
    ids=[
        "stored failed -> detect anew",
        "stored 404 -> detect anew",
        "stored succeeded but expired -> detect anew",
    ],
)
def test_retry_detects_anew_when_the_stored_one_is_unusable(
    requests_mock: Any, deferrable: bool, prior: dict[str, Any], age: timedelta
) -> None:
    requests_mock.post(DETECT, **ok({"detect_task_id": NEW}))
    mock_detection(requests_mock, OLD, prior)
    mock_detection(requests_mock, NEW, ok(detection_data("starting")), ok(detection_data(detect_task_id=NEW)))
    store = stored_detection(age=age)
    before = datetime.now(UTC)

    outcome = run(detect(deferrable=deferrable), make_context(store))

    assert creations(requests_mock) == 1
    assert store.values["detect_task_id"] == NEW
    assert datetime.fromisoformat(store.values[DETECT_SUBMITTED_AT_KEY]) >= before
    if deferrable:
        assert outcome.trigger.job_id == NEW
    else:
        assert outcome["detect_task_id"] == NEW
        assert datetime.fromisoformat(outcome["expires_at"]) >= before + HOUR
