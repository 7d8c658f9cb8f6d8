"""
(c) SIGKILL the triggerer while several swaps are deferred; a new triggerer finishes them.

The emulator's tasks take 20 s, so the swaps are still running on Crun when the triggerer dies.
Nothing may create a second task: the triggers are rows in the metadata DB, and the new triggerer
resumes polling the same Crun task ids.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.context import E2E
from tests.support.airflow import scenarios
from tests.support.airflow.checks import (
    SWAP_FLOW,
    accepted_creates,
    airflow_defer_races,
    all_success,
    local_file,
    output_folder,
    task_states,
    unexplained_retries,
)
from tests.support.airflow.processes import wait_until

pytestmark = pytest.mark.e2e

RUNS = 4
TASK_TRIGGER = "airflow_provider_crun.triggers.crun.CrunTaskTrigger"
CRUN_TASK_ID = re.compile(r'"crun_task_id": "([^"]+)"')


def _crun_task_id(row: dict[str, Any]) -> str:
    match = CRUN_TASK_ID.search(row["kwargs"])
    assert match, row
    return match.group(1)


def run_conf(e2e: E2E, conn_id: str, image_name: str, output_dir: Path) -> dict[str, Any]:
    return {
        "image_url": e2e.media_url(conn_id, image_name, 3),
        "output_path": output_folder(output_dir / image_name),
    }


def _deferred_swaps(e2e: E2E, runs: list[tuple[str, str]]) -> bool:
    return all(
        e2e.api.task_instance(dag_id, run_id, "swap_faces")["state"] == "deferred" for dag_id, run_id in runs
    )


def test_triggerer_sigkill_while_swaps_are_deferred(e2e: E2E, describe: Any, tmp_path: Path) -> None:
    backend, dag = scenarios.RESTART, scenarios.RESTART_DAG
    emulator = e2e.emulator(backend.conn_id)
    emulator.reset(everything=True)
    started = time.monotonic()
    runs = [
        (dag.dag_id, e2e.api.trigger(dag.dag_id, run_conf(e2e, backend.conn_id, f"restart-{n}", tmp_path)))
        for n in range(RUNS)
    ]
    wait_until(lambda: _deferred_swaps(e2e, runs), timeout=120, what="every swap to be deferred")
    assert emulator.state()["tasks_created"] == RUNS

    def our_triggers() -> list[dict[str, Any]]:
        return [
            row
            for row in e2e.triggers.snapshot()
            if row["classpath"] == TASK_TRIGGER and f'"crun_conn_id": "{backend.conn_id}"' in row["kwargs"]
        ]

    wait_until(lambda: len(our_triggers()) == RUNS, timeout=10, what="the sampler to see the task triggers")
    before_kill = {_crun_task_id(row): set(row["triggerers"]) for row in our_triggers()}

    e2e.airflow.kill("triggerer")
    killed_at = time.monotonic()
    polls_at_kill = emulator.state()["counts"]["TaskInfo"]
    time.sleep(2)
    e2e.airflow.start("triggerer")

    finished = e2e.api.wait_for_runs(runs, timeout=240)
    recovered_s = round(time.monotonic() - killed_at, 1)
    for key, run in finished.items():
        assert run["state"] == "success", describe(*key)
        races = airflow_defer_races(e2e.api, *key)
        tis = e2e.api.task_instances(*key)
        assert task_states(tis) == all_success(SWAP_FLOW), describe(*key)
        assert not unexplained_retries(tis, races), describe(*key)

    state = emulator.state()
    assert state["counts"]["CreateTask"] == accepted_creates(state) == RUNS
    assert state["tasks_created"] == RUNS
    assert state["counts"]["TaskInfo"] > polls_at_kill, "nobody polled after the restart"
    results = [e2e.api.xcom(dag_id, run_id, "swap_faces") for dag_id, run_id in runs]
    swapped = {result["crun_task_id"] for result in results}
    assert all(local_file(path).is_file() for result in results for path in result["stored_paths"])
    assert [len(result["stored_paths"]) for result in results] == [1] * RUNS
    assert swapped == set(before_kill), "a run finished with another Crun task than the one it deferred on"
    after = {_crun_task_id(row): row["triggerers"] for row in our_triggers()}
    for crun_task_id, triggerers in after.items():
        assert triggerers - before_kill[crun_task_id], (
            f"{crun_task_id}: no new triggerer picked its trigger up"
        )
    e2e.airflow.wait_healthy(timeout=60, components=("triggerer",))
    e2e.record(
        "triggerer_restart",
        runs=RUNS,
        faults_injected="SIGKILL of the triggerer process group",
        create_task_requests=state["counts"]["CreateTask"],
        tasks_created=state["tasks_created"],
        recovered_after_kill_s=recovered_s,
        wall_s=round(time.monotonic() - started, 1),
    )
