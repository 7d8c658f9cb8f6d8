"""
The README's "Run the examples in a real Airflow" walkthrough, run as printed: the emulator, the
exports, ``airflow standalone``; then the multi-face-swap example is triggered through the REST API
with the admin password standalone generated, as a user would from the UI.

Only this is changed: both blocks run from the clone's root, as the README says; the ports are
free ones (8089 and 8080 may be taken; the execution API URL follows the second); and
``AIRFLOW_HOME`` is a temporary folder instead of ``$PWD/.airflow-home``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.airflow.processes import VENV_BIN, free_port, start_group, stop_group, tail, wait_until

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
DAG_ID = "example_crun_multi_face_swap"
ASSET_DAG_ID = "example_crun_use_swapped_image"


def walkthrough_blocks() -> tuple[str, str]:
    """The two ``bash`` blocks of the README's walkthrough: the emulator, then Airflow."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Run the examples in a real Airflow", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) == 2, "the walkthrough no longer has its two bash blocks"
    return blocks[0], blocks[1]


def test_readme_walkthrough_runs_the_example_in_airflow_standalone(tmp_path: Path) -> None:
    emulator_block, airflow_block = walkthrough_blocks()
    emulator_port, api_port, home = free_port(), free_port(), tmp_path / "airflow-home"
    emulator_block = f"cd {ROOT}\n" + emulator_block.replace("8089", str(emulator_port))
    airflow_block = f"cd {ROOT}\n" + airflow_block.replace("8089", str(emulator_port))
    airflow_block = airflow_block.replace('"$PWD/.airflow-home"', str(home))
    assert "airflow standalone" in airflow_block
    assert str(home) in airflow_block
    env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
    env.update(
        AIRFLOW__API__PORT=str(api_port),
        # Follows the port: the workers reach the execution API on it.
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://localhost:{api_port}/execution/",
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    logs = tmp_path / "logs"
    logs.mkdir()
    base = f"http://127.0.0.1:{api_port}"
    emulator = start_group(["bash", "-c", emulator_block], env=env, log_path=logs / "emulator.log")
    airflow = start_group(["bash", "-c", airflow_block], env=env, log_path=logs / "standalone.log")
    try:
        wait_until(lambda: _healthy(base), timeout=240, what="airflow standalone to be healthy")
        password_file = home / "simple_auth_manager_passwords.json.generated"
        wait_until(password_file.exists, timeout=30, what="standalone's admin password")
        password = json.loads(password_file.read_text())["admin"]
        session = requests.Session()
        session.trust_env = False
        token = session.post(
            f"{base}/auth/token", json={"username": "admin", "password": password}, timeout=10
        ).json()["access_token"]
        session.headers["Authorization"] = f"Bearer {token}"
        wait_until(
            lambda: session.get(f"{base}/api/v2/dags/{DAG_ID}", timeout=10).status_code == 200,
            timeout=120,
            what=f"{DAG_ID} to be parsed",
        )
        runs_url = f"{base}/api/v2/dags/{DAG_ID}/dagRuns"
        triggered = session.post(runs_url, json={"logical_date": None}, timeout=30)
        assert triggered.status_code == 200, triggered.text
        run_id = triggered.json()["dag_run_id"]

        run = wait_until(
            lambda: _finished(session, f"{runs_url}/{run_id}"),
            timeout=240,
            what=f"{DAG_ID} to finish",
        )
        assert run["state"] == "success", tail(logs / "standalone.log")
        swap = session.get(
            f"{base}/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/swap_faces/xcomEntries/return_value",
            timeout=10,
        ).json()["value"]
        stored = swap["stored_paths"] if isinstance(swap, dict) else json.loads(swap)["stored_paths"]
        assert [Path(uri.removeprefix("file://")).is_file() for uri in stored] == [True], stored
        # The asset event starts the consumer example, which reads the stored image back.
        consumer = wait_until(
            lambda: _finished_run_of(session, f"{base}/api/v2/dags/{ASSET_DAG_ID}/dagRuns"),
            timeout=180,
            what=f"{ASSET_DAG_ID} to run on the asset event",
        )
        assert consumer["state"] == "success", tail(logs / "standalone.log")
    finally:
        stop_group(airflow, sig=signal.SIGTERM, grace=20)
        stop_group(emulator)
        for uri in locals().get("stored", []):
            Path(uri.removeprefix("file://")).unlink(missing_ok=True)


def _healthy(base: str) -> bool:
    try:
        health = requests.get(f"{base}/api/v2/monitor/health", timeout=5).json()
    except (requests.RequestException, ValueError):
        return False
    return all(
        health.get(name, {}).get("status") == "healthy" for name in ("metadatabase", "scheduler", "triggerer")
    )


def _finished(session: requests.Session, url: str) -> dict[str, Any] | None:
    run = session.get(url, timeout=10).json()
    return run if run.get("state") in ("success", "failed") else None


def _finished_run_of(session: requests.Session, url: str) -> dict[str, Any] | None:
    runs = session.get(url, timeout=10).json().get("dag_runs", [])
    done = [run for run in runs if run.get("state") in ("success", "failed")]
    time.sleep(0 if done else 1)
    return done[0] if done else None
