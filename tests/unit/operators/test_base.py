"""
The life cycle every Crun operator shares: the one resume-or-create decision, in every mode.

Each test starts from the ``task_state_store`` an earlier try left behind (or none) and counts
the creation calls that reach requests-mock: a retry must never pay for a second Crun job while
the first one can still deliver, and must create a new one when the first cannot.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException, TaskDeferred

from airflow_provider_crun.exceptions import CrunBalanceTooLowError, CrunJobFailedError, CrunTimeoutError
from airflow_provider_crun.hooks.crun import CrunHook
from airflow_provider_crun.operators.detect import DETECT_SUBMITTED_AT_KEY, CrunDetectFacesOperator
from airflow_provider_crun.operators.swap import CrunMultiFaceSwapOperator
from airflow_provider_crun.operators.task import CrunCreateTaskOperator
from airflow_provider_crun.protocol import calls
from airflow_provider_crun.triggers import crun as crun_triggers
from tests.support.crun_answers import (
    BALANCE,
    CREATE,
    DETECT,
    DETECT_RESULT,
    IMAGE,
    NEW_FACE,
    RESULT,
    TASK_INFO,
    api_error,
    detection_data,
    detection_xcom,
    ok,
    task_data,
)
from tests.support.fakes import FakeClock, FakeTaskStateStore, make_context

MODEL = "video-face-swap-multi"
INPUT = {"video_url": IMAGE, "faces": [{"face_id": 0, "target": NEW_FACE}]}
OLD = "task_old"
NEW = "task_new"
FINGERPRINT = calls.create_task_request(MODEL, INPUT).fingerprint
OTHER_FINGERPRINT = calls.create_task_request(MODEL, {"video_url": NEW_FACE}).fingerprint

MODES = ["blocking", "deferrable", "submit-only"]


@pytest.fixture(autouse=True)
def _crun(crun_conn: str, no_backoff: list[float]) -> None:
    """Every test talks to the loopback connection, and no retry really sleeps."""


class ReadRecordingStore(FakeTaskStateStore):
    """The shared fake, also recording which keys were read."""

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        self.reads: list[str] = []

    def get(self, key: str, default: Any = None) -> Any:
        self.reads.append(key)
        return super().get(key, default)


def create_operator(mode: str = "blocking", **kwargs: Any) -> CrunCreateTaskOperator:
    arguments: dict[str, Any] = {"task_id": "create", "model": MODEL, "input": INPUT, "poll_interval": 1}
    arguments.update(deferrable=mode == "deferrable", wait_for_completion=mode != "submit-only")
    arguments.update(kwargs)
    return CrunCreateTaskOperator(**arguments)


def run(operator: Any, context: dict[str, Any]) -> Any:
    """Execute; a deferral is returned instead of raised, so the modes read alike."""
    try:
        return operator.execute(context)
    except TaskDeferred as deferral:
        return deferral


def mock_task(requests_mock: Any, task_id: str, *answers: dict[str, Any]) -> None:
    requests_mock.get(f"{TASK_INFO}?task_id={task_id}", list(answers))


def posts(requests_mock: Any) -> int:
    return sum(request.method == "POST" for request in requests_mock.request_history)


def reads_of(requests_mock: Any, job_id: str) -> int:
    return sum(
        request.method == "GET" and request.url.endswith(f"={job_id}")
        for request in requests_mock.request_history
    )


def outcome_id(outcome: Any) -> str:
    """The Crun id a try ended with: its result, its submitted task, or the id it defers on."""
    if isinstance(outcome, TaskDeferred):
        return outcome.trigger.job_id
    return str(outcome["crun_task_id"])


def trigger_event(
    trigger: Any, monkeypatch: pytest.MonkeyPatch, read: Callable[[], dict[str, Any]], clock: FakeClock
) -> dict[str, Any]:
    """Run the trigger to its one event; each poll is answered by ``read`` on ``clock``."""

    async def aget_job(self: CrunHook, kind: Any, job_id: str) -> dict[str, Any]:
        return read()

    monkeypatch.setattr(CrunHook, "aget_job", aget_job)
    monkeypatch.setattr(crun_triggers, "SYSTEM_CLOCK", clock)

    async def collect() -> list[Any]:
        return [event async for event in trigger.run()]

    events = asyncio.run(collect())
    assert len(events) == 1
    return dict(events[0].payload)


# --------------------------------------------------------------------------------------------
# Nothing stored


@pytest.mark.parametrize("mode", MODES)
def test_nothing_stored_creates_and_stores_the_fingerprint_before_the_id(
    requests_mock: Any, mode: str
) -> None:
    requests_mock.post(CREATE, **ok({"task_id": NEW}))
    mock_task(
        requests_mock, NEW, ok(task_data("running", task_id=NEW)), ok(task_data("success", task_id=NEW))
    )
    store = FakeTaskStateStore()

    outcome = run(create_operator(mode), make_context(store))

    assert posts(requests_mock) == 1
    assert outcome_id(outcome) == NEW
    # The creation intent precedes the call; then the id goes first: it alone makes a retry
    # reattach, and an id without a fingerprint is honoured.
    assert store.writes == [
        ("crun_task_id_creating", {"fingerprint": FINGERPRINT, "replaces": None}),
        ("crun_task_id", NEW),
        ("crun_task_id_fingerprint", FINGERPRINT),
    ]


@pytest.mark.parametrize("deferrable", [False, True], ids=["blocking", "deferrable"])
def test_nothing_stored_detection_stores_its_id_then_fingerprint_and_submission_time(
    requests_mock: Any, deferrable: bool
) -> None:
    requests_mock.post(DETECT, **ok({"detect_task_id": "dit_new"}))
    requests_mock.get(DETECT_RESULT, [ok(detection_data("processing")), ok(detection_data())])
    store = FakeTaskStateStore()
    before = datetime.now(UTC)

    run(
        CrunDetectFacesOperator(task_id="detect", image_url=IMAGE, deferrable=deferrable), make_context(store)
    )

    keys = [key for key, _ in store.writes]
    assert keys == [
        "detect_task_id_creating",
        "detect_task_id",
        "detect_task_id_fingerprint",
        DETECT_SUBMITTED_AT_KEY,
    ]
    assert datetime.fromisoformat(store.values[DETECT_SUBMITTED_AT_KEY]) >= before
    assert store.values["detect_task_id_fingerprint"] == calls.detect_faces_request(IMAGE).fingerprint


# --------------------------------------------------------------------------------------------
# Something stored: keep it or replace it

REATTACH = {
    "stored pending + same fingerprint -> reattach, 0 creations": (
        {"crun_task_id": OLD, "crun_task_id_fingerprint": FINGERPRINT},
        "pending",
    ),
    "stored running + same fingerprint -> reattach, 0 creations": (
        {"crun_task_id": OLD, "crun_task_id_fingerprint": FINGERPRINT},
        "running",
    ),
    "stored unknown status + same fingerprint -> reattach and wait, 0 creations": (
        {"crun_task_id": OLD, "crun_task_id_fingerprint": FINGERPRINT},
        "Queued-For-GPU",
    ),
    "stored running without fingerprint (older release) -> honoured, 0 creations": (
        {"crun_task_id": OLD},
        "running",
    ),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("stored", "status"), list(REATTACH.values()), ids=list(REATTACH))
def test_stored_live_job_is_reattached(
    requests_mock: Any, mode: str, stored: dict[str, str], status: str
) -> None:
    requests_mock.post(CREATE, **ok({"task_id": NEW}))
    mock_task(requests_mock, OLD, ok(task_data(status, task_id=OLD)), ok(task_data("success", task_id=OLD)))
    store = FakeTaskStateStore(**stored)

    outcome = run(create_operator(mode), make_context(store))

    assert posts(requests_mock) == 0
    assert outcome_id(outcome) == OLD
    assert store.writes == []
    if mode == "blocking":
        assert outcome["media_urls"] == [RESULT]  # it waited for the stored task
        assert reads_of(requests_mock, OLD) == 2
    elif mode == "deferrable":
        assert isinstance(outcome.trigger, crun_triggers.CrunTaskTrigger)
        assert reads_of(requests_mock, OLD) == 1  # the reattach read doubles as the pre-deferral check
    else:
        assert outcome == {"crun_task_id": OLD, "model": MODEL, "status": status.lower()}


@pytest.mark.parametrize("mode", MODES)
def test_stored_succeeded_job_returns_its_result_without_creating_or_waiting(
    requests_mock: Any, mode: str
) -> None:
    requests_mock.post(CREATE, **ok({"task_id": NEW}))
    mock_task(requests_mock, OLD, ok(task_data("success", task_id=OLD)))
    context = make_context(FakeTaskStateStore(crun_task_id=OLD, crun_task_id_fingerprint=FINGERPRINT))

    outcome = run(create_operator(mode), context)

    assert not isinstance(outcome, TaskDeferred)
    assert requests_mock.call_count == 1
    if mode == "submit-only":
        # Issue 10: the real status, not "submitted".
        assert outcome == {"crun_task_id": OLD, "model": MODEL, "status": "success"}
    else:
        assert (outcome["crun_task_id"], outcome["media_urls"]) == (OLD, [RESULT])
        assert context["ti"].xcoms == {"crun_result_url": RESULT}


REPLACE = {
    "stored failed -> create anew": ok(task_data("failed", task_id=OLD)),
    "stored id answers 404 -> create anew": api_error(404),
    "stored id answers 501 -> create anew": api_error(501),
    "stored id answers 404 in an HTTP-200 body -> create anew": api_error(404, in_body=True),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("prior", list(REPLACE.values()), ids=list(REPLACE))
def test_stored_job_that_cannot_deliver_is_replaced(
    requests_mock: Any, mode: str, prior: dict[str, Any]
) -> None:
    requests_mock.post(CREATE, **ok({"task_id": NEW}))
    mock_task(requests_mock, OLD, prior)
    mock_task(
        requests_mock, NEW, ok(task_data("running", task_id=NEW)), ok(task_data("success", task_id=NEW))
    )
    store = FakeTaskStateStore(crun_task_id=OLD, crun_task_id_fingerprint=FINGERPRINT)

    outcome = run(create_operator(mode), make_context(store))

    assert posts(requests_mock) == 1
    assert reads_of(requests_mock, OLD) == 1
    assert outcome_id(outcome) == NEW
    assert store.values == {
        "crun_task_id": NEW,
        "crun_task_id_fingerprint": FINGERPRINT,
        "crun_task_id_creating": {"fingerprint": FINGERPRINT, "replaces": OLD},
    }


@pytest.mark.parametrize("mode", MODES)
def test_stored_job_with_another_fingerprint_warns_once_then_creates_anew(
    requests_mock: Any, mode: str, capsys: pytest.CaptureFixture[str]
) -> None:
    requests_mock.post(CREATE, **ok({"task_id": NEW}))
    mock_task(requests_mock, OLD, ok(task_data("running", task_id=OLD)))
    mock_task(
        requests_mock, NEW, ok(task_data("running", task_id=NEW)), ok(task_data("success", task_id=NEW))
    )
    store = FakeTaskStateStore(crun_task_id=OLD, crun_task_id_fingerprint=OTHER_FINGERPRINT)

    outcome = run(create_operator(mode), make_context(store))

    assert posts(requests_mock) == 1
    assert reads_of(requests_mock, OLD) == 0  # a job made for another request is not even read
    assert outcome_id(outcome) == NEW
    assert store.values == {
        "crun_task_id": NEW,
        "crun_task_id_fingerprint": FINGERPRINT,
        "crun_task_id_creating": {"fingerprint": FINGERPRINT, "replaces": OLD},
    }
    lines = capsys.readouterr().out.splitlines()
    naming_both = [line for line in lines if OTHER_FINGERPRINT in line and FINGERPRINT in line]
    assert len(naming_both) == 1
    assert "warning" in naming_both[0]


# --------------------------------------------------------------------------------------------
# Issue #14.3: a stored id is reused only for the very request that created it


def _multi_swap(**changes: Any) -> CrunMultiFaceSwapOperator:
    detection = detection_xcom(expires_at="2099-01-01T00:00:00+00:00")
    arguments: dict[str, Any] = {"task_id": "swap", "faces": {1: NEW_FACE}, "detection": detection}
    arguments.update(changes)
    return CrunMultiFaceSwapOperator(wait_for_completion=False, **arguments)


FINGERPRINT_CASES = {
    "same model, input and callback_url -> reattach": (
        lambda: create_operator("submit-only", callback_url="https://hooks.example/a"),
        lambda: create_operator("submit-only", callback_url="https://hooks.example/a"),
        0,
    ),
    "changed model -> new task": (
        lambda: create_operator("submit-only"),
        lambda: create_operator("submit-only", model="image-face-swap-multi"),
        1,
    ),
    "changed input -> new task": (
        lambda: create_operator("submit-only"),
        lambda: create_operator("submit-only", input={**INPUT, "video_url": NEW_FACE}),
        1,
    ),
    "changed callback_url -> new task": (
        lambda: create_operator("submit-only", callback_url="https://hooks.example/a"),
        lambda: create_operator("submit-only", callback_url="https://hooks.example/b"),
        1,
    ),
    "callback_url added -> new task": (
        lambda: create_operator("submit-only"),
        lambda: create_operator("submit-only", callback_url="https://hooks.example/a"),
        1,
    ),
    "same faces -> reattach": (lambda: _multi_swap(), lambda: _multi_swap(), 0),
    "same faces, other spelling -> reattach": (
        lambda: _multi_swap(),
        lambda: _multi_swap(faces=[{"face_id": "1", "target": NEW_FACE}]),
        0,
    ),
    "changed faces -> new task": (lambda: _multi_swap(), lambda: _multi_swap(faces={0: NEW_FACE}), 1),
    "changed face target -> new task": (lambda: _multi_swap(), lambda: _multi_swap(faces={1: RESULT}), 1),
    "safety checker turned off -> new task": (
        lambda: _multi_swap(),
        lambda: _multi_swap(disable_safety_checker=True),
        1,
    ),
}


@pytest.mark.parametrize(
    ("first", "retry", "created_again"), list(FINGERPRINT_CASES.values()), ids=list(FINGERPRINT_CASES)
)
def test_stored_id_is_reused_only_when_the_request_is_the_same(
    requests_mock: Any,
    first: Callable[[], CrunCreateTaskOperator],
    retry: Callable[[], CrunCreateTaskOperator],
    created_again: int,
) -> None:
    requests_mock.post(CREATE, [ok({"task_id": OLD}), ok({"task_id": NEW})])
    mock_task(requests_mock, OLD, ok(task_data("running", task_id=OLD)))
    store = FakeTaskStateStore()
    first().execute(make_context(store))

    outcome = retry().execute(make_context(store))

    assert posts(requests_mock) == 1 + created_again
    assert outcome["crun_task_id"] == (NEW if created_again else OLD)
    assert store.values["crun_task_id"] == outcome["crun_task_id"]


# --------------------------------------------------------------------------------------------
# No durability


@pytest.mark.parametrize("mode", MODES)
def test_durable_false_neither_reads_nor_writes_the_store(requests_mock: Any, mode: str) -> None:
    requests_mock.post(CREATE, **ok({"task_id": NEW}))
    mock_task(
        requests_mock, NEW, ok(task_data("running", task_id=NEW)), ok(task_data("success", task_id=NEW))
    )
    store = ReadRecordingStore(crun_task_id=OLD, crun_task_id_fingerprint=FINGERPRINT)

    outcome = run(create_operator(mode, durable=False), make_context(store))

    assert outcome_id(outcome) == NEW
    assert posts(requests_mock) == 1
    assert reads_of(requests_mock, OLD) == 0
    assert store.reads == []
    assert store.writes == []


@pytest.mark.parametrize("mode", MODES)
def test_without_task_state_store_it_warns_and_carries_on(
    requests_mock: Any, mode: str, capsys: pytest.CaptureFixture[str]
) -> None:
    requests_mock.post(CREATE, **ok({"task_id": NEW}))
    mock_task(
        requests_mock, NEW, ok(task_data("running", task_id=NEW)), ok(task_data("success", task_id=NEW))
    )

    outcome = run(create_operator(mode), make_context())

    assert outcome_id(outcome) == NEW
    logs = capsys.readouterr().out
    assert logs.count("durable execution needs Airflow 3.3") == 1
    assert "a retry creates and pays for a new one" in logs


# --------------------------------------------------------------------------------------------
# Checks that only matter for creating


@pytest.mark.parametrize("mode", MODES)
def test_balance_below_min_balance_refuses_to_create(requests_mock: Any, mode: str) -> None:
    requests_mock.get(BALANCE, **ok({"balance": 3}))
    requests_mock.post(CREATE, **ok({"task_id": NEW}))
    store = FakeTaskStateStore()

    with pytest.raises(CrunBalanceTooLowError, match=r"balance is 3 credits, below min_balance=5") as caught:
        create_operator(mode, min_balance=5).execute(make_context(store))

    assert isinstance(caught.value, AirflowFailException)
    assert posts(requests_mock) == 0
    assert store.writes == []


@pytest.mark.parametrize("mode", MODES)
def test_reattaching_never_reads_the_balance(requests_mock: Any, mode: str) -> None:
    requests_mock.get(BALANCE, **ok({"balance": 0}))
    mock_task(
        requests_mock, OLD, ok(task_data("running", task_id=OLD)), ok(task_data("success", task_id=OLD))
    )
    store = FakeTaskStateStore(crun_task_id=OLD, crun_task_id_fingerprint=FINGERPRINT)

    outcome = run(create_operator(mode, min_balance=5), make_context(store))

    assert outcome_id(outcome) == OLD
    assert not any(request.url == BALANCE for request in requests_mock.request_history)


# --------------------------------------------------------------------------------------------
# Deferring


def test_deferrable_checks_the_status_once_then_defers_with_exactly_the_trigger_arguments(
    requests_mock: Any,
) -> None:
    requests_mock.post(CREATE, **ok({"task_id": NEW}))
    mock_task(requests_mock, NEW, ok(task_data("pending", task_id=NEW)))
    before = time.time()

    deferral = run(create_operator("deferrable", timeout=600, poll_interval=7), make_context())

    assert isinstance(deferral, TaskDeferred)
    assert deferral.method_name == "execute_complete"
    assert deferral.timeout is None  # a framework timeout would skip execute_complete
    assert not deferral.kwargs
    path, kwargs = deferral.trigger.serialize()
    assert path == "airflow_provider_crun.triggers.crun.CrunTaskTrigger"
    deadline = kwargs.pop("deadline")
    assert kwargs == {
        "crun_task_id": NEW,
        "crun_conn_id": "crun_default",
        "poll_interval": 7.0,
        "limit": "timeout",
        "resume_state": {"model": MODEL},
    }
    assert before + 600 <= deadline <= time.time() + 600
    assert reads_of(requests_mock, NEW) == 1


def test_deferrable_job_that_already_succeeded_returns_without_deferring(requests_mock: Any) -> None:
    requests_mock.post(CREATE, **ok({"task_id": NEW}))
    mock_task(requests_mock, NEW, ok(task_data("success", task_id=NEW)))
    context = make_context()

    result = create_operator("deferrable").execute(context)

    assert (result["crun_task_id"], result["media_urls"]) == (NEW, [RESULT])
    assert context["ti"].xcoms == {"crun_result_url": RESULT}


def test_deferrable_job_that_already_failed_raises_without_deferring(requests_mock: Any) -> None:
    requests_mock.post(CREATE, **ok({"task_id": NEW}))
    mock_task(requests_mock, NEW, ok(task_data("failed", task_id=NEW, result={"message": "nsfw"})))

    with pytest.raises(CrunJobFailedError, match=f"Crun task {NEW} failed: nsfw"):
        create_operator("deferrable").execute(make_context())


def test_deferrable_defers_when_the_pre_deferral_read_fails_transiently(requests_mock: Any) -> None:
    requests_mock.post(CREATE, **ok({"task_id": NEW}))
    mock_task(requests_mock, NEW, api_error(500))

    deferral = run(create_operator("deferrable"), make_context())

    assert isinstance(deferral, TaskDeferred)
    assert deferral.trigger.job_id == NEW


# --------------------------------------------------------------------------------------------
# Issue #14.8: the wait ends with execution_timeout when that comes first


def test_deferral_deadline_is_execution_timeout_when_it_comes_first(
    requests_mock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    requests_mock.post(CREATE, **ok({"task_id": NEW}))
    mock_task(requests_mock, NEW, ok(task_data("running", task_id=NEW)))
    started = datetime.now(UTC)
    operator = create_operator("deferrable", timeout=3 * 3600, execution_timeout=timedelta(seconds=60))

    deferral = run(operator, make_context(started=started))

    kwargs = deferral.trigger.serialize()[1]
    assert kwargs["deadline"] == started.timestamp() + 60
    assert kwargs["limit"] == "execution_timeout"

    clock = FakeClock(start=time.time())
    event = trigger_event(deferral.trigger, monkeypatch, lambda: task_data("running", task_id=NEW), clock)
    assert event["status"] == "timeout"
    with pytest.raises(CrunTimeoutError, match=r"\(its execution_timeout\)") as caught:
        create_operator("deferrable").execute_complete(make_context(), event=event)
    assert caught.value.limit == "execution_timeout"
    assert caught.value.job_id == NEW
    assert clock.now <= kwargs["deadline"] + 1


def test_deferral_deadline_is_timeout_when_it_comes_first(requests_mock: Any) -> None:
    requests_mock.post(CREATE, **ok({"task_id": NEW}))
    mock_task(requests_mock, NEW, ok(task_data("running", task_id=NEW)))
    started = datetime.now(UTC)
    before = time.time()
    operator = create_operator("deferrable", timeout=30, execution_timeout=timedelta(hours=1))

    kwargs = run(operator, make_context(started=started)).trigger.serialize()[1]

    assert kwargs["limit"] == "timeout"
    assert before + 30 <= kwargs["deadline"] <= time.time() + 30


def test_blocking_wait_ends_at_execution_timeout(requests_mock: Any) -> None:
    requests_mock.post(CREATE, **ok({"task_id": NEW}))
    mock_task(requests_mock, NEW, ok(task_data("running", task_id=NEW)))
    started = datetime.now(UTC) - timedelta(seconds=20)
    operator = create_operator(timeout=3 * 3600, execution_timeout=timedelta(seconds=60), poll_interval=15)
    operator.hook.clock = clock = FakeClock(start=time.time())

    with pytest.raises(CrunTimeoutError, match=r"\(its execution_timeout\)") as caught:
        operator.execute(make_context(started=started))

    assert caught.value.limit == "execution_timeout"
    # About 40 s were left of the 60: the wait never slept past the try's end.
    assert clock.now <= started.timestamp() + 60
    assert sum(clock.sleeps) < 60


# --------------------------------------------------------------------------------------------
# on_kill


def test_on_kill_names_the_job_that_keeps_running(
    requests_mock: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    requests_mock.post(CREATE, **ok({"task_id": NEW}))
    mock_task(requests_mock, NEW, ok(task_data("running", task_id=NEW)))
    operator = create_operator("deferrable")
    run(operator, make_context())
    capsys.readouterr()

    operator.on_kill()

    logs = capsys.readouterr().out
    assert "no cancel endpoint" in logs
    assert f"Crun task {NEW} keeps running" in logs


def test_on_kill_after_reattaching_names_the_stored_job(
    requests_mock: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    mock_task(requests_mock, OLD, ok(task_data("running", task_id=OLD)))
    operator = create_operator("deferrable")
    run(operator, make_context(FakeTaskStateStore(crun_task_id=OLD, crun_task_id_fingerprint=FINGERPRINT)))
    capsys.readouterr()

    operator.on_kill()

    assert f"Crun task {OLD} keeps running" in capsys.readouterr().out


def test_on_kill_before_any_job_names_none(capsys: pytest.CaptureFixture[str]) -> None:
    operator = create_operator()
    capsys.readouterr()

    operator.on_kill()

    assert "keeps running" not in capsys.readouterr().out


def test_hook_is_built_on_first_use_with_the_operator_connection() -> None:
    operator = create_operator(crun_conn_id="crun_other")

    assert "hook" not in vars(operator)
    assert operator.hook.crun_conn_id == "crun_other"


# --------------------------------------------------------------------------------------------
# The store write that keeps a retry from paying twice


class FlakyStore(FakeTaskStateStore):
    """A store whose first ``failures`` writes fail, as task_state_store does when the API server is slow."""

    def __init__(self, failures: int, failing_key: str | None = None) -> None:
        super().__init__()
        self.failures = failures
        self.failing_key = failing_key

    def set(self, key: str, value: Any) -> None:
        if self.failures and (self.failing_key in (None, key)):
            self.failures -= 1
            raise RuntimeError("API_SERVER_ERROR ReadTimeout")
        super().set(key, value)


@pytest.mark.parametrize("mode", ["blocking", "deferrable", "submit-only"])
def test_a_failed_id_write_is_tried_again_so_the_retry_reattaches(
    requests_mock: Any, no_backoff: list[float], mode: str
) -> None:
    requests_mock.post(CREATE, **ok({"task_id": NEW}))
    mock_task(requests_mock, NEW, ok(task_data("success", task_id=NEW)))
    store = FlakyStore(failures=2, failing_key="crun_task_id")

    run(create_operator(mode), make_context(store))
    run(create_operator(mode), make_context(store))

    assert store.values["crun_task_id"] == NEW
    assert posts(requests_mock) == 1
    assert no_backoff == [1, 2]


def test_an_id_that_cannot_be_stored_fails_the_task_without_a_retry_naming_the_job(
    requests_mock: Any, no_backoff: list[float]
) -> None:
    requests_mock.post(CREATE, **ok({"task_id": NEW}))
    store = FlakyStore(failures=99, failing_key="crun_task_id")

    with pytest.raises(AirflowFailException, match=rf"Created Crun task {NEW}, but could not store its id"):
        run(create_operator(), make_context(store))
    assert posts(requests_mock) == 1


def test_a_failed_fingerprint_write_is_logged_and_the_id_still_reattaches(
    requests_mock: Any, no_backoff: list[float]
) -> None:
    requests_mock.post(CREATE, **ok({"task_id": NEW}))
    mock_task(requests_mock, NEW, ok(task_data("success", task_id=NEW)))
    store = FlakyStore(failures=1, failing_key="crun_task_id_fingerprint")

    run(create_operator(), make_context(store))
    second = run(create_operator(), make_context(store))

    assert "crun_task_id_fingerprint" not in store.values
    assert outcome_id(second) == NEW
    assert posts(requests_mock) == 1
