"""Fixtures for the transport and session-pool tests: no Airflow, no network."""

from __future__ import annotations

import pytest

from airflow_provider_crun.protocol import calls
from airflow_provider_crun.protocol.settings import CrunConnectionSettings
from tests.support.proxy import clear_proxy_env

API_KEY = "crun-unit-key-5ecr3t-91c2"
BASE_URL = "https://api.crun.ai/api/v1"


class RecordingClock:
    """A clock that records the waits it is asked for instead of sleeping."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []
        self.now = 1_700_000_000.0

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)

    def uniform(self, low: float, high: float) -> float:
        return (low + high) / 2


@pytest.fixture(autouse=True)
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start every test without proxy variables from the developer's (or CI's) environment."""
    clear_proxy_env(monkeypatch)


@pytest.fixture
def clock() -> RecordingClock:
    return RecordingClock()


def settings(base_url: str = BASE_URL, **overrides: object) -> CrunConnectionSettings:
    """Settings with three retries, as a connection with ``max_retries=3`` gives."""
    values: dict[str, object] = {"timeout": 5.0, "max_retries": 3, **overrides}
    return CrunConnectionSettings(base_url=base_url, api_key=API_KEY, **values)  # type: ignore[arg-type]


CREATE = calls.create_task_request(
    "image-face-swap", {"image_url": "https://x/a.png", "new_face": "https://x/b.png"}
)
READ = calls.task_info_request("task_1")
