"""Every fault kind over real HTTP, including what a faulted creation call bills."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import pytest
import requests

from airflow_provider_crun.testing.emulator import CrunEmulator, FaultRule, ManualClock, handler

TASK = {
    "model": "image-face-swap",
    "input": {"image_url": "https://e.x/a.png", "new_face": "https://e.x/f.png"},
}


@pytest.mark.parametrize(
    ("kind", "options", "status", "code", "retry_after"),
    [
        ("429", {}, 429, 429, "0.25"),
        ("429", {"retry_after": 2}, 429, 429, "2"),
        ("455", {}, 455, 455, None),
        ("455", {"retry_after": 1.5}, 455, 455, "1.5"),
        ("500", {}, 500, 500, None),
        ("502", {}, 502, 502, None),
        ("503", {}, 503, 503, None),
        ("body_error", {}, 200, 429, "0.25"),
        ("body_error", {"code": 455}, 200, 455, None),
        ("body_error", {"code": 500}, 200, 500, None),
    ],
    ids=[
        "429-default-retry-after",
        "429-retry-after",
        "455",
        "455-retry-after",
        "500",
        "502",
        "503",
        "body-429",
        "body-455",
        "body-500",
    ],
)
def test_status_faults(
    emu: CrunEmulator,
    api: Any,
    kind: str,
    options: dict[str, Any],
    status: int,
    code: int,
    retry_after: str | None,
) -> None:
    emu.add_fault("balance", kind, times=1, **options)
    response = api.get("/client/account/balance")
    assert response.status_code == status
    assert response.json() == {"code": code, "message": response.json()["message"], "data": None}
    assert response.headers.get("Retry-After") == retry_after
    assert api.get("/client/account/balance").json()["code"] == 200
    assert emu.counts["balance"] == 2
    assert emu.connections_accepted == 1, "a faulted response keeps the connection alive"


def test_malformed_is_http_200_without_json(emu: CrunEmulator, api: Any) -> None:
    emu.add_fault("TaskInfo", "malformed", times=1)
    response = api.get("/client/job/TaskInfo", task_id="task_1")
    assert response.status_code == 200
    with pytest.raises(ValueError, match=r"."):
        response.json()
    assert api.get("/client/job/TaskInfo", task_id="task_1").status_code == 404


def test_drop_closes_without_a_response(emu: CrunEmulator, api: Any) -> None:
    emu.add_fault("balance", "drop", times=1)
    with pytest.raises(requests.ConnectionError):
        api.get("/client/account/balance")
    assert api.get("/client/account/balance").status_code == 200
    assert emu.connections_accepted == 2
    assert emu.counts["balance"] == 2


@pytest.mark.parametrize("endpoint", ["balance", "media"])
def test_slow_waits_then_answers_normally(
    emu: CrunEmulator, api: Any, monkeypatch: pytest.MonkeyPatch, endpoint: str
) -> None:
    waits: list[float] = []
    monkeypatch.setattr(handler, "time", SimpleNamespace(sleep=waits.append))
    emu.add_fault(endpoint, "slow", times=1, delay=0.3)
    if endpoint == "balance":
        assert api.get("/client/account/balance").json()["data"] == {"balance": 1000}
    else:
        assert api.session.get(emu.input_image_url(), timeout=5).headers["Content-Type"] == "image/png"
    assert waits == [0.3]
    assert emu.faults.fired == {f"{endpoint}:slow": 1}


@pytest.mark.parametrize(
    ("kind", "after_create", "created"),
    [
        ("429", None, False),
        ("455", None, False),
        ("body_error", None, False),
        ("500", None, True),
        ("503", None, True),
        ("drop", None, True),
        ("malformed", None, True),
        ("drop", False, False),
        ("500", False, False),
        ("429", True, True),
    ],
)
def test_creation_faults_bill_only_after_create(
    emu: CrunEmulator, api: Any, kind: str, after_create: bool | None, created: bool
) -> None:
    emu.add_fault("CreateTask", kind, times=1, after_create=after_create)
    try:
        response = api.create_task(TASK)
        if kind != "malformed":
            assert response.status_code != 200 or response.json()["code"] != 200
    except requests.ConnectionError:
        assert kind == "drop"
    assert emu.tasks_created == int(created)
    assert emu.balance() == 1000 - 6 * int(created)
    assert emu.counts["CreateTask"] == 1


def test_detection_creation_fault_after_create(emu: CrunEmulator, api: Any) -> None:
    emu.add_fault("detect-face-image", "500", times=1)
    emu.add_fault("detect-face-image", "429", times=1)
    assert api.post("/client/job/detect-face-image", {"image_url": "https://e.x/a.png"}).status_code == 500
    assert api.post("/client/job/detect-face-image", {"image_url": "https://e.x/a.png"}).status_code == 429
    assert emu.detections_created == 1
    assert emu.balance() == 999


def test_slow_creation_times_out_but_creates(
    emu: CrunEmulator, api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The slow fault waits until the test releases it, so the client's timeout always comes first.
    release = threading.Event()
    monkeypatch.setattr(handler, "time", SimpleNamespace(sleep=lambda _: release.wait(10)))
    emu.add_fault("CreateTask", "slow", times=1, delay=0.5)
    try:
        with pytest.raises(requests.ReadTimeout):
            api.session.post(
                emu.api_url + "/client/job/CreateTask",
                json=TASK,
                headers={"x-api-key": emu.api_key},
                timeout=0.1,
            )
    finally:
        release.set()
    assert emu.tasks_created == 1, "the task exists although the client never saw its id"
    assert emu.balance() == 994


def test_task_fail(emu: CrunEmulator, api: Any, clock: ManualClock) -> None:
    emu.add_fault("CreateTask", "task_fail", times=1)
    failed = api.create_task(TASK).json()["data"]["task_id"]
    fine = api.create_task(TASK).json()["data"]["task_id"]
    clock.advance(3.0)
    assert api.task(failed)["status"] == "failed"
    assert api.task(failed)["result"] == {"code": 501, "message": "generation failed"}
    assert api.task(fine)["status"] == "success"
    assert api.session.get(f"{emu.url}/media/results/{failed}.png", timeout=5).status_code == 404


def test_detection_task_fail(emu: CrunEmulator, api: Any, clock: ManualClock) -> None:
    emu.add_fault("detect-face-image", "task_fail", times=1)
    detect_task_id = api.detect("https://e.x/a.png")
    clock.advance(2.0)
    assert api.detection(detect_task_id)["status"] == "failed"


def test_faults_can_target_media(emu: CrunEmulator, api: Any) -> None:
    emu.add_fault("media", "503", times=1)
    url = emu.input_image_url()
    assert api.session.get(url, timeout=5).status_code == 503
    assert api.session.get(url, timeout=5).status_code == 200


def _statuses(seed: int, clock: ManualClock) -> list[int]:
    rules = [FaultRule("*", "500", probability=0.3)]
    with CrunEmulator("k", seed=seed, faults=rules, clock=clock) as emu:
        session = requests.Session()
        session.trust_env = False
        statuses = [
            session.get(
                emu.api_url + "/client/account/balance", headers={"x-api-key": "k"}, timeout=5
            ).status_code
            for _ in range(40)
        ]
        session.close()
    return statuses


def test_seeded_probability_is_reproducible_over_http(clock: ManualClock) -> None:
    first = _statuses(3, clock)
    assert first == _statuses(3, clock)
    assert first != _statuses(4, clock)
    assert set(first) == {200, 500}


def test_clear_faults(emu: CrunEmulator, api: Any) -> None:
    emu.add_fault("*", "455")
    assert api.get("/client/account/balance").status_code == 455
    emu.clear_faults()
    assert api.get("/client/account/balance").status_code == 200
