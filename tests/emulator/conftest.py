"""Fixtures for the emulator tests: a manual clock, an in-process emulator and a tiny API client."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from airflow_provider_crun.testing.emulator import CrunEmulator, ManualClock

API_KEY = "test-key-not-for-logs"


class Api:
    """A minimal Crun client over one keep-alive session (proxies from the environment ignored)."""

    def __init__(self, emu: CrunEmulator, api_key: str | None = API_KEY) -> None:
        self.emu = emu
        self.session = requests.Session()
        self.session.trust_env = False
        self.api_key = api_key

    def _headers(self) -> dict[str, str]:
        return {"x-api-key": self.api_key} if self.api_key is not None else {}

    def get(self, path: str, **params: Any) -> requests.Response:
        return self.session.get(self.emu.api_url + path, params=params, headers=self._headers(), timeout=10)

    def post(self, path: str, body: Any) -> requests.Response:
        return self.session.post(self.emu.api_url + path, json=body, headers=self._headers(), timeout=10)

    def detect(self, image_url: str) -> str:
        response = self.post("/client/job/detect-face-image", {"image_url": image_url})
        assert response.status_code == 200, response.text
        return str(response.json()["data"]["detect_task_id"])

    def detection(self, detect_task_id: str) -> dict[str, Any]:
        response = self.get("/client/job/detect-face-result", detect_task_id=detect_task_id)
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()["data"]
        return data

    def create_task(self, body: dict[str, Any]) -> requests.Response:
        return self.post("/client/job/CreateTask", body)

    def task(self, task_id: str) -> dict[str, Any]:
        response = self.get("/client/job/TaskInfo", task_id=task_id)
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()["data"]
        return data

    def close(self) -> None:
        self.session.close()


def multi_swap_body(
    detection: dict[str, Any], image_url: str, swap: dict[int, str], callback_url: str | None = None
) -> dict[str, Any]:
    """A CreateTask body keeping every face except those in ``swap`` (face id -> target)."""
    faces = [
        {"face_id": face["id"], "target": swap.get(face["id"], face["link"])}
        for face in detection["result"]["faces"]
    ]
    body: dict[str, Any] = {
        "model": "image-face-swap-multi",
        "input": {"detect_id": detection["result"]["id"], "image_url": image_url, "faces": faces},
    }
    if callback_url is not None:
        body["callback_url"] = callback_url
    return body


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def emu(clock: ManualClock) -> Iterator[CrunEmulator]:
    with CrunEmulator(
        api_key=API_KEY,
        detect_delays=(1.0, 1.0),
        task_delays=(1.0, 2.0),
        retry_after=0.25,
        clock=clock,
        seed=7,
    ) as emulator:
        yield emulator


@pytest.fixture
def api(emu: CrunEmulator) -> Iterator[Api]:
    client = Api(emu)
    yield client
    client.close()


@pytest.fixture
def swap_body() -> Any:
    """The :func:`multi_swap_body` helper."""
    return multi_swap_body


@pytest.fixture
def api_key() -> str:
    return API_KEY


@pytest.fixture
def make_api(request: pytest.FixtureRequest) -> Iterator[Any]:
    """Build extra clients: ``make_api(api_key=..., emulator=...)`` (default: the ``emu`` fixture)."""
    clients: list[Api] = []

    def factory(api_key: str | None = API_KEY, emulator: CrunEmulator | None = None) -> Api:
        client = Api(emulator or request.getfixturevalue("emu"), api_key)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.close()
