"""
Durable execution: a retry after a crash right after creation never pays for a second Crun job.

Each test starts from a ``task_state_store`` that already holds the id an earlier try stored, as
it would after a worker died between creating the job and finishing, and counts the creation
calls that reach requests-mock.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import TaskDeferred

from airflow_provider_crun.operators.crun import CrunFaceSwapOperator
from airflow_provider_crun.triggers.crun import CrunFaceDetectionTrigger, CrunTaskTrigger
from tests.unit.test_operators import (
    CREATE,
    DETECT,
    DETECT_ID,
    DETECT_RESULT,
    IMAGE,
    NEW_FACE,
    RESULT,
    TASK_INFO,
    FakeTaskStateStore,
    _crun_env,  # noqa: F401  (autouse fixture: loopback connection, no sleeping)
    api_error,
    create_operator,
    detect_operator,
    detection_data,
    make_context,
    ok,
    swap_operator,
    task_data,
)

OLD = "task_old"
NEW = "task_new"
OLD_DETECT = "dit_old"
NEW_DETECT = "dit_new"

MODES = pytest.mark.parametrize("deferrable", [False, True], ids=["blocking", "deferrable"])


def mock_task(requests_mock: Any, task_id: str, *responses: dict[str, Any]) -> None:
    requests_mock.get(f"{TASK_INFO}?task_id={task_id}", list(responses))


def mock_detection(requests_mock: Any, detect_task_id: str, *responses: dict[str, Any]) -> None:
    requests_mock.get(f"{DETECT_RESULT}?detect_task_id={detect_task_id}", list(responses))


def run(operator: Any, context: dict[str, Any]) -> Any:
    """Execute; a deferral is returned instead of raised, so both modes read alike."""
    try:
        return operator.execute(context)
    except TaskDeferred as deferral:
        return deferral


def creations(requests_mock: Any) -> int:
    return sum(request.url in (CREATE, DETECT) for request in requests_mock.request_history)


# --------------------------------------------------------------------------------------------
# Tasks


@MODES
@pytest.mark.parametrize(
    "prior", ["pending", "running", "Processing-Unknown"], ids=["pending", "running", "unknown"]
)
def test_retry_reattaches_to_an_active_task(requests_mock: Any, deferrable: bool, prior: str) -> None:
    requests_mock.post(CREATE, **ok({"task_id": NEW}))
    mock_task(requests_mock, OLD, ok(task_data(prior)), ok(task_data("success")))
    store = FakeTaskStateStore(crun_task_id=OLD)

    outcome = run(swap_operator(deferrable=deferrable), make_context(store))

    assert creations(requests_mock) == 0
    if deferrable:
        assert isinstance(outcome.trigger, CrunTaskTrigger)
        assert outcome.trigger.crun_task_id == OLD
    else:
        assert outcome["crun_task_id"] == OLD
        assert outcome["media_urls"] == [RESULT]
    assert store.values == {"crun_task_id": OLD}


@MODES
def test_retry_returns_the_result_of_a_succeeded_task(requests_mock: Any, deferrable: bool) -> None:
    requests_mock.post(CREATE, **ok({"task_id": NEW}))
    mock_task(requests_mock, OLD, ok(task_data("success")))
    context = make_context(FakeTaskStateStore(crun_task_id=OLD))

    outcome = run(swap_operator(deferrable=deferrable), context)

    assert creations(requests_mock) == 0
    assert outcome["crun_task_id"] == OLD
    assert outcome["media_urls"] == [RESULT]
    assert context["ti"].xcoms == {"crun_result_url": RESULT}
    assert requests_mock.call_count == 1


@MODES
@pytest.mark.parametrize(
    "prior",
    [ok(task_data("failed")), api_error(404), api_error(501)],
    ids=["failed", "not-found-404", "generation-failed-501"],
)
def test_retry_creates_anew_when_the_task_is_gone_or_failed(
    requests_mock: Any, deferrable: bool, prior: dict[str, Any]
) -> None:
    requests_mock.post(CREATE, **ok({"task_id": NEW}))
    mock_task(requests_mock, OLD, prior)
    mock_task(requests_mock, NEW, ok(task_data("running")), ok(task_data("success")))
    store = FakeTaskStateStore(crun_task_id=OLD)

    outcome = run(swap_operator(deferrable=deferrable), make_context(store))

    assert creations(requests_mock) == 1
    assert store.values == {"crun_task_id": NEW}
    if deferrable:
        assert outcome.trigger.crun_task_id == NEW
    else:
        assert outcome["crun_task_id"] == NEW


@MODES
def test_crash_after_creation_then_retry_pays_once(requests_mock: Any, deferrable: bool) -> None:
    stored_before_first_read: list[dict[str, Any]] = []
    store = FakeTaskStateStore()

    def crash(request: Any, context: Any) -> dict[str, Any]:
        stored_before_first_read.append(dict(store.values))
        raise SystemExit("worker killed")

    requests_mock.post(CREATE, **ok({"task_id": NEW}))
    requests_mock.get(f"{TASK_INFO}?task_id={NEW}", json=crash)
    with pytest.raises(SystemExit):
        swap_operator(deferrable=deferrable).execute(make_context(store))
    assert stored_before_first_read == [{"crun_task_id": NEW}]

    mock_task(requests_mock, NEW, ok(task_data("running")), ok(task_data("success")))
    outcome = run(swap_operator(deferrable=deferrable), make_context(store))

    assert creations(requests_mock) == 1
    if deferrable:
        assert outcome.trigger.crun_task_id == NEW
    else:
        assert outcome["crun_task_id"] == NEW


@pytest.mark.parametrize(
    ("prior", "created"),
    [
        (ok(task_data("running")), 0),
        (ok(task_data("success")), 0),
        (ok(task_data("failed")), 1),
        (api_error(404), 1),
    ],
    ids=["running", "succeeded", "failed", "not-found-404"],
)
def test_submit_only_mode_reuses_a_live_task(requests_mock: Any, prior: dict[str, Any], created: int) -> None:
    requests_mock.post(CREATE, **ok({"task_id": NEW}))
    mock_task(requests_mock, OLD, prior)

    result = create_operator(wait_for_completion=False).execute(
        make_context(FakeTaskStateStore(crun_task_id=OLD))
    )

    assert creations(requests_mock) == created
    assert result["crun_task_id"] == (NEW if created else OLD)
    assert result["status"] == "submitted"


# --------------------------------------------------------------------------------------------
# Face detections


def stored_detection(age: timedelta) -> FakeTaskStateStore:
    submitted_at = datetime.now(timezone.utc) - age
    return FakeTaskStateStore(detect_task_id=OLD_DETECT, detect_submitted_at=submitted_at.isoformat())


@MODES
def test_detection_retry_reattaches_and_keeps_the_original_expiry(
    requests_mock: Any, deferrable: bool
) -> None:
    requests_mock.post(DETECT, **ok({"detect_task_id": NEW_DETECT}))
    mock_detection(requests_mock, OLD_DETECT, ok(detection_data("processing")), ok(detection_data()))
    store = stored_detection(age=timedelta(minutes=10))
    expected_expiry = datetime.fromisoformat(store.values["detect_submitted_at"]) + timedelta(hours=1)

    outcome = run(detect_operator(deferrable=deferrable), make_context(store))

    assert creations(requests_mock) == 0
    if deferrable:
        assert isinstance(outcome.trigger, CrunFaceDetectionTrigger)
        assert outcome.trigger.detect_task_id == OLD_DETECT
        state = outcome.trigger.serialize()[1]["resume_state"]
        assert state == {"image_url": IMAGE, "submitted_at": store.values["detect_submitted_at"]}
    else:
        assert outcome["detect_task_id"] == OLD_DETECT
        assert datetime.fromisoformat(outcome["expires_at"]) == expected_expiry


@MODES
def test_detection_retry_returns_a_succeeded_detection(requests_mock: Any, deferrable: bool) -> None:
    requests_mock.post(DETECT, **ok({"detect_task_id": NEW_DETECT}))
    mock_detection(requests_mock, OLD_DETECT, ok(detection_data()))
    store = stored_detection(age=timedelta(minutes=10))

    outcome = run(detect_operator(deferrable=deferrable), make_context(store))

    assert creations(requests_mock) == 0
    assert (outcome["detect_task_id"], outcome["detect_id"]) == (OLD_DETECT, DETECT_ID)
    submitted_at = datetime.fromisoformat(store.values["detect_submitted_at"])
    assert datetime.fromisoformat(outcome["expires_at"]) == submitted_at + timedelta(hours=1)


@MODES
@pytest.mark.parametrize(
    ("prior", "age"),
    [
        (ok(detection_data("failed")), timedelta(minutes=10)),
        (api_error(404), timedelta(minutes=10)),
        (ok(detection_data()), timedelta(minutes=61)),
    ],
    ids=["failed", "not-found-404", "succeeded-but-expired"],
)
def test_detection_retry_detects_anew_when_unusable(
    requests_mock: Any, deferrable: bool, prior: dict[str, Any], age: timedelta
) -> None:
    requests_mock.post(DETECT, **ok({"detect_task_id": NEW_DETECT}))
    mock_detection(requests_mock, OLD_DETECT, prior)
    mock_detection(requests_mock, NEW_DETECT, ok(detection_data("starting")), ok(detection_data()))
    store = stored_detection(age=age)
    before = datetime.now(timezone.utc)

    outcome = run(detect_operator(deferrable=deferrable), make_context(store))

    assert creations(requests_mock) == 1
    assert store.values["detect_task_id"] == NEW_DETECT
    assert datetime.fromisoformat(store.values["detect_submitted_at"]) >= before
    if deferrable:
        assert outcome.trigger.detect_task_id == NEW_DETECT
    else:
        assert outcome["detect_task_id"] == NEW_DETECT


# --------------------------------------------------------------------------------------------
# Without task_state_store (Airflow 3.1/3.2) or with durable=False


@MODES
def test_without_task_state_store_it_says_so_once_and_carries_on(
    requests_mock: Any, deferrable: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    requests_mock.post(DETECT, **ok({"detect_task_id": NEW_DETECT}))
    mock_detection(requests_mock, NEW_DETECT, ok(detection_data()))

    outcome = run(detect_operator(deferrable=deferrable), make_context())

    assert outcome["detect_task_id"] == NEW_DETECT
    assert capsys.readouterr().out.count("durable execution needs Airflow 3.3") == 1


@MODES
def test_durable_false_neither_reads_nor_writes_the_store(requests_mock: Any, deferrable: bool) -> None:
    requests_mock.post(CREATE, **ok({"task_id": NEW}))
    mock_task(requests_mock, NEW, ok(task_data("success")))
    store = FakeTaskStateStore(crun_task_id=OLD)

    operator = CrunFaceSwapOperator(
        task_id="swap", image_url=IMAGE, new_face=NEW_FACE, durable=False, deferrable=deferrable
    )
    outcome = run(operator, make_context(store))

    assert outcome["crun_task_id"] == NEW
    assert store.values == {"crun_task_id": OLD}
