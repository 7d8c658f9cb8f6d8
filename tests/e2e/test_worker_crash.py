"""
(d) SIGKILL a blocking swap's task process around its ``CreateTask``; the retry never pays twice.

The swap runs in blocking mode with ``retries=1``.

* Killed after Crun accepted the task and the operator polled it once (so the Crun task id is
  already in ``task_state_store``; the id is stored between the two): Airflow retries it, and the
  retry must find the stored id and wait for the same Crun task. Exactly one ``CreateTask``.
* Killed while the ``CreateTask`` answer is still on its way (Crun has created the task; the
  emulator holds the answer back): the id was never stored. The retry must not send the call
  again, and fails without another retry, naming the fix. Exactly one ``CreateTask``.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_crun.testing.emulator import FaultRule
from tests.e2e.context import E2E
from tests.support.airflow import scenarios
from tests.support.airflow.checks import (
    accepted_creates,
    by_task,
    local_file,
    log_of,
    output_folder,
    stored_uri,
)
from tests.support.airflow.processes import task_process, wait_until

pytestmark = pytest.mark.e2e


def test_worker_crash_after_create_task_reattaches(e2e: E2E, describe: Any, tmp_path: Path) -> None:
    backend, dag = scenarios.CRASH, scenarios.CRASH_DAG
    emulator = e2e.emulator(backend.conn_id)
    emulator.reset(everything=True)
    started = time.monotonic()
    conf = {"image_url": e2e.media_url(backend.conn_id, "crash", 3), "output_path": output_folder(tmp_path)}
    run_id = e2e.api.trigger(dag.dag_id, conf)

    def polled_once() -> bool:
        state = emulator.state()
        return state["tasks_created"] == 1 and state["counts"]["TaskInfo"] >= 1

    wait_until(polled_once, timeout=120, what="the swap to create its Crun task and poll it")
    swap_ti = e2e.api.task_instance(dag.dag_id, run_id, "swap_faces")
    assert (swap_ti["state"], swap_ti["try_number"]) == ("running", 1), describe(dag.dag_id, run_id)
    process = wait_until(lambda: task_process(swap_ti["id"]), timeout=20, what="the task's process")
    process.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()

    run = e2e.api.wait_for_run(dag.dag_id, run_id, timeout=180)
    recovered_s = round(time.monotonic() - killed_at, 1)
    assert run["state"] == "success", describe(dag.dag_id, run_id)
    tis = by_task(e2e.api.task_instances(dag.dag_id, run_id))
    assert (tis["swap_faces"]["state"], tis["swap_faces"]["try_number"]) == ("success", 2)
    assert (tis["detect_faces"]["try_number"], tis["report"]["try_number"]) == (1, 1)

    state = emulator.state()
    assert state["counts"]["CreateTask"] == accepted_creates(state) == 1
    assert state["tasks_created"] == 1
    swap = e2e.api.xcom(dag.dag_id, run_id, "swap_faces")
    assert swap["status"] == "success"
    assert swap["stored_paths"] == [stored_uri(tmp_path, swap["crun_task_id"])]
    assert local_file(swap["stored_paths"][0]).is_file()
    first_try = log_of(e2e.api, dag.dag_id, run_id, "swap_faces", 1)
    retry = log_of(e2e.api, dag.dag_id, run_id, "swap_faces", 2)
    assert f"Created Crun task {swap['crun_task_id']}" in first_try
    assert f"Reattaching to Crun task {swap['crun_task_id']}" in retry, retry[-3000:]
    assert "Created Crun task" not in retry, retry[-3000:]
    e2e.record(
        "worker_crash",
        runs=1,
        faults_injected="SIGKILL of the task process after CreateTask",
        create_task_requests=state["counts"]["CreateTask"],
        tasks_created=state["tasks_created"],
        swap_tries=tis["swap_faces"]["try_number"],
        recovered_after_kill_s=recovered_s,
        wall_s=round(time.monotonic() - started, 1),
    )


# The emulator creates the task, then holds its answer back this long (under the 30 s timeout).
HELD_ANSWER_S = 20


def test_worker_crash_during_create_task_fails_without_sending_it_again(
    e2e: E2E, describe: Any, tmp_path: Path
) -> None:
    backend, dag = scenarios.CRASH, scenarios.CRASH_DAG
    emulator = e2e.emulator(backend.conn_id)
    emulator.reset(everything=True)
    emulator.set_faults([FaultRule("CreateTask", "slow", times=1, delay=HELD_ANSWER_S, after_create=True)])
    started = time.monotonic()
    conf = {
        "image_url": e2e.media_url(backend.conn_id, "mid-create", 3),
        "output_path": output_folder(tmp_path),
    }
    try:
        run_id = e2e.api.trigger(dag.dag_id, conf)
        wait_until(
            lambda: emulator.state()["tasks_created"] == 1,
            timeout=120,
            what="Crun to create the swap's task (its answer held back)",
        )
        swap_ti = e2e.api.task_instance(dag.dag_id, run_id, "swap_faces")
        assert (swap_ti["state"], swap_ti["try_number"]) == ("running", 1), describe(dag.dag_id, run_id)
        process = wait_until(lambda: task_process(swap_ti["id"]), timeout=10, what="the task's process")
        process.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        run = e2e.api.wait_for_run(dag.dag_id, run_id, timeout=180)
    finally:
        emulator.set_faults(())
    failed_after_s = round(time.monotonic() - killed_at, 1)

    assert run["state"] == "failed", describe(dag.dag_id, run_id)
    tis = by_task(e2e.api.task_instances(dag.dag_id, run_id))
    # Try 1 was killed; try 2 refused, and did not use the retry it would still have had.
    assert (tis["swap_faces"]["state"], tis["swap_faces"]["try_number"]) == ("failed", 2)
    assert tis["report"]["state"] == "upstream_failed"
    state = emulator.state()
    assert state["counts"]["CreateTask"] == accepted_creates(state) == 1
    assert state["tasks_created"] == 1
    retry = log_of(e2e.api, dag.dag_id, run_id, "swap_faces", 2)
    assert "may have reached Crun" in retry, retry[-3000:]
    assert "CrunCreationUnknownError" in retry, retry[-3000:]
    assert list(tmp_path.iterdir()) == []
    e2e.record(
        "worker_crash_mid_create",
        runs=1,
        faults_injected=f"SIGKILL of the task process while CreateTask's answer was held {HELD_ANSWER_S} s",
        create_task_requests=state["counts"]["CreateTask"],
        tasks_created=state["tasks_created"],
        swap_tries=tis["swap_faces"]["try_number"],
        failed_after_kill_s=failed_after_s,
        wall_s=round(time.monotonic() - started, 1),
    )
