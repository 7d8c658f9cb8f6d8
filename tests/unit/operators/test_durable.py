"""
The creation intent: a try lost while its creation call was in flight never lets a retry pay twice.

Each test starts from the ``task_state_store`` an earlier try left behind and counts the creation
calls that reach requests-mock. Crun has no idempotency key, so a creation call that may have
reached it is never sent again, not even by the next try.
"""

from __future__ import annotations

from typing import Any

import pytest
from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowFailException,
    AirflowTaskTimeout,
    TaskDeferred,
)

from airflow_provider_crun.exceptions import CrunCreationUnknownError
from airflow_provider_crun.operators.detect import CrunDetectFacesOperator
from airflow_provider_crun.operators.task import CrunCreateTaskOperator
from airflow_provider_crun.protocol import calls
from tests.support.crun_answers import (
    CREATE,
    DETECT,
    DETECT_RESULT,
    IMAGE,
    NEW_FACE,
    TASK_INFO,
    api_error,
    detection_data,
    ok,
    task_data,
)
from tests.support.fakes import FakeTaskStateStore, make_context

MODEL = "image-face-swap"
INPUT = {"swap_image": NEW_FACE, "target_image": IMAGE}
OLD = "task_old"
NEW = "task_new"
FINGERPRINT = calls.create_task_request(MODEL, INPUT).fingerprint
OTHER_FINGERPRINT = calls.create_task_request(MODEL, {**INPUT, "target_image": NEW_FACE}).fingerprint
INTENT_KEY = "crun_task_id_creating"
MODES = ["blocking", "deferrable", "submit-only"]


@pytest.fixture(autouse=True)
def _crun(crun_conn: str, no_backoff: list[float]) -> None:
    """Every test talks to the loopback connection, and no retry really sleeps."""


def operator(mode: str = "blocking") -> CrunCreateTaskOperator:
    return CrunCreateTaskOperator(
        task_id="create",
        model=MODEL,
        input=INPUT,
        poll_interval=1,
        deferrable=mode == "deferrable",
        wait_for_completion=mode != "submit-only",
    )


def run(op: Any, store: FakeTaskStateStore) -> Any:
    """Execute one try; a deferral counts as the try's end (the id is stored by then)."""
    try:
        return op.execute(make_context(store))
    except TaskDeferred as deferral:
        return deferral


def posts(requests_mock: Any) -> int:
    return sum(request.method == "POST" for request in requests_mock.request_history)


def intent(fingerprint: str = FINGERPRINT, replaces: str | None = None) -> dict[str, Any]:
    return {"fingerprint": fingerprint, "replaces": replaces}


def answer_new_task(requests_mock: Any) -> None:
    requests_mock.post(CREATE, **ok({"task_id": NEW}))
    requests_mock.get(f"{TASK_INFO}?task_id={NEW}", **ok(task_data("success", task_id=NEW)))


# --------------------------------------------------------------------------------------------
# A try that ended with its creation call in flight


LOST_TRIES = {
    "nothing stored but the intent -> refuse": {INTENT_KEY: intent()},
    "failed job stored, intent to replace it -> refuse": {
        "crun_task_id": OLD,
        "crun_task_id_fingerprint": FINGERPRINT,
        INTENT_KEY: intent(replaces=OLD),
    },
    "job of another request stored, intent to replace it -> refuse": {
        "crun_task_id": OLD,
        "crun_task_id_fingerprint": OTHER_FINGERPRINT,
        INTENT_KEY: intent(replaces=OLD),
    },
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("left_behind", list(LOST_TRIES.values()), ids=list(LOST_TRIES))
def test_a_retry_after_a_try_lost_mid_creation_fails_without_sending_it_again(
    requests_mock: Any, mode: str, left_behind: dict[str, Any]
) -> None:
    answer_new_task(requests_mock)
    requests_mock.get(f"{TASK_INFO}?task_id={OLD}", **ok(task_data("failed", task_id=OLD)))
    store = FakeTaskStateStore(**left_behind)

    with pytest.raises(CrunCreationUnknownError, match="may have reached Crun") as raised:
        run(operator(mode), store)

    assert isinstance(raised.value, AirflowFailException)  # no Airflow retry either
    assert "clear the task" in str(raised.value)
    assert posts(requests_mock) == 0


def test_after_the_refusal_a_cleared_task_creates_exactly_once(requests_mock: Any) -> None:
    """The refusal withdraws the intent: the user who checked Crun and clears the task decides."""
    answer_new_task(requests_mock)
    store = FakeTaskStateStore(**{INTENT_KEY: intent()})

    with pytest.raises(CrunCreationUnknownError):
        run(operator(), store)
    result = run(operator(), store)

    assert result["crun_task_id"] == NEW
    assert posts(requests_mock) == 1


INTENTS_THAT_DO_NOT_BLOCK = {
    "intent for another request -> create": ({INTENT_KEY: intent(OTHER_FINGERPRINT)}, 1),
    "intent fulfilled: its id is stored -> reattach": (
        {"crun_task_id": OLD, "crun_task_id_fingerprint": FINGERPRINT, INTENT_KEY: intent()},
        0,
    ),
    "intent for a job since replaced -> reattach": (
        {"crun_task_id": OLD, INTENT_KEY: intent(replaces="task_older")},
        0,
    ),
    "unreadable intent -> create": ({INTENT_KEY: "garbage"}, 1),
}


@pytest.mark.parametrize(
    ("left_behind", "creations"),
    list(INTENTS_THAT_DO_NOT_BLOCK.values()),
    ids=list(INTENTS_THAT_DO_NOT_BLOCK),
)
def test_an_intent_blocks_only_its_own_unfinished_creation(
    requests_mock: Any, left_behind: dict[str, Any], creations: int
) -> None:
    answer_new_task(requests_mock)
    requests_mock.get(f"{TASK_INFO}?task_id={OLD}", **ok(task_data("success", task_id=OLD)))

    run(operator(), FakeTaskStateStore(**left_behind))

    assert posts(requests_mock) == creations


# --------------------------------------------------------------------------------------------
# Writing and withdrawing the intent within one try


def test_the_intent_is_stored_before_the_creation_call(requests_mock: Any) -> None:
    store = FakeTaskStateStore()
    seen_at_call: list[Any] = []

    def create(request: Any, context: Any) -> dict[str, Any]:
        seen_at_call.append(store.values.get(INTENT_KEY))
        return {"code": 200, "message": "success", "data": {"task_id": NEW}}

    requests_mock.post(CREATE, json=create)
    requests_mock.get(f"{TASK_INFO}?task_id={NEW}", **ok(task_data("success", task_id=NEW)))

    run(operator(), store)

    assert seen_at_call == [intent()]


def test_a_try_killed_during_the_creation_call_leaves_the_intent_and_the_retry_refuses(
    requests_mock: Any,
) -> None:
    """``execution_timeout`` (or a lost worker) ends the try inside the call: nobody knows its outcome."""

    def timed_out(request: Any, context: Any) -> dict[str, Any]:
        raise AirflowTaskTimeout("Timeout, PID: 1234")

    requests_mock.post(CREATE, json=timed_out)
    store = FakeTaskStateStore()

    with pytest.raises(AirflowTaskTimeout):
        run(operator(), store)
    assert store.values[INTENT_KEY] == intent()
    with pytest.raises(CrunCreationUnknownError):
        run(operator(), store)

    assert posts(requests_mock) == 1


def test_the_intent_stands_only_while_an_attempt_is_on_the_wire(
    requests_mock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 429's ``Retry-After`` is waited out inside the call, with nothing in flight."""
    from airflow_provider_crun.hooks import _clock

    store = FakeTaskStateStore()
    seen: list[tuple[str, Any]] = []
    monkeypatch.setattr(
        _clock.SystemClock, "sleep", lambda self, seconds: seen.append(("wait", store.values.get(INTENT_KEY)))
    )
    answers = iter([api_error(429)["json"], {"code": 200, "message": "success", "data": {"task_id": NEW}}])

    def create(request: Any, context: Any) -> dict[str, Any]:
        seen.append(("send", store.values.get(INTENT_KEY)))
        return next(answers)

    requests_mock.post(CREATE, json=create)
    requests_mock.get(f"{TASK_INFO}?task_id={NEW}", **ok(task_data("success", task_id=NEW)))

    run(operator(), store)

    assert seen == [("send", intent()), ("wait", None), ("send", intent())]


def test_a_try_lost_while_waiting_out_a_429_lets_its_retry_create_exactly_once(
    requests_mock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker dies (or ``execution_timeout`` fires) in the backoff: nothing was in flight."""
    from airflow_provider_crun.hooks import _clock

    def lost(self: Any, seconds: float) -> None:
        raise AirflowTaskTimeout("Timeout, PID: 1234")

    monkeypatch.setattr(_clock.SystemClock, "sleep", lost)
    requests_mock.post(CREATE, **api_error(429, headers={"Retry-After": "1"}))
    store = FakeTaskStateStore()

    with pytest.raises(AirflowTaskTimeout):
        run(operator(), store)
    assert INTENT_KEY not in store.values
    answer_new_task(requests_mock)
    result = run(operator(), store)

    assert result["crun_task_id"] == NEW
    assert posts(requests_mock) == 2  # the rejected attempt, then the one creation


CALLS_THAT_END_IN_THE_TRY = {
    "429 until retries run out (nothing created) -> retry creates": (api_error(429), AirflowException),
    "422 bad input (nothing created) -> retry creates": (api_error(422), AirflowFailException),
    "500 (may have created) -> fails; a cleared task creates": (api_error(500), CrunCreationUnknownError),
}


@pytest.mark.parametrize(
    ("answer", "raised"),
    list(CALLS_THAT_END_IN_THE_TRY.values()),
    ids=list(CALLS_THAT_END_IN_THE_TRY),
)
def test_a_creation_call_that_ends_in_its_try_withdraws_the_intent(
    requests_mock: Any, answer: dict[str, Any], raised: type[Exception]
) -> None:
    """The try's own error tells what happened, so the next try (or a clear) is not blocked."""
    requests_mock.post(CREATE, **answer)
    store = FakeTaskStateStore()

    with pytest.raises(raised):
        run(operator(), store)
    assert INTENT_KEY not in store.values
    first_try_posts = posts(requests_mock)
    answer_new_task(requests_mock)
    run(operator(), store)

    assert posts(requests_mock) - first_try_posts == 1
    assert store.values["crun_task_id"] == NEW


class IntentRefusingStore(FakeTaskStateStore):
    """A store whose API keeps failing for the creation intent, as under a slow API server."""

    def set(self, key: str, value: Any) -> None:
        if key == INTENT_KEY:
            raise RuntimeError("API_SERVER_ERROR ReadTimeout")
        super().set(key, value)


def test_an_intent_that_cannot_be_stored_creates_nothing_and_allows_a_retry(
    requests_mock: Any, no_backoff: list[float]
) -> None:
    answer_new_task(requests_mock)

    with pytest.raises(AirflowException, match="no Crun task was created") as raised:
        run(operator(), IntentRefusingStore())

    assert not isinstance(raised.value, AirflowFailException)
    assert posts(requests_mock) == 0
    assert no_backoff == [1, 2]


def test_a_detection_lost_mid_creation_is_refused_too(requests_mock: Any) -> None:
    requests_mock.post(DETECT, **ok({"detect_task_id": "dit_new"}))
    requests_mock.get(DETECT_RESULT, **ok(detection_data()))
    fingerprint = calls.detect_faces_request(IMAGE).fingerprint
    store = FakeTaskStateStore(detect_task_id_creating=intent(fingerprint))

    with pytest.raises(CrunCreationUnknownError, match="detection"):
        run(CrunDetectFacesOperator(task_id="detect", image_url=IMAGE), store)

    assert posts(requests_mock) == 0
