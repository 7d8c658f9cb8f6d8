"""Protocol tests of the emulator state: no sockets, a manual clock."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_crun.testing.emulator import (
    ApiError,
    CrunEmulator,
    EmulatorState,
    ManualClock,
    Target,
    key_fingerprint,
)

KEY = "state-key"
IMAGE = "https://example.com/group.png?faces=2"
TARGET = "https://example.com/new-face.jpg"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def scheduled() -> list[tuple[str, float, str]]:
    return []


@pytest.fixture
def state(clock: ManualClock, scheduled: list[tuple[str, float, str]]) -> EmulatorState:
    return EmulatorState(
        [KEY, "other-key"],
        credits=100,
        detect_delays=(1.0, 2.0),
        task_delays=(1.0, 3.0),
        detect_ttl=3600,
        clock=clock,
        wall=lambda: 1_768_900_000.0,
        base_url="http://emu.test",
        on_task_created=lambda *args: scheduled.append(args),
    )


def _ready_detection(state: EmulatorState, clock: ManualClock, image_url: str = IMAGE) -> dict[str, Any]:
    detect_task_id = state.create_detection(KEY, {"image_url": image_url})["detect_task_id"]
    clock.advance(3.0)
    result: dict[str, Any] = state.detection_result(KEY, detect_task_id)["result"]
    return result


def _multi_body(result: dict[str, Any], image_url: str = IMAGE, **swap: str) -> dict[str, Any]:
    faces = [{"face_id": f["id"], "target": swap.get(f"f{f['id']}", f["link"])} for f in result["faces"]]
    return {
        "model": "image-face-swap-multi",
        "input": {"detect_id": result["id"], "image_url": image_url, "faces": faces},
    }


def _error(call: Any, *args: Any, **kwargs: Any) -> ApiError:
    with pytest.raises(ApiError) as info:
        call(*args, **kwargs)
    return info.value


def test_detection_progresses_starting_processing_succeeded(state: EmulatorState, clock: ManualClock) -> None:
    detect_task_id = state.create_detection(KEY, {"image_url": IMAGE})["detect_task_id"]
    assert detect_task_id.startswith("dit")
    seen = []
    for step in (0.0, 0.99, 0.02, 1.98, 0.01):
        clock.advance(step)
        data = state.detection_result(KEY, detect_task_id)
        seen.append(data["status"])
        if data["status"] != "succeeded":
            assert data["result"] is None
    assert seen == ["starting", "starting", "processing", "processing", "succeeded"]
    result = data["result"]
    assert result["status"] == "succeed"
    assert result["type"] == "face_detect"
    assert result["hair_id"] is None
    assert result["error"] is None
    assert result["faces"] == [
        {"id": 0, "link": f"http://emu.test/media/faces/{result['id']}/0.png"},
        {"id": 1, "link": f"http://emu.test/media/faces/{result['id']}/1.png"},
    ]
    assert result["started_at"] == "2026-01-20 09:06:41"
    assert result["finished_at"] == "2026-01-20 09:06:43"
    assert data["error"] is None


@pytest.mark.parametrize(
    ("image_url", "registered", "expected"),
    [
        ("https://example.com/a.png?faces=3", None, 3),
        ("https://example.com/a.png", None, 2),
        ("https://example.com/a.png?faces=bogus", None, 2),
        ("https://example.com/a.png?faces=3", 5, 5),
    ],
    ids=["query", "default", "invalid-query", "registry-wins"],
)
def test_face_count_is_deterministic(
    state: EmulatorState, image_url: str, registered: int | None, expected: int
) -> None:
    if registered is not None:
        state.set_faces(image_url, registered)
    assert state.faces_for(image_url) == expected


@pytest.mark.parametrize(("fail", "error"), [(True, "face detection failed"), (False, "no face detected")])
def test_detection_can_fail(state: EmulatorState, clock: ManualClock, fail: bool, error: str) -> None:
    image_url = IMAGE if fail else "https://example.com/empty.png?faces=0"
    detect_task_id = state.create_detection(KEY, {"image_url": image_url}, fail=fail)["detect_task_id"]
    clock.advance(3.0)
    data = state.detection_result(KEY, detect_task_id)
    assert (data["status"], data["error"], data["result"]) == ("failed", error, None)


def test_task_progresses_pending_running_success(
    state: EmulatorState, clock: ManualClock, scheduled: list[tuple[str, float, str]]
) -> None:
    result = _ready_detection(state, clock)
    body = _multi_body(result, f1=TARGET)
    task_id = state.create_task(KEY, body)["task_id"]
    assert task_id.startswith("task_")
    assert scheduled == []
    statuses = []
    for step in (0.0, 1.0, 2.99, 0.01):
        clock.advance(step)
        data = state.task_info(KEY, task_id)
        statuses.append(data["status"])
        if data["status"] != "success":
            assert (data["result"], data["duration_s"], data["complete_at"]) == (None, None, None)
            assert "credits" not in data
    assert statuses == ["pending", "running", "running", "success"]
    assert data == {
        "task_id": task_id,
        "provider": "crun-emulator",
        "model_version": "image-face-swap-multi-emulator-1",
        "status": "success",
        "param": {"model": "image-face-swap-multi", "callback_url": None, "input": body["input"]},
        "create_at": 1_768_900_000,
        "result": {"media_urls": [f"http://emu.test/media/results/{task_id}.png"]},
        "duration_s": 4.0,
        "complete_at": 1_768_900_004,
        "source": "api",
        "credits": 6,
    }


def test_failed_task_reports_501(state: EmulatorState, clock: ManualClock) -> None:
    result = _ready_detection(state, clock)
    task_id = state.create_task(KEY, _multi_body(result, f0=TARGET), fail=True)["task_id"]
    clock.advance(4.0)
    data = state.task_info(KEY, task_id)
    assert data["status"] == "failed"
    assert data["result"] == {"code": 501, "message": "generation failed"}
    assert _error(state.media, f"http://emu.test/media/results/{task_id}.png").code == 404


def test_callback_hook_gets_finish_time(
    state: EmulatorState, clock: ManualClock, scheduled: list[tuple[str, float, str]]
) -> None:
    result = _ready_detection(state, clock)
    body = {**_multi_body(result), "callback_url": "http://127.0.0.1:9/cb"}
    task_id = state.create_task(KEY, body)["task_id"]
    assert scheduled == [(task_id, clock() + 4.0, "http://127.0.0.1:9/cb")]
    clock.advance(4.0)
    payload = state.callback_payload(task_id)
    assert payload["code"] == 200
    assert payload["data"]["status"] == "success"


def test_detect_id_expires_after_ttl(state: EmulatorState, clock: ManualClock) -> None:
    result = _ready_detection(state, clock)
    clock.advance(3600 - 3.0 - 0.01)
    state.create_task(KEY, _multi_body(result))
    clock.advance(0.02)
    error = _error(state.create_task, KEY, _multi_body(result))
    assert (error.code, error.message) == (422, "detect_id expired")


def test_detect_id_not_ready_yet(state: EmulatorState, clock: ManualClock) -> None:
    detect_task_id = state.create_detection(KEY, {"image_url": IMAGE})["detect_task_id"]
    detection = state._detections[detect_task_id]
    body = {
        "model": "image-face-swap-multi",
        "input": {
            "detect_id": detection.detect_id,
            "image_url": IMAGE,
            "faces": [{"face_id": 0, "target": TARGET}, {"face_id": 1, "target": TARGET}],
        },
    }
    assert _error(state.create_task, KEY, body).code == 422


def test_insufficient_credits_creates_nothing(clock: ManualClock) -> None:
    state = EmulatorState(KEY, credits=6, clock=clock, detect_delays=(0, 0), task_delays=(0, 0))
    result = _ready_detection(state, clock)
    assert state.get_balance(KEY) == 5
    error = _error(state.create_task, KEY, _multi_body(result))
    assert error.code == 402
    assert state.get_balance(KEY) == 5
    assert state.counters.tasks_created == 0
    state.create_detection(KEY, {"image_url": IMAGE})
    state.create_detection(KEY, {"image_url": IMAGE})
    state.create_detection(KEY, {"image_url": IMAGE})
    state.create_detection(KEY, {"image_url": IMAGE})
    state.create_detection(KEY, {"image_url": IMAGE})
    assert _error(state.create_detection, KEY, {"image_url": IMAGE}).code == 402
    assert state.counters.detections_created == 6
    assert state.balance(KEY) == {"balance": 0}


def _mutate(body: dict[str, Any], case: str) -> dict[str, Any]:
    task_input = body["input"]
    if case == "mismatched-image-url":
        task_input["image_url"] = "https://example.com/other.png?faces=2"
    elif case == "unknown-face-id":
        task_input["faces"].append({"face_id": 2, "target": TARGET})
    elif case == "missing-face":
        task_input["faces"] = task_input["faces"][:1]
    elif case == "duplicate-face":
        task_input["faces"].append(dict(task_input["faces"][0]))
    elif case == "non-string-target":
        task_input["faces"][0]["target"] = 42
    elif case == "bool-face-id":
        task_input["faces"][0]["face_id"] = True
    elif case == "empty-faces":
        task_input["faces"] = []
    elif case == "unknown-detect-id":
        task_input["detect_id"] = "nope"
    elif case == "missing-detect-id":
        del task_input["detect_id"]
    elif case == "missing-model":
        del body["model"]
    elif case == "input-not-object":
        body["input"] = "x"
    elif case == "bad-callback":
        body["callback_url"] = "ftp://example.com/cb"
    elif case == "bad-safety-flag":
        task_input["disable_safety_checker"] = "no"
    return body


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("mismatched-image-url", "image_url does not match the detected image"),
        ("unknown-face-id", "face 2 not found in detection"),
        ("missing-face", "face 1 missing"),
        ("duplicate-face", "face 0 listed twice"),
        ("non-string-target", "target of face 0 must be a non-empty string"),
        ("bool-face-id", "face_id must be an integer"),
        ("empty-faces", "input.faces must be a non-empty list"),
        ("unknown-detect-id", "detect_id 'nope' not found"),
        ("missing-detect-id", "input.detect_id is required"),
        ("missing-model", "model is required"),
        ("input-not-object", "input must be a JSON object"),
        ("bad-callback", "callback_url must be an http(s) URL"),
        ("bad-safety-flag", "input.disable_safety_checker must be a boolean"),
    ],
    ids=lambda value: value if " " not in value else "",
)
def test_create_task_validation(state: EmulatorState, clock: ManualClock, case: str, message: str) -> None:
    result = _ready_detection(state, clock)
    balance = state.get_balance(KEY)
    error = _error(state.create_task, KEY, _mutate(_multi_body(result), case))
    assert (error.code, error.message) == (422, message)
    assert state.get_balance(KEY) == balance
    assert state.counters.tasks_created == 0


@pytest.mark.parametrize(
    "body",
    [None, [], {}, {"image_url": 3}, {"image_url": "file:///etc/passwd"}],
    ids=["null", "list", "empty", "not-a-string", "not-http"],
)
def test_detection_validation(state: EmulatorState, body: Any) -> None:
    assert _error(state.create_detection, KEY, body).code == 422
    assert state.counters.detections_created == 0


def test_detect_id_belongs_to_its_key(state: EmulatorState, clock: ManualClock) -> None:
    result = _ready_detection(state, clock)
    assert _error(state.create_task, "other-key", _multi_body(result)).code == 422


def test_unknown_and_foreign_ids_are_404(state: EmulatorState, clock: ManualClock) -> None:
    detect_task_id = state.create_detection(KEY, {"image_url": IMAGE})["detect_task_id"]
    task_id = state.create_task(KEY, {"model": "other", "input": {}})["task_id"]
    assert _error(state.detection_result, KEY, "dit-unknown").code == 404
    assert _error(state.task_info, KEY, "task_unknown").code == 404
    assert _error(state.detection_result, "other-key", detect_task_id).code == 404
    assert _error(state.task_info, "other-key", task_id).code == 404
    assert _error(state.task_info, KEY, None).code == 422


@pytest.mark.parametrize("api_key", [None, "", "wrong"], ids=["missing", "empty", "wrong"])
def test_unknown_key_is_401(state: EmulatorState, api_key: str | None) -> None:
    error = _error(state.authenticate, api_key)
    assert error.code == 401
    assert _error(state.balance, api_key or "wrong").code == 401


def test_single_and_generic_models(state: EmulatorState, clock: ManualClock) -> None:
    single = state.create_task(
        KEY, {"model": "image-face-swap", "input": {"image_url": IMAGE, "new_face": TARGET}}
    )["task_id"]
    generic = state.create_task(KEY, {"model": "video-face-swap-multi", "input": {"video_url": "x"}})[
        "task_id"
    ]
    assert state._tasks[single].swaps == ((0, Target("portrait", TARGET)),)
    assert state._tasks[generic].swaps == ()
    bad = {"model": "image-face-swap", "input": {"image_url": IMAGE}}
    assert _error(state.create_task, KEY, bad).message == "new_face is required"
    clock.advance(4.0)
    assert state.task_info(KEY, generic)["result"]["media_urls"][0].endswith(f"/{generic}.png")


def test_own_face_link_on_any_host_means_unchanged(state: EmulatorState, clock: ManualClock) -> None:
    result = _ready_detection(state, clock)
    body = _multi_body(result, f1=TARGET)
    body["input"]["faces"][0]["target"] = f"http://localhost:1/media/faces/{result['id']}/0.png"
    task_id = state.create_task(KEY, body)["task_id"]
    assert state._tasks[task_id].swaps == ((1, Target("portrait", TARGET)),)


def _ids(clock: ManualClock, **options: Any) -> list[str]:
    state = EmulatorState(KEY, clock=clock, detect_delays=(0, 0), **options)
    detect_task_id = state.create_detection(KEY, {"image_url": IMAGE})["detect_task_id"]
    detect_id = state.detection_result(KEY, detect_task_id)["result"]["id"]
    task_id = state.create_task(KEY, {"model": "other", "input": {}})["task_id"]
    return [detect_task_id, detect_id, task_id]


def test_ids_are_reproducible_with_a_seed(clock: ManualClock) -> None:
    assert _ids(clock, seed=1) == _ids(clock, seed=1)
    assert _ids(clock, seed=1) != _ids(clock, seed=2)
    seeded = EmulatorState(KEY, seed=1, clock=clock)
    first = seeded.create_detection(KEY, {"image_url": IMAGE})["detect_task_id"]
    seeded.reset()
    assert seeded.create_detection(KEY, {"image_url": IMAGE})["detect_task_id"] == first


def test_ids_are_random_without_a_seed(clock: ManualClock) -> None:
    runs = [_ids(clock) for _ in range(3)]
    for kind in range(3):
        assert len({run[kind] for run in runs}) == 3, "an unseeded emulator must not repeat ids"
    assert all(run[0].startswith("dit") and run[2].startswith("task_") for run in runs)


def test_ids_differ_across_emulator_restarts(clock: ManualClock) -> None:
    task_ids = []
    for _ in range(2):
        with CrunEmulator(KEY, clock=clock) as emu:
            task_ids.append(emu.state.create_task(KEY, {"model": "other", "input": {}})["task_id"])
    assert task_ids[0] != task_ids[1]


def test_snapshot_reset_and_fingerprints(state: EmulatorState, clock: ManualClock) -> None:
    state.count("TaskInfo")
    state.counters.add("connections_accepted")
    state.create_detection(KEY, {"image_url": IMAGE})
    snapshot = state.snapshot()
    assert KEY not in repr(snapshot)
    assert snapshot["balances"][key_fingerprint(KEY)] == 99
    assert snapshot["counts"]["TaskInfo"] == 1
    assert (snapshot["connections_accepted"], snapshot["detections_created"]) == (1, 1)
    state.reset_counters()
    assert state.snapshot()["detections"] == 1
    assert state.snapshot()["counts"]["TaskInfo"] == 0
    state.reset()
    assert state.snapshot()["detections"] == 0
    assert state.get_balance(KEY) == 100


def test_snapshot_reports_the_peak_of_jobs_in_flight(state: EmulatorState, clock: ManualClock) -> None:
    """Tasks last 4 s here: three started 1 s apart overlap; one started after they end does not."""
    result = _ready_detection(state, clock)
    for gap in (0.0, 1.0, 1.0, 6.0):
        clock.advance(gap)
        state.create_task(KEY, _multi_body(result))

    snapshot = state.snapshot()

    assert snapshot["peak_tasks_in_flight"] == 3
    assert snapshot["peak_detections_in_flight"] == 1


def test_a_job_ending_as_another_starts_does_not_overlap(state: EmulatorState, clock: ManualClock) -> None:
    result = _ready_detection(state, clock)
    state.create_task(KEY, _multi_body(result))
    clock.advance(4.0)
    state.create_task(KEY, _multi_body(result))

    assert state.snapshot()["peak_tasks_in_flight"] == 1
