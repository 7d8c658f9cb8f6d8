"""(a) The multi-face swap, deferrable (the example DAG) and blocking, on a real Airflow."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import scenarios
from tests.e2e.checks import (
    accepted_creates,
    airflow_defer_races,
    all_success,
    by_task,
    swapped_faces,
    task_states,
    unexplained_retries,
)
from tests.e2e.conftest import E2E

pytestmark = pytest.mark.e2e

RUN_TIMEOUT = 180
TASKS = ("detect_faces", "swap_faces", "fetch_result")
SWAPPED_FACE = 1
FACE_COUNT = 3


@pytest.mark.parametrize(
    ("dag_id", "deferrable"),
    [
        pytest.param("example_crun_multi_face_swap", True, id="example-dag-deferrable"),
        pytest.param(scenarios.BLOCKING_HAPPY.dag_id, False, id="blocking-variant"),
    ],
)
def test_multi_face_swap(e2e: E2E, describe: Any, tmp_path: Path, dag_id: str, deferrable: bool) -> None:
    emulator = e2e.emulator(scenarios.DEFAULT.conn_id)
    # Counters only: the emulator keeps its tasks, so task ids never repeat within the session.
    emulator.reset()
    balance = emulator.balance()
    image_name = f"team-{dag_id}"
    conf = {
        "image_url": e2e.media_url(scenarios.DEFAULT.conn_id, image_name, FACE_COUNT),
        "faces": {str(SWAPPED_FACE): e2e.media_url(scenarios.DEFAULT.conn_id, "new-face", 1)},
        "output_dir": str(tmp_path),
    }
    started = time.monotonic()
    run_id = e2e.api.trigger(dag_id, conf)
    run = e2e.api.wait_for_run(dag_id, run_id, timeout=RUN_TIMEOUT)
    wall = round(time.monotonic() - started, 1)

    tis = e2e.api.task_instances(dag_id, run_id)
    assert run["state"] == "success", describe(dag_id, run_id)
    races = airflow_defer_races(e2e.api, dag_id, run_id)
    assert task_states(tis) == all_success(TASKS), describe(dag_id, run_id)
    assert not unexplained_retries(tis, races), describe(dag_id, run_id)

    detection = e2e.api.xcom(dag_id, run_id, "detect_faces")
    swap = e2e.api.xcom(dag_id, run_id, "swap_faces")
    fetched = e2e.api.xcom(dag_id, run_id, "fetch_result")
    assert detection["image_url"] == conf["image_url"]
    assert [face["id"] for face in detection["faces"]] == [0, 1, 2]
    assert detection["detect_id"]
    assert detection["expires_at"]
    assert swap["status"] == "success"
    assert swap["model"] == "image-face-swap-multi"
    assert swap["credits"] == 6
    assert swap["media_urls"] == [f"{emulator.url}/media/results/{swap['crun_task_id']}.png"]
    assert fetched["crun_task_id"] == swap["crun_task_id"]
    assert fetched["result_url"] == swap["media_urls"][0]
    # Only the requested face changed: the others were sent with their own detected crop.
    assert swapped_faces(fetched["result_path"], image_name, FACE_COUNT) == [SWAPPED_FACE]
    sent_faces = swap["data"]["param"]["input"]["faces"]
    assert [face["face_id"] for face in sent_faces] == [0, 1, 2]
    assert sent_faces[0]["target"] == detection["faces"][0]["link"]
    assert sent_faces[SWAPPED_FACE]["target"] == conf["faces"]["1"]

    state = emulator.state()
    counts = state["counts"]
    assert counts["detect-face-image"] == 1
    assert counts["CreateTask"] == 1
    assert accepted_creates(state) == state["tasks_created"] == 1
    assert state["detections_created"] == 1
    assert counts["TaskInfo"] >= 1
    assert counts["detect-face-result"] >= 1
    assert counts["media"] == 1  # the result download
    assert emulator.balance() == balance - 1 - 6  # one detection, one task

    # Deferrable mode waits in the triggerer: a trigger row watched this very Crun task.
    task_triggers = e2e.triggers.for_job(swap["crun_task_id"], scenarios.DEFAULT.conn_id)
    if deferrable:
        assert [row["classpath"] for row in task_triggers] == [
            "airflow_provider_crun.triggers.crun.CrunTaskTrigger"
        ]
    else:
        assert task_triggers == []
    swap_ti = by_task(tis)["swap_faces"]
    e2e.record(
        f"happy_path_{'deferrable' if deferrable else 'blocking'}",
        dag_id=dag_id,
        runs=1,
        faults_injected=0,
        create_task_requests=counts["CreateTask"],
        tasks_created=state["tasks_created"],
        task_info_polls=counts["TaskInfo"],
        swap_duration_s=swap_ti["duration"],
        wall_s=wall,
    )


def test_task_sensor_example(e2e: E2E, describe: Any) -> None:
    """The fire-and-forget example: CreateTask without waiting, then a deferrable CrunTaskSensor."""
    dag_id = "example_crun_task_sensor"
    emulator = e2e.emulator(scenarios.DEFAULT.conn_id)
    emulator.reset()
    started = time.monotonic()
    run_id = e2e.api.trigger(dag_id)
    run = e2e.api.wait_for_run(dag_id, run_id, timeout=RUN_TIMEOUT)
    assert run["state"] == "success", describe(dag_id, run_id)
    races = airflow_defer_races(e2e.api, dag_id, run_id)
    tis = e2e.api.task_instances(dag_id, run_id)
    assert task_states(tis) == all_success(("submit_swap", "wait_for_swap")), describe(dag_id, run_id)
    assert not unexplained_retries(tis, races), describe(dag_id, run_id)
    submitted = e2e.api.xcom(dag_id, run_id, "submit_swap")
    assert submitted["status"] == "submitted"
    assert submitted["model"] == "image-face-swap"
    state = emulator.state()
    assert state["counts"]["CreateTask"] == state["tasks_created"] == 1
    assert e2e.triggers.for_job(submitted["crun_task_id"], scenarios.DEFAULT.conn_id), (
        "the sensor did not defer"
    )
    e2e.record(
        "task_sensor_example",
        runs=1,
        create_task_requests=state["counts"]["CreateTask"],
        tasks_created=state["tasks_created"],
        wall_s=round(time.monotonic() - started, 1),
    )
