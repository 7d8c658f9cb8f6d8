"""Fixtures for the transport and session-pool tests: no Airflow, no network."""

from __future__ import annotations

import pytest

from tests.support.fakes import FakeClock
from tests.support.proxy import clear_proxy_env


@pytest.fixture(autouse=True)
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start every test without proxy variables from the developer's (or CI's) environment."""
    clear_proxy_env(monkeypatch)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
