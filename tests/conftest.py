"""Shared fixtures. Airflow settings are pinned before anything imports Airflow."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.connections import EXAMPLE_DAGS, crun_connection_json
from tests.support.tls import TlsFiles, self_signed

# Airflow reads AIRFLOW_HOME when it is first imported, so this must run before any test module
# imports it. A throwaway home keeps the suite off the developer's real Airflow.
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="crun-test-airflow-home-"))
os.environ.setdefault("AIRFLOW_HOME", str(_AIRFLOW_HOME))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")
# dag.test() only runs a DAG whose file sits in the dags folder.
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(EXAMPLE_DAGS))


@pytest.fixture
def crun_conn(monkeypatch: pytest.MonkeyPatch) -> str:
    """``crun_default`` pointing at a loopback base URL, with small retry settings."""
    monkeypatch.setenv("AIRFLOW_CONN_CRUN_DEFAULT", crun_connection_json(timeout=5, max_retries=3))
    return "crun_default"


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A self-signed certificate for 127.0.0.1, localhost and crun.test, with its key."""
    return self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the sync transport's retry waits instead of sleeping through them."""
    from airflow_provider_crun.hooks import _clock

    waits: list[float] = []
    monkeypatch.setattr(_clock.SystemClock, "sleep", lambda self, seconds: waits.append(seconds))
    return waits


@pytest.fixture
async def scripted_crun(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[object]:
    """A running loopback ``ScriptedServer`` (tests/support); ``crun_default`` points at it."""
    from tests.support.scripted_server import ScriptedServer

    server = ScriptedServer()
    await server.start()
    monkeypatch.setenv(
        "AIRFLOW_CONN_CRUN_DEFAULT", crun_connection_json(host=server.url, timeout=5, max_retries=2)
    )
    try:
        yield server
    finally:
        await server.stop()
