"""The face swap operators: the request they build, and what a retry does with an old detection."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import TaskDeferred

from airflow_provider_crun.exceptions import CrunInputError
from airflow_provider_crun.hooks.crun import CrunHook
from airflow_provider_crun.operators.detect import CrunDetectFacesOperator
from airflow_provider_crun.operators.swap import CrunFaceSwapOperator, CrunMultiFaceSwapOperator
from airflow_provider_crun.operators.task import RESULT_URL_XCOM_KEY
from airflow_provider_crun.protocol import calls, swap
from airflow_provider_crun.protocol.swap import DetectedFace
from airflow_provider_crun.triggers import crun as crun_triggers
from tests.support.crun_answers import (
    CREATE,
    DETECT,
    DETECT_ID,
    DETECT_RESULT,
    DETECT_TASK_ID,
    FACE_0,
    FACE_1,
    IMAGE,
    NEW_FACE,
    RESULT,
    TASK_ID,
    TASK_INFO,
    detection_data,
    detection_xcom,
    ok,
    task_data,
)
from tests.support.fakes import FakeClock, FakeTaskStateStore, make_context

MULTI = calls.MODEL_MULTI_FACE_SWAP
CALLBACK = "https://hooks.example/crun"


@pytest.fixture(autouse=True)
def _crun(crun_conn: str, no_backoff: list[float]) -> None:
    """Every test talks to the loopback connection, and no retry really sleeps."""


def creations(requests_mock: Any) -> int:
    return sum(request.url == CREATE for request in requests_mock.request_history)


def sent(requests_mock: Any) -> dict[str, Any]:
    create = next(request for request in requests_mock.request_history if request.url == CREATE)
    return dict(create.json())


def trigger_event(
    trigger: Any, monkeypatch: pytest.MonkeyPatch, read: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """Run the trigger to its one event; each poll is answered by ``read``."""

    async def aget_job(self: CrunHook, kind: Any, job_id: str) -> dict[str, Any]:
        return read()

    monkeypatch.setattr(CrunHook, "aget_job", aget_job)
    monkeypatch.setattr(crun_triggers, "SYSTEM_CLOCK", FakeClock(start=time.time()))

    async def collect() -> list[Any]:
        return [event async for event in trigger.run()]

    events = asyncio.run(collect())
    assert len(events) == 1
    return dict(events[0].payload)


# --------------------------------------------------------------------------------------------
# The requests they send


def test_face_swap_sends_image_and_new_face(requests_mock: Any) -> None:
    requests_mock.post(CREATE, **ok({"task_id": TASK_ID}))
    requests_mock.get(TASK_INFO, **ok(task_data("success")))
    context = make_context()

    result = CrunFaceSwapOperator(task_id="swap", image_url=IMAGE, new_face=NEW_FACE).execute(context)

    assert sent(requests_mock) == {
        "model": calls.MODEL_FACE_SWAP,
        "input": {"image_url": IMAGE, "new_face": NEW_FACE},
    }
    assert (result["model"], result["media_urls"]) == (calls.MODEL_FACE_SWAP, [RESULT])
    assert context["ti"].xcoms == {RESULT_URL_XCOM_KEY: RESULT}


def test_detect_then_swap_keeps_the_faces_left_unmentioned(requests_mock: Any) -> None:
    requests_mock.post(DETECT, **ok({"detect_task_id": DETECT_TASK_ID}))
    requests_mock.get(DETECT_RESULT, **ok(detection_data()))
    requests_mock.post(CREATE, **ok({"task_id": TASK_ID}))
    requests_mock.get(TASK_INFO, **ok(task_data("success")))
    detection = CrunDetectFacesOperator(task_id="detect", image_url=IMAGE).execute(make_context())
    context = make_context()

    result = CrunMultiFaceSwapOperator(task_id="swap", detection=detection, faces={1: NEW_FACE}).execute(
        context
    )

    assert sent(requests_mock) == {
        "model": MULTI,
        "input": {
            "detect_id": DETECT_ID,
            "image_url": IMAGE,
            "faces": [{"face_id": 0, "target": FACE_0}, {"face_id": 1, "target": NEW_FACE}],
        },
    }
    assert result["model"] == MULTI
    assert context["ti"].xcoms == {RESULT_URL_XCOM_KEY: RESULT}


@pytest.mark.parametrize(
    "faces",
    [
        {"1": NEW_FACE},
        {1: NEW_FACE},
        [{"face_id": 1, "target": NEW_FACE}],
        [{"face_id": "1", "target": NEW_FACE}],
        json.dumps({"1": NEW_FACE}),
        str({1: NEW_FACE}),
    ],
    ids=["string-key", "int-key", "api-list", "api-list-string-id", "json-text", "python-repr-text"],
)
def test_every_faces_form_gives_the_same_request(requests_mock: Any, faces: Any) -> None:
    requests_mock.post(CREATE, **ok({"task_id": TASK_ID}))
    requests_mock.get(TASK_INFO, **ok(task_data("success")))

    CrunMultiFaceSwapOperator(task_id="swap", detection=detection_xcom(), faces=faces).execute(make_context())

    assert sent(requests_mock)["input"]["faces"] == [
        {"face_id": 0, "target": FACE_0},
        {"face_id": 1, "target": NEW_FACE},
    ]


@pytest.mark.parametrize(
    ("faces", "kept"),
    [
        ({1: NEW_FACE, 0: FACE_0}, {"1": NEW_FACE, "0": FACE_0}),
        ({"1": NEW_FACE}, {"1": NEW_FACE}),
        ([{"face_id": 1, "target": NEW_FACE}], [{"face_id": 1, "target": NEW_FACE}]),
        ({0: NEW_FACE, "0": FACE_0}, {0: NEW_FACE, "0": FACE_0}),
    ],
    ids=["int-keys-become-text", "text-keys", "api-list-as-given", "colliding-keys-as-given"],
)
def test_faces_mapping_keys_are_kept_as_text(faces: Any, kept: Any) -> None:
    """Airflow 3.1 cannot store a rendered field whose mapping has int keys: JSON must round-trip it."""
    operator = CrunMultiFaceSwapOperator(task_id="swap", detection=detection_xcom(), faces=faces)

    assert operator.faces == kept
    if not isinstance(faces, dict) or len({str(key) for key in faces}) == len(faces):
        assert json.loads(json.dumps(operator.faces)) == operator.faces


def test_colliding_face_ids_still_fail_before_any_request(requests_mock: Any) -> None:
    operator = CrunMultiFaceSwapOperator(
        task_id="swap", detection=detection_xcom(), faces={0: NEW_FACE, "0": FACE_0}
    )

    with pytest.raises(CrunInputError, match="appears more than once"):
        operator.execute(make_context())
    assert requests_mock.call_count == 0


def test_swap_by_detect_id_and_image_url_sends_only_the_given_faces(requests_mock: Any) -> None:
    requests_mock.post(CREATE, **ok({"task_id": TASK_ID}))
    requests_mock.get(TASK_INFO, **ok(task_data("success")))

    CrunMultiFaceSwapOperator(
        task_id="swap",
        detect_id=DETECT_ID,
        image_url=IMAGE,
        faces={0: NEW_FACE},
        disable_safety_checker=True,
        callback_url=CALLBACK,
    ).execute(make_context())

    assert sent(requests_mock) == {
        "model": MULTI,
        "callback_url": CALLBACK,
        "input": {
            "detect_id": DETECT_ID,
            "image_url": IMAGE,
            "faces": [{"face_id": 0, "target": NEW_FACE}],
            "disable_safety_checker": True,
        },
    }


def test_safety_checker_is_left_out_when_false(requests_mock: Any) -> None:
    requests_mock.post(CREATE, **ok({"task_id": TASK_ID}))
    requests_mock.get(TASK_INFO, **ok(task_data("success")))

    CrunMultiFaceSwapOperator(task_id="swap", detection=detection_xcom(), faces={0: NEW_FACE}).execute(
        make_context()
    )

    assert "disable_safety_checker" not in sent(requests_mock)["input"]


@pytest.mark.parametrize(
    "build",
    [
        lambda: CrunFaceSwapOperator(
            task_id="swap", image_url=IMAGE, new_face=NEW_FACE, model="image-face-swap-v2"
        ),
        lambda: CrunMultiFaceSwapOperator(
            task_id="swap", detection=detection_xcom(), faces={0: NEW_FACE}, model="video-face-swap-multi"
        ),
    ],
    ids=["face-swap", "multi-face-swap"],
)
def test_a_swap_operator_refuses_a_model(build: Callable[[], Any]) -> None:
    """The swap operators pick their model; another one needs CrunCreateTaskOperator."""
    with pytest.raises(
        TypeError, match=r"(?s)Invalid arguments were passed to Crun\w*FaceSwapOperator.*'model'"
    ):
        build()


# --------------------------------------------------------------------------------------------
# Issue #14.1: a retry keeps the swap it paid for, however old the detection


def expired_detection() -> dict[str, Any]:
    """The detect operator's result of more than an hour ago."""
    return detection_xcom(expires_in=-600)


def multi_swap(**kwargs: Any) -> CrunMultiFaceSwapOperator:
    return CrunMultiFaceSwapOperator(
        task_id="swap", detection=expired_detection(), faces={1: NEW_FACE}, **kwargs
    )


def stored_swap(with_fingerprint: bool) -> FakeTaskStateStore:
    """What the first try stored right after creating the swap, when the detection was fresh."""
    faces = swap.keep_unchanged_faces({1: NEW_FACE}, [DetectedFace(0, FACE_0), DetectedFace(1, FACE_1)])
    request = calls.create_task_request(MULTI, swap.multi_face_swap_input(DETECT_ID, IMAGE, faces))
    if not with_fingerprint:
        return FakeTaskStateStore(crun_task_id=TASK_ID)
    return FakeTaskStateStore(crun_task_id=TASK_ID, crun_task_id_fingerprint=request.fingerprint)


STORED = pytest.mark.parametrize(
    "with_fingerprint", [True, False], ids=["stored with fingerprint", "stored by an older release"]
)


@STORED
@pytest.mark.parametrize("deferrable", [False, True], ids=["blocking", "deferrable"])
def test_retry_after_the_detection_expired_returns_the_succeeded_swap(
    requests_mock: Any, deferrable: bool, with_fingerprint: bool
) -> None:
    requests_mock.post(CREATE, **ok({"task_id": "task_new"}))
    requests_mock.get(TASK_INFO, **ok(task_data("success")))
    context = make_context(stored_swap(with_fingerprint))

    result = multi_swap(deferrable=deferrable).execute(context)

    assert creations(requests_mock) == 0
    assert (result["crun_task_id"], result["media_urls"]) == (TASK_ID, [RESULT])
    assert context["ti"].xcoms == {RESULT_URL_XCOM_KEY: RESULT}


@STORED
@pytest.mark.parametrize("deferrable", [False, True], ids=["blocking", "deferrable"])
def test_retry_after_the_detection_expired_reattaches_to_the_running_swap(
    requests_mock: Any, monkeypatch: pytest.MonkeyPatch, deferrable: bool, with_fingerprint: bool
) -> None:
    requests_mock.post(CREATE, **ok({"task_id": "task_new"}))
    requests_mock.get(TASK_INFO, [ok(task_data("running")), ok(task_data("success"))])
    context = make_context(stored_swap(with_fingerprint))

    if deferrable:
        with pytest.raises(TaskDeferred) as deferral:
            multi_swap(deferrable=True).execute(context)
        assert deferral.value.trigger.job_id == TASK_ID
        event = trigger_event(deferral.value.trigger, monkeypatch, lambda: task_data("success"))
        result = multi_swap(deferrable=True).execute_complete(context, event=event)
    else:
        result = multi_swap().execute(context)

    assert creations(requests_mock) == 0
    assert (result["crun_task_id"], result["media_urls"]) == (TASK_ID, [RESULT])


@pytest.mark.parametrize("mode", ["blocking", "deferrable", "submit-only"])
def test_fresh_try_with_an_expired_detection_fails_before_any_request(requests_mock: Any, mode: str) -> None:
    store = FakeTaskStateStore()
    operator = multi_swap(deferrable=mode == "deferrable", wait_for_completion=mode != "submit-only")

    with pytest.raises(
        CrunInputError, match=rf"The detection {DETECT_ID!r} expired at .* Clear the face detection"
    ):
        operator.execute(make_context(store))

    assert requests_mock.request_history == []
    assert store.writes == []


def test_retry_whose_swap_failed_cannot_create_on_an_expired_detection(requests_mock: Any) -> None:
    requests_mock.post(CREATE, **ok({"task_id": "task_new"}))
    requests_mock.get(TASK_INFO, **ok(task_data("failed")))

    with pytest.raises(CrunInputError, match="expired at"):
        multi_swap().execute(make_context(stored_swap(with_fingerprint=True)))

    assert [request.method for request in requests_mock.request_history] == ["GET"]
