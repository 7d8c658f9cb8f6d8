"""The emulator over real loopback HTTP: envelopes, errors, admin endpoints and concurrency."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import pytest
import requests

from airflow_provider_crun.testing.emulator import CrunEmulator, ManualClock, key_fingerprint

API_KEY = "test-key-not-for-logs"


def _json(response: requests.Response) -> dict[str, Any]:
    assert response.headers["Content-Type"] == "application/json"
    payload: dict[str, Any] = response.json()
    assert set(payload) == {"code", "message", "data"}
    return payload


def test_full_flow_envelopes_and_counters(
    emu: CrunEmulator, api: Any, clock: ManualClock, swap_body: Any
) -> None:
    image_url = emu.input_image_url("flow", faces=2)
    response = api.post("/client/job/detect-face-image", {"image_url": image_url})
    payload = _json(response)
    assert (response.status_code, payload["code"], payload["message"]) == (200, 200, "success")
    detect_task_id = payload["data"]["detect_task_id"]
    assert api.detection(detect_task_id)["status"] == "starting"
    clock.advance(1.0)
    assert api.detection(detect_task_id)["status"] == "processing"
    clock.advance(1.0)
    detection = api.detection(detect_task_id)
    assert detection["status"] == "succeeded"
    assert [face["id"] for face in detection["result"]["faces"]] == [0, 1]

    created = _json(api.create_task(swap_body(detection, image_url, {0: "https://example.com/x.jpg"})))
    task_id = created["data"]["task_id"]
    assert api.task(task_id)["status"] == "pending"
    clock.advance(1.0)
    assert api.task(task_id)["status"] == "running"
    clock.advance(2.0)
    task = api.task(task_id)
    assert task["status"] == "success"
    assert task["result"]["media_urls"] == [f"{emu.url}/media/results/{task_id}.png"]
    assert task["credits"] == 6

    assert _json(api.get("/client/account/balance"))["data"] == {"balance": 993}
    assert emu.balance() == 993
    counts = emu.counts
    assert counts["detect-face-image"] == 1
    assert counts["detect-face-result"] == 3
    assert counts["CreateTask"] == 1
    assert counts["TaskInfo"] == 3
    assert counts["balance"] == 1
    assert (emu.tasks_created, emu.detections_created) == (1, 1)
    assert emu.connections_accepted == 1, "one keep-alive session must reuse one connection"
    emu.reset_counters()
    assert emu.counts["TaskInfo"] == 0
    assert emu.connections_accepted == 0


@pytest.mark.parametrize("api_key", [None, "wrong-key"], ids=["missing", "wrong"])
def test_401_never_echoes_the_key(emu: CrunEmulator, make_api: Any, api_key: str | None) -> None:
    client = make_api(api_key)
    for response in (
        client.get("/client/account/balance"),
        client.post("/client/job/CreateTask", {"model": "x", "input": {}}),
    ):
        assert response.status_code == 401
        assert _json(response)["code"] == 401
        assert "wrong-key" not in response.text
        assert API_KEY not in response.text
    assert emu.counts["balance"] == 1
    assert emu.tasks_created == 0


@pytest.mark.parametrize(
    ("method", "path", "params"),
    [
        ("GET", "/client/job/nope", {}),
        ("GET", "/client/job/CreateTask", {}),
        ("GET", "/client/job/TaskInfo", {"task_id": "task_00000000"}),
        ("GET", "/client/job/detect-face-result", {"detect_task_id": "dit000"}),
    ],
    ids=["unknown-path", "wrong-method", "unknown-task", "unknown-detection"],
)
def test_404_envelopes(api: Any, method: str, path: str, params: dict[str, str]) -> None:
    response = api.session.request(
        method, api.emu.api_url + path, params=params, headers={"x-api-key": API_KEY}, timeout=5
    )
    assert response.status_code == 404
    assert _json(response)["code"] == 404


def test_404_outside_the_api(emu: CrunEmulator, api: Any) -> None:
    response = api.session.get(emu.url + "/elsewhere", timeout=5)
    assert (response.status_code, response.json()["code"]) == (404, 404)


def test_422_on_invalid_json(emu: CrunEmulator, api: Any) -> None:
    response = api.session.post(
        emu.api_url + "/client/job/CreateTask",
        data=b"{not json",
        headers={"x-api-key": API_KEY, "Content-Type": "application/json"},
        timeout=5,
    )
    assert (response.status_code, _json(response)["code"]) == (422, 422)
    # The connection stays usable after an error.
    assert api.get("/client/account/balance").status_code == 200
    assert emu.connections_accepted == 1


def test_402_over_http(clock: ManualClock, make_api: Any) -> None:
    with CrunEmulator(API_KEY, credits=1, clock=clock) as emu:
        client = make_api(emulator=emu)
        client.detect("https://example.com/a.png")
        response = client.post("/client/job/detect-face-image", {"image_url": "https://example.com/a.png"})
        assert (response.status_code, _json(response)["code"]) == (402, 402)
        assert emu.detections_created == 1


def test_admin_endpoints(emu: CrunEmulator, api: Any) -> None:
    admin = requests.Session()
    admin.trust_env = False
    api.get("/client/account/balance")
    state = admin.get(emu.url + "/_emulator/state", timeout=5).json()
    assert state["counts"]["balance"] == 1
    assert state["balances"] == {key_fingerprint(API_KEY): 1000}
    assert API_KEY not in repr(state)

    rules = [{"endpoint": "balance", "kind": "455", "times": 1}]
    assert admin.post(emu.url + "/_emulator/faults", json=rules, timeout=5).json() == {"faults": rules}
    assert api.get("/client/account/balance").status_code == 455
    assert api.get("/client/account/balance").status_code == 200
    bad = admin.post(emu.url + "/_emulator/faults", json=[{"endpoint": "x", "kind": "500"}], timeout=5)
    assert bad.status_code == 422

    image_url = "https://example.com/five.png"
    admin.post(emu.url + "/_emulator/faces", json={"image_url": image_url, "faces": 5}, timeout=5)
    assert emu.state.faces_for(image_url) == 5

    assert admin.post(emu.url + "/_emulator/reset", timeout=5).json() == {"reset": True}
    state = admin.get(emu.url + "/_emulator/state", timeout=5).json()
    assert state["counts"]["balance"] == 0
    assert state["faults"] == rules
    admin.post(emu.url + "/_emulator/reset", json={"all": True}, timeout=5)
    assert admin.get(emu.url + "/_emulator/state", timeout=5).json()["faults"] == []
    admin.close()


def test_connection_uri(emu: CrunEmulator) -> None:
    assert json.loads(emu.connection_uri()) == {
        "conn_type": "crun",
        "host": emu.url,
        "password": API_KEY,
    }
    assert emu.url.startswith("http://127.0.0.1:")
    assert emu.api_url == emu.url + "/api/v1"


def test_verbose_logs_never_contain_the_key(
    clock: ManualClock, caplog: pytest.LogCaptureFixture, make_api: Any
) -> None:
    caplog.set_level(logging.DEBUG, logger="airflow_provider_crun.testing.emulator")
    with CrunEmulator(API_KEY, verbose=True, clock=clock) as emu:
        client = make_api(emulator=emu)
        client.get("/client/account/balance")
        task_id = client.create_task({"model": "x", "input": {}}).json()["data"]["task_id"]
        client.task(task_id)
        make_api("another-secret", emu).get("/client/account/balance")
    assert "/client/account/balance" in caplog.text
    assert API_KEY not in caplog.text
    assert "another-secret" not in caplog.text


def test_concurrent_keep_alive_clients_and_clean_stop(clock: ManualClock, make_api: Any) -> None:
    clients, requests_each = 64, 5
    before = threading.active_count()
    with CrunEmulator(API_KEY, clock=clock) as emu:
        task_id = make_api(emulator=emu).create_task({"model": "x", "input": {}}).json()["data"]["task_id"]
        barrier = threading.Barrier(clients)
        errors: list[BaseException] = []

        def poll() -> None:
            client = make_api(emulator=emu)
            try:
                barrier.wait(10)
                for _ in range(requests_each):
                    assert client.task(task_id)["task_id"] == task_id
            except BaseException as error:
                errors.append(error)
            finally:
                client.session.close()

        threads = [threading.Thread(target=poll) for _ in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert errors == []
        assert emu.counts["TaskInfo"] == clients * requests_each
        assert emu.connections_accepted == clients + 1
        # An idle keep-alive connection is still open here; stop() must end its thread too.
        make_api(emulator=emu).get("/client/account/balance")
    assert threading.active_count() == before
