"""The Crun operators, blocking and deferrable, with requests-mock standing in for Crun."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import TaskDeferred

from airflow_provider_crun import protocol
from airflow_provider_crun.events import CrunTimeoutError, make_event
from airflow_provider_crun.exceptions import CrunError, CrunJobFailedError
from airflow_provider_crun.hooks.crun import CrunHook
from airflow_provider_crun.operators.crun import (
    RESULT_URL_XCOM_KEY,
    CrunCreateTaskOperator,
    CrunDetectFacesOperator,
    CrunFaceSwapOperator,
    CrunMultiFaceSwapOperator,
    CrunResultLink,
)
from airflow_provider_crun.triggers.crun import CrunFaceDetectionTrigger, CrunTaskTrigger
from tests.conftest import TEST_API, TEST_API_KEY

DETECT = f"{TEST_API}/client/job/detect-face-image"
DETECT_RESULT = f"{TEST_API}/client/job/detect-face-result"
CREATE = f"{TEST_API}/client/job/CreateTask"
TASK_INFO = f"{TEST_API}/client/job/TaskInfo"

IMAGE = "https://cdn.example/group-photo.png"
NEW_FACE = "https://cdn.example/new-face.jpg"
FACE_0 = "https://cdn.example/detected-face-0.jpg"
FACE_1 = "https://cdn.example/detected-face-1.jpg"
RESULT = "https://cdn.example/result.png"
TASK_ID = "task_12345678"
DETECT_TASK_ID = "dit60yt8reqplt1c16"
DETECT_ID = "m1oZzqYp9dN"


# --------------------------------------------------------------------------------------------
# Shared helpers (test_operator_validation.py and test_durable.py import them)


class FakeTaskInstance:
    """Just enough of a running task instance: XCom pushes are recorded."""

    stats_tags: dict[str, str] = {}

    def __init__(self) -> None:
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value


class FakeTaskStateStore:
    """A dict-backed ``task_state_store``: the part of Airflow 3.3's accessor the operators use."""

    def __init__(self, **values: Any) -> None:
        self.values = dict(values)

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def set(self, key: str, value: Any) -> None:
        assert value is not None
        self.values[key] = value


def make_context(store: FakeTaskStateStore | None = None) -> dict[str, Any]:
    """A task context; without ``store`` it looks like Airflow 3.1/3.2 (no task_state_store)."""
    context: dict[str, Any] = {"ti": FakeTaskInstance()}
    if store is not None:
        context["task_state_store"] = store
    return context


def ok(data: Any) -> dict[str, Any]:
    return {"json": {"code": 200, "message": "success", "data": data}}


def api_error(code: int) -> dict[str, Any]:
    return {"status_code": code, "json": {"code": code, "message": f"crun error {code}"}}


def task_data(status: str, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"task_id": TASK_ID, "status": status, "result": None, **extra}
    if status == "success":
        data.update(result={"media_urls": [RESULT]}, credits=6, duration_s=4.2)
    return data


def detection_data(status: str = "succeeded", faces: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    if status != "succeeded":
        return {"detect_task_id": DETECT_TASK_ID, "status": status, "error": None, "result": None}
    faces = [{"id": 0, "link": FACE_0}, {"id": 1, "link": FACE_1}] if faces is None else faces
    return {
        "detect_task_id": DETECT_TASK_ID,
        "status": status,
        "error": None,
        "result": {"id": DETECT_ID, "status": "succeed", "faces": faces},
    }


def detection_xcom(expires_in: float = 3000.0, **changes: Any) -> dict[str, Any]:
    """A CrunDetectFacesOperator result, as the swap receives it."""
    value: dict[str, Any] = {
        "detect_id": DETECT_ID,
        "detect_task_id": DETECT_TASK_ID,
        "image_url": IMAGE,
        "faces": [{"id": 0, "link": FACE_0}, {"id": 1, "link": FACE_1}],
        "expires_at": (datetime.now(timezone.utc) + timedelta(seconds=expires_in)).isoformat(),
    }
    value.update(changes)
    return value


@pytest.fixture(autouse=True)
def _crun_env(crun_conn: str, retry_waits: list[float]) -> None:
    """Every test talks to the loopback connection, and no hook wait really sleeps."""


@pytest.fixture
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The hook's wait clock, advanced by every (recorded, not slept) wait."""
    now = [1000.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    monkeypatch.setattr(CrunHook, "_clock", staticmethod(lambda: now[0]))
    monkeypatch.setattr(CrunHook, "_sleep", staticmethod(sleep))
    return waits


def swap_operator(**kwargs: Any) -> CrunFaceSwapOperator:
    return CrunFaceSwapOperator(
        task_id="swap", image_url=IMAGE, new_face=NEW_FACE, **{"poll_interval": 1, **kwargs}
    )


def create_operator(**kwargs: Any) -> CrunCreateTaskOperator:
    return CrunCreateTaskOperator(
        task_id="create",
        model="video-face-swap-multi",
        input={"video_url": IMAGE},
        **{"poll_interval": 1, **kwargs},
    )


def detect_operator(**kwargs: Any) -> CrunDetectFacesOperator:
    return CrunDetectFacesOperator(task_id="detect", image_url=IMAGE, **{"poll_interval": 1, **kwargs})


def deferred(operator: Any, context: dict[str, Any]) -> TaskDeferred:
    with pytest.raises(TaskDeferred) as info:
        operator.execute(context)
    return info.value


# --------------------------------------------------------------------------------------------
# Module and class surface


def test_module_import_stays_light() -> None:
    code = (
        "import sys, airflow_provider_crun.operators.crun\n"
        "heavy = [m for m in ('aiohttp', 'requests', 'airflow_provider_crun.hooks.crun',"
        " 'airflow_provider_crun.triggers.crun') if m in sys.modules]\n"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize(
    ("operator_class", "fields"),
    [
        (CrunCreateTaskOperator, {"model", "input", "callback_url"}),
        (CrunFaceSwapOperator, {"image_url", "new_face", "callback_url"}),
        (CrunMultiFaceSwapOperator, {"faces", "detection", "image_url", "detect_id", "callback_url"}),
        (CrunDetectFacesOperator, {"image_url"}),
    ],
    ids=["create-task", "face-swap", "multi-face-swap", "detect-faces"],
)
def test_template_fields(operator_class: type, fields: set[str]) -> None:
    assert set(operator_class.template_fields) == fields


def test_templates_render_inside_faces_and_detection() -> None:
    import jinja2

    operator = CrunMultiFaceSwapOperator(
        task_id="swap", faces={1: "{{ params.face }}"}, detection={"image_url": "{{ params.image }}"}
    )
    operator.render_template_fields({"params": {"face": NEW_FACE, "image": IMAGE}}, jinja2.Environment())
    assert operator.faces == {1: NEW_FACE}
    assert operator.detection == {"image_url": IMAGE}


def test_hook_is_built_lazily() -> None:
    operator = swap_operator(crun_conn_id="other")
    assert "hook" not in vars(operator)
    assert operator.hook.crun_conn_id == "other"


def test_result_link_reads_the_pushed_url(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.providers.common.compat.sdk import XCom

    asked: list[dict[str, Any]] = []

    def get_value(**kwargs: Any) -> str:
        asked.append(kwargs)
        return RESULT

    monkeypatch.setattr(XCom, "get_value", get_value)
    link = CrunResultLink()
    assert link.name == "Crun result"
    assert link.get_link(swap_operator(), ti_key="ti-key") == RESULT  # type: ignore[arg-type]
    assert asked == [{"ti_key": "ti-key", "key": RESULT_URL_XCOM_KEY}]
    monkeypatch.setattr(XCom, "get_value", lambda **kwargs: None)
    assert link.get_link(swap_operator(), ti_key="ti-key") == ""  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("operator_class", "has_link"),
    [
        (CrunFaceSwapOperator, True),
        (CrunMultiFaceSwapOperator, True),
        (CrunCreateTaskOperator, False),
        (CrunDetectFacesOperator, False),
    ],
    ids=["face-swap", "multi-face-swap", "create-task", "detect-faces"],
)
def test_result_link_sits_on_swap_operators(operator_class: type, has_link: bool) -> None:
    links = [type(link) for link in getattr(operator_class, "operator_extra_links", ())]
    assert (CrunResultLink in links) is has_link


# --------------------------------------------------------------------------------------------
# CrunCreateTaskOperator / CrunFaceSwapOperator, blocking


def test_blocking_task_returns_the_result_shape(
    requests_mock: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    requests_mock.post(CREATE, **ok({"task_id": TASK_ID}))
    requests_mock.get(
        TASK_INFO, [ok(task_data("pending")), ok(task_data("running")), ok(task_data("success"))]
    )
    context = make_context()

    result = swap_operator(callback_url="https://hooks.example/crun").execute(context)

    assert result == {
        "crun_task_id": TASK_ID,
        "model": "image-face-swap",
        "status": "success",
        "media_urls": [RESULT],
        "credits": 6,
        "duration_s": 4.2,
        "data": task_data("success"),
    }
    assert requests_mock.request_history[0].json() == {
        "model": "image-face-swap",
        "input": {"image_url": IMAGE, "new_face": NEW_FACE},
        "callback_url": "https://hooks.example/crun",
    }
    assert context["ti"].xcoms == {RESULT_URL_XCOM_KEY: RESULT}
    logs = capsys.readouterr().out
    for line in (f"Created Crun task {TASK_ID}", "pending -> running", "running -> success", RESULT):
        assert line in logs
    assert TEST_API_KEY not in logs


def test_generic_model_sends_input_unchanged(requests_mock: Any) -> None:
    requests_mock.post(CREATE, **ok({"task_id": TASK_ID}))
    requests_mock.get(TASK_INFO, **ok(task_data("success")))

    result = create_operator().execute(make_context())

    assert requests_mock.request_history[0].json() == {
        "model": "video-face-swap-multi",
        "input": {"video_url": IMAGE},
    }
    assert result["model"] == "video-face-swap-multi"


def test_success_without_media_urls_still_succeeds(requests_mock: Any) -> None:
    requests_mock.post(CREATE, **ok({"task_id": TASK_ID}))
    requests_mock.get(TASK_INFO, **ok({"task_id": TASK_ID, "status": "SUCCESS", "result": {}}))
    context = make_context()

    result = create_operator().execute(context)

    assert (result["media_urls"], result["credits"], result["duration_s"]) == ([], None, None)
    # The empty placeholder stays: the "Crun result" link resolves to nothing.
    assert context["ti"].xcoms == {RESULT_URL_XCOM_KEY: ""}


def test_blocking_failed_task_raises_with_crun_message(requests_mock: Any) -> None:
    requests_mock.post(CREATE, **ok({"task_id": TASK_ID}))
    failed = task_data("failed", result={"code": 501, "message": "no face in new_face"})
    requests_mock.get(TASK_INFO, [ok(task_data("running")), ok(failed)])

    with pytest.raises(CrunJobFailedError, match=rf"{TASK_ID} failed: no face in new_face \(code 501\)"):
        swap_operator().execute(make_context())


def test_blocking_timeout_names_the_task(requests_mock: Any, fake_clock: list[float]) -> None:
    requests_mock.post(CREATE, **ok({"task_id": TASK_ID}))
    requests_mock.get(TASK_INFO, **ok(task_data("running")))

    with pytest.raises(CrunTimeoutError, match=rf"task {TASK_ID} did not finish within 5 s"):
        swap_operator(timeout=5, poll_interval=2).execute(make_context())
    assert fake_clock == [2, 2, 1]


def test_wait_for_completion_false_returns_at_once(requests_mock: Any) -> None:
    requests_mock.post(CREATE, **ok({"task_id": TASK_ID}))
    store = FakeTaskStateStore()

    result = create_operator(wait_for_completion=False).execute(make_context(store))

    assert result == {"crun_task_id": TASK_ID, "model": "video-face-swap-multi", "status": "submitted"}
    assert store.values == {"crun_task_id": TASK_ID}
    assert [request.method for request in requests_mock.request_history] == ["POST"]


# --------------------------------------------------------------------------------------------
# Deferrable


def test_deferrable_defers_to_the_task_trigger(requests_mock: Any) -> None:
    requests_mock.post(CREATE, **ok({"task_id": TASK_ID}))
    requests_mock.get(TASK_INFO, **ok(task_data("pending")))
    store = FakeTaskStateStore()
    context = make_context(store)

    deferral = deferred(swap_operator(deferrable=True, timeout=600, crun_conn_id="crun_default"), context)

    assert isinstance(deferral.trigger, CrunTaskTrigger)
    assert deferral.method_name == "execute_complete"
    assert deferral.timeout is None
    assert deferral.kwargs is None
    kwargs = deferral.trigger.serialize()[1]
    assert {key: kwargs[key] for key in ("crun_task_id", "crun_conn_id", "poll_interval", "timeout")} == {
        "crun_task_id": TASK_ID,
        "crun_conn_id": "crun_default",
        "poll_interval": 1.0,
        "timeout": 600.0,
    }
    assert kwargs["resume_state"] == {"model": "image-face-swap"}
    assert store.values == {"crun_task_id": TASK_ID}
    # Airflow resolves the extra link at the deferral too: it must find an XCom, even an empty one.
    assert context["ti"].xcoms == {RESULT_URL_XCOM_KEY: ""}
    # One status read before deferring, no more.
    assert requests_mock.call_count == 2


def test_deferrable_skips_the_triggerer_when_already_finished(requests_mock: Any) -> None:
    requests_mock.post(CREATE, **ok({"task_id": TASK_ID}))
    requests_mock.get(TASK_INFO, **ok(task_data("success")))
    context = make_context()

    result = swap_operator(deferrable=True).execute(context)

    assert result["media_urls"] == [RESULT]
    assert context["ti"].xcoms == {RESULT_URL_XCOM_KEY: RESULT}


def test_deferrable_fails_at_once_when_already_failed(requests_mock: Any) -> None:
    requests_mock.post(CREATE, **ok({"task_id": TASK_ID}))
    requests_mock.get(TASK_INFO, **ok(task_data("failed", result={"message": "nsfw"})))

    with pytest.raises(CrunJobFailedError, match=f"{TASK_ID} failed: nsfw"):
        swap_operator(deferrable=True).execute(make_context())


def test_deferrable_defers_when_the_status_check_fails_transiently(requests_mock: Any) -> None:
    requests_mock.post(CREATE, **ok({"task_id": TASK_ID}))
    requests_mock.get(TASK_INFO, **api_error(500))

    deferral = deferred(swap_operator(deferrable=True), make_context())

    assert isinstance(deferral.trigger, CrunTaskTrigger)


def test_execute_complete_uses_resume_state_not_operator_state() -> None:
    event = make_event(
        "success",
        id_key="crun_task_id",
        job_id=TASK_ID,
        message="ok",
        data=task_data("success"),
        resume_state={"model": "image-face-swap-multi"},
    )
    context = make_context()

    result = create_operator().execute_complete(context, event=event)

    assert result["crun_task_id"] == TASK_ID
    assert result["model"] == "image-face-swap-multi"
    assert result["media_urls"] == [RESULT]
    assert context["ti"].xcoms == {RESULT_URL_XCOM_KEY: RESULT}


@pytest.mark.parametrize(
    ("event", "error", "pattern"),
    [
        (
            make_event("failed", id_key="crun_task_id", job_id=TASK_ID, message="Crun said: face too small"),
            CrunJobFailedError,
            f"{TASK_ID} failed: Crun said: face too small",
        ),
        (
            make_event("timeout", id_key="crun_task_id", job_id=TASK_ID, message="deadline passed"),
            CrunTimeoutError,
            f"{TASK_ID} timed out: deadline passed",
        ),
        (
            make_event("error", id_key="crun_task_id", job_id=TASK_ID, message="Crun API error 401"),
            CrunError,
            f"{TASK_ID} ended with status 'error': Crun API error 401",
        ),
        ({"status": "cancelled", "crun_task_id": TASK_ID, "message": "?"}, CrunError, "'cancelled'"),
        (
            {"status": "success", "crun_task_id": TASK_ID, "data": None},
            CrunError,
            "success event without data",
        ),
        (None, CrunError, "no usable event"),
    ],
    ids=["failed", "timeout", "error", "unknown-status", "success-without-data", "no-event"],
)
def test_execute_complete_raises_on_anything_but_success(
    event: dict[str, Any] | None, error: type[Exception], pattern: str
) -> None:
    with pytest.raises(error, match=pattern):
        swap_operator().execute_complete(make_context(), event=event)


# --------------------------------------------------------------------------------------------
# CrunDetectFacesOperator


def test_detect_blocking_returns_the_detection_shape(requests_mock: Any) -> None:
    requests_mock.post(DETECT, **ok({"detect_task_id": DETECT_TASK_ID}))
    requests_mock.get(DETECT_RESULT, [ok(detection_data("processing")), ok(detection_data())])
    store = FakeTaskStateStore()
    before = datetime.now(timezone.utc)

    result = detect_operator().execute(make_context(store))

    after = datetime.now(timezone.utc)
    assert requests_mock.request_history[0].json() == {"image_url": IMAGE}
    expires_at = datetime.fromisoformat(result.pop("expires_at"))
    ttl = timedelta(seconds=protocol.DETECT_ID_TTL_SECONDS)
    assert before + ttl <= expires_at <= after + ttl
    assert expires_at.utcoffset() == timedelta(0)
    assert result == {
        "detect_id": DETECT_ID,
        "detect_task_id": DETECT_TASK_ID,
        "image_url": IMAGE,
        "faces": [{"id": 0, "link": FACE_0}, {"id": 1, "link": FACE_1}],
    }
    submitted_at = datetime.fromisoformat(store.values["detect_submitted_at"])
    assert store.values["detect_task_id"] == DETECT_TASK_ID
    assert expires_at == submitted_at + ttl


def test_detect_expiry_counts_from_just_before_submission(requests_mock: Any) -> None:
    """A slow creation call must not push expires_at past the real expiry."""
    moments: list[datetime] = []

    def slow_create(request: Any, context: Any) -> dict[str, Any]:
        moments.append(datetime.now(timezone.utc))
        return {"code": 200, "data": {"detect_task_id": DETECT_TASK_ID}}

    requests_mock.post(DETECT, json=slow_create)
    requests_mock.get(DETECT_RESULT, **ok(detection_data()))

    result = detect_operator().execute(make_context())

    ttl = timedelta(seconds=protocol.DETECT_ID_TTL_SECONDS)
    assert datetime.fromisoformat(result["expires_at"]) <= moments[0] + ttl


def test_detect_without_faces_returns_empty_list_and_warns(
    requests_mock: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    requests_mock.post(DETECT, **ok({"detect_task_id": DETECT_TASK_ID}))
    requests_mock.get(DETECT_RESULT, **ok(detection_data(faces=[])))

    result = detect_operator().execute(make_context())

    assert result["faces"] == []
    assert "found no face" in capsys.readouterr().out


def test_detect_failure_raises_with_crun_message(requests_mock: Any) -> None:
    requests_mock.post(DETECT, **ok({"detect_task_id": DETECT_TASK_ID}))
    failed = {"detect_task_id": DETECT_TASK_ID, "status": "failed", "error": "image could not be downloaded"}
    requests_mock.get(DETECT_RESULT, **ok(failed))

    with pytest.raises(CrunJobFailedError, match=f"{DETECT_TASK_ID} failed: image could not be downloaded"):
        detect_operator().execute(make_context())


def test_detect_deferrable_carries_submission_time_in_resume_state(requests_mock: Any) -> None:
    requests_mock.post(DETECT, **ok({"detect_task_id": DETECT_TASK_ID}))
    requests_mock.get(DETECT_RESULT, **ok(detection_data("starting")))

    deferral = deferred(detect_operator(deferrable=True), make_context(FakeTaskStateStore()))

    assert isinstance(deferral.trigger, CrunFaceDetectionTrigger)
    assert deferral.method_name == "execute_complete"
    assert deferral.timeout is None
    kwargs = deferral.trigger.serialize()[1]
    assert kwargs["detect_task_id"] == DETECT_TASK_ID
    state = kwargs["resume_state"]
    assert state["image_url"] == IMAGE

    # The resume runs in a fresh operator (another process), with only the event to go on.
    event = make_event(
        "success",
        id_key="detect_task_id",
        job_id=DETECT_TASK_ID,
        message="ok",
        data=detection_data(),
        resume_state=state,
    )
    result = detect_operator().execute_complete(make_context(), event=event)

    submitted_at = datetime.fromisoformat(state["submitted_at"])
    assert result["expires_at"] == (submitted_at + timedelta(hours=1)).isoformat()
    assert result["detect_id"] == DETECT_ID


def test_detect_execute_complete_raises_on_failed_event() -> None:
    event = make_event("failed", id_key="detect_task_id", job_id=DETECT_TASK_ID, message="no image")
    with pytest.raises(CrunJobFailedError, match=f"{DETECT_TASK_ID} failed: no image"):
        detect_operator().execute_complete(make_context(), event=event)


# --------------------------------------------------------------------------------------------
# Detection -> multi-face swap


def test_detect_then_swap_keeps_unmentioned_faces(requests_mock: Any) -> None:
    requests_mock.post(DETECT, **ok({"detect_task_id": DETECT_TASK_ID}))
    requests_mock.get(DETECT_RESULT, **ok(detection_data()))
    requests_mock.post(CREATE, **ok({"task_id": TASK_ID}))
    requests_mock.get(TASK_INFO, **ok(task_data("success")))
    detection = detect_operator().execute(make_context())

    swap = CrunMultiFaceSwapOperator(task_id="swap", detection=detection, faces={1: NEW_FACE})
    context = make_context()
    result = swap.execute(context)

    create = next(request for request in requests_mock.request_history if request.url == CREATE)
    assert create.json() == {
        "model": "image-face-swap-multi",
        "input": {
            "detect_id": DETECT_ID,
            "image_url": IMAGE,
            "faces": [{"face_id": 0, "target": FACE_0}, {"face_id": 1, "target": NEW_FACE}],
        },
    }
    assert result["model"] == "image-face-swap-multi"
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

    assert requests_mock.request_history[0].json()["input"]["faces"] == [
        {"face_id": 0, "target": FACE_0},
        {"face_id": 1, "target": NEW_FACE},
    ]


def test_swap_with_detect_id_and_image_url_sends_only_given_faces(requests_mock: Any) -> None:
    requests_mock.post(CREATE, **ok({"task_id": TASK_ID}))
    requests_mock.get(TASK_INFO, **ok(task_data("success")))

    CrunMultiFaceSwapOperator(
        task_id="swap",
        detect_id=DETECT_ID,
        image_url=IMAGE,
        faces={0: NEW_FACE},
        disable_safety_checker=True,
        callback_url="https://hooks.example/crun",
    ).execute(make_context())

    assert requests_mock.request_history[0].json() == {
        "model": "image-face-swap-multi",
        "callback_url": "https://hooks.example/crun",
        "input": {
            "detect_id": DETECT_ID,
            "image_url": IMAGE,
            "faces": [{"face_id": 0, "target": NEW_FACE}],
            "disable_safety_checker": True,
        },
    }


def test_safety_checker_left_out_when_false(requests_mock: Any) -> None:
    requests_mock.post(CREATE, **ok({"task_id": TASK_ID}))
    requests_mock.get(TASK_INFO, **ok(task_data("success")))

    CrunMultiFaceSwapOperator(task_id="swap", detection=detection_xcom(), faces={0: NEW_FACE}).execute(
        make_context()
    )

    assert "disable_safety_checker" not in requests_mock.request_history[0].json()["input"]


# --------------------------------------------------------------------------------------------
# on_kill


def test_on_kill_says_the_crun_task_keeps_running(
    requests_mock: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    requests_mock.post(CREATE, **ok({"task_id": TASK_ID}))
    requests_mock.get(TASK_INFO, **ok(task_data("running")))
    operator = swap_operator(deferrable=True)
    deferred(operator, make_context())
    capsys.readouterr()

    operator.on_kill()

    logs = capsys.readouterr().out
    assert "no cancel endpoint" in logs
    assert f"Crun task {TASK_ID} keeps running" in logs


def test_on_kill_before_submission(capsys: pytest.CaptureFixture[str]) -> None:
    detect_operator().on_kill()
    assert "Killed before this process created" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------
# The hook's blocking waits


def test_wait_for_task_logs_unknown_status_once_and_keeps_waiting(
    requests_mock: Any, fake_clock: list[float], capsys: pytest.CaptureFixture[str]
) -> None:
    statuses = ["queued", "queued", "running", "success"]
    requests_mock.get(TASK_INFO, [ok(task_data(status)) for status in statuses])

    data = CrunHook().wait_for_task(TASK_ID, poll_interval=3, timeout=60)

    assert data["status"] == "success"
    assert fake_clock == [3, 3, 3]
    assert capsys.readouterr().out.count("unknown status 'queued'") == 1


def test_wait_for_task_maps_501_on_read_to_job_failure(requests_mock: Any) -> None:
    requests_mock.get(TASK_INFO, **api_error(501))
    with pytest.raises(CrunJobFailedError, match=f"task {TASK_ID} failed: crun error 501"):
        CrunHook().wait_for_task(TASK_ID, poll_interval=1, timeout=60)


def test_wait_for_face_detection_times_out(requests_mock: Any, fake_clock: list[float]) -> None:
    requests_mock.get(DETECT_RESULT, **ok(detection_data("processing")))
    with pytest.raises(CrunTimeoutError, match=f"face detection {DETECT_TASK_ID} did not finish within 2 s"):
        CrunHook().wait_for_face_detection(DETECT_TASK_ID, poll_interval=5, timeout=2)
    assert fake_clock == [2]


def test_wait_for_face_detection_accepts_either_success_spelling(requests_mock: Any) -> None:
    data = detection_data()
    data["status"] = "Success"
    requests_mock.get(DETECT_RESULT, **ok(data))
    assert CrunHook().wait_for_face_detection(DETECT_TASK_ID, poll_interval=1, timeout=5) == data
