"""
(a) The multi-face swap, deferrable (the example DAG) and blocking, on a real Airflow.

The swap stores its result in S3 (the suite's moto server), in a bucket of the run's own; the
bucket must then hold exactly one object, which differs from the input in the swapped face only.
The example DAG's swap announces the stored file as an event of the ``crun_face_swaps`` asset,
and the scheduler then runs ``example_crun_use_swapped_image``, which reads the object back from
S3 through the connection the event names.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.e2e.context import E2E
from tests.support.airflow import scenarios
from tests.support.airflow.api import FINISHED_RUN_STATES
from tests.support.airflow.checks import (
    SWAP_FLOW,
    TASK_RESULT_KEYS,
    TASK_SENSOR_KEYS,
    accepted_creates,
    airflow_defer_races,
    all_success,
    by_task,
    s3_folder,
    s3_key,
    sent_task_input,
    swapped_faces,
    task_states,
    unexplained_retries,
)
from tests.support.airflow.processes import wait_until

pytestmark = pytest.mark.e2e

RUN_TIMEOUT = 180
# The scheduler creates the asset-triggered run within a loop or two of the event.
ASSET_RUN_TIMEOUT = 120
SWAPPED_FACE = 1
FACE_COUNT = 3
CONSUMER_DAG = "example_crun_use_swapped_image"
SLOW_TASK = "4,4"  # seconds pending, running


@pytest.mark.parametrize(
    ("dag_id", "deferrable"),
    [
        pytest.param("example_crun_multi_face_swap", True, id="example-dag-deferrable"),
        pytest.param(scenarios.BLOCKING_HAPPY.dag_id, False, id="blocking-variant"),
    ],
)
def test_multi_face_swap(e2e: E2E, describe: Any, dag_id: str, deferrable: bool) -> None:
    emulator = e2e.emulator(scenarios.DEFAULT.conn_id)
    # Counters only: the emulator keeps its tasks, so task ids never repeat within the session.
    emulator.reset()
    balance = emulator.balance()
    image_name = f"team-{dag_id}"
    bucket = e2e.s3.create_bucket()
    prefix = f"happy/{dag_id}"
    conf = {
        "image_url": e2e.media_url(scenarios.DEFAULT.conn_id, image_name, FACE_COUNT),
        "faces": {str(SWAPPED_FACE): e2e.media_url(scenarios.DEFAULT.conn_id, "new-face", 1)},
        "output_path": s3_folder(e2e.s3, bucket, prefix),
    }
    started = time.monotonic()
    run_id = e2e.api.trigger(dag_id, conf)
    run = e2e.api.wait_for_run(dag_id, run_id, timeout=RUN_TIMEOUT)
    wall = round(time.monotonic() - started, 1)

    tis = e2e.api.task_instances(dag_id, run_id)
    assert run["state"] == "success", describe(dag_id, run_id)
    races = airflow_defer_races(e2e.api, dag_id, run_id)
    assert task_states(tis) == all_success(SWAP_FLOW), describe(dag_id, run_id)
    assert not unexplained_retries(tis, races), describe(dag_id, run_id)

    detection = e2e.api.xcom(dag_id, run_id, "detect_faces")
    swap = e2e.api.xcom(dag_id, run_id, "swap_faces")
    reported = e2e.api.xcom(dag_id, run_id, "report")
    assert detection["image_url"] == conf["image_url"]
    assert [face["id"] for face in detection["faces"]] == [0, 1, 2]
    assert detection["detect_id"]
    assert detection["expires_at"]
    # The task XCom is a summary: Crun's raw data stays out of the metadata DB.
    assert set(swap) == TASK_RESULT_KEYS, swap
    assert swap["status"] == "success"
    assert swap["model"] == "image-face-swap-multi"
    assert swap["credits"] == 6
    assert swap["duration_s"] > 0
    assert swap["media_urls"] == [f"{emulator.url}/media/results/{swap['crun_task_id']}.png"]
    # The stored URI names the bucket, never the connection (nor its keys).
    stored = f"s3://{bucket}/{prefix}/{swap['crun_task_id']}_0.png"
    assert swap["stored_paths"] == [stored]
    objects = e2e.s3.objects(bucket)
    assert list(objects) == [s3_key(stored, bucket)], "not exactly one object for the one swap"
    assert e2e.s3.multipart_uploads(bucket) == []
    # Only the requested face changed: the others were sent with their own detected crop.
    result = e2e.s3.read(bucket, s3_key(stored, bucket))
    assert swapped_faces(result, image_name, FACE_COUNT) == [SWAPPED_FACE]
    assert reported["crun_task_id"] == swap["crun_task_id"]
    assert reported["stored_paths"] == [stored]

    state = emulator.state()
    counts = state["counts"]
    assert counts["detect-face-image"] == 1
    assert counts["CreateTask"] == 1
    assert accepted_creates(state) == state["tasks_created"] == 1
    assert state["detections_created"] == 1
    assert counts["TaskInfo"] >= 1
    assert counts["detect-face-result"] >= 1
    assert counts["media"] >= 1  # the result, streamed into the store
    assert emulator.balance() == balance - 1 - 6  # one detection, one task

    # What Crun was asked for: every detected face, the untouched ones with their own crop.
    sent = sent_task_input(emulator, swap["crun_task_id"])
    assert sent["detect_id"] == detection["detect_id"]
    assert sent["image_url"] == conf["image_url"]
    assert [face["face_id"] for face in sent["faces"]] == [0, 1, 2]
    assert sent["faces"][0]["target"] == detection["faces"][0]["link"]
    assert sent["faces"][SWAPPED_FACE]["target"] == conf["faces"]["1"]

    # Deferrable mode waits in the triggerer: a trigger row watched this very Crun task.
    task_triggers = e2e.triggers.for_job(swap["crun_task_id"], scenarios.DEFAULT.conn_id)
    if deferrable:
        assert [row["classpath"] for row in task_triggers] == [
            "airflow_provider_crun.triggers.crun.CrunTaskTrigger"
        ]
    else:
        assert task_triggers == []
    figures: dict[str, Any] = {}
    if dag_id == "example_crun_multi_face_swap":
        figures = consumer_run_figures(e2e, stored, swap["crun_task_id"], len(result))
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
        s3_objects=len(objects),
        s3_bytes=sum(objects.values()),
        wall_s=wall,
        **figures,
    )


def consumer_run_figures(e2e: E2E, stored: str, crun_task_id: str, size: int) -> dict[str, Any]:
    """
    Wait for the asset-triggered run of the consumer DAG that read ``stored`` (``size`` bytes,
    through the connection the asset event named); check it.

    The run is found by what it read, so an event of another run (the other scenarios do not
    use the example DAG, but a developer's run might) cannot stand in for this one.
    """
    found_at = time.monotonic()
    checked: dict[str, Any] = {}

    def consumer_run() -> dict[str, Any] | None:
        for run in e2e.api.runs(CONSUMER_DAG, run_type="asset_triggered"):
            if run["dag_run_id"] in checked or run["state"] not in FINISHED_RUN_STATES:
                continue
            images = read_images(e2e, run)
            checked[run["dag_run_id"]] = images
            if any(image.get("path") == stored for image in images):
                return run
        return None

    try:
        run = wait_until(
            consumer_run, timeout=ASSET_RUN_TIMEOUT, what=f"a {CONSUMER_DAG} run reading {stored}"
        )
    except TimeoutError as error:
        seen = e2e.api.runs(CONSUMER_DAG)
        raise AssertionError(f"{error}; runs of {CONSUMER_DAG}: {seen}; XComs read: {checked}") from None
    assert run["state"] == "success", e2e.airflow.describe_run(CONSUMER_DAG, run["dag_run_id"])
    images = checked[run["dag_run_id"]]
    assert images == [
        {
            "path": stored,
            "crun_task_id": crun_task_id,
            "png": True,
            "size": size,
        }
    ]
    return {
        "asset_triggered_run": run["dag_run_id"],
        "asset_run_found_s": round(time.monotonic() - found_at, 1),
    }


def read_images(e2e: E2E, run: dict[str, Any]) -> list[dict[str, Any]]:
    """The consumer run's XCom (the images it opened), or ``[]`` when it has none."""
    if run["state"] != "success":
        return []
    value = e2e.api.xcom(CONSUMER_DAG, run["dag_run_id"], "read_new_images")
    return list(value or [])


def test_task_sensor_example(e2e: E2E, describe: Any) -> None:
    """
    The fire-and-forget example: CreateTask without waiting, then a deferrable CrunTaskSensor.

    The sensor reads the task once before deferring, so the task must still be running by then:
    for this test the emulator behind ``crun_default`` takes 8 s per task.
    """
    dag_id = "example_crun_task_sensor"
    started = time.monotonic()
    with e2e.emulator_with(scenarios.DEFAULT.conn_id, "--task-delays", SLOW_TASK) as emulator:
        run_id = e2e.api.trigger(dag_id)
        run = e2e.api.wait_for_run(dag_id, run_id, timeout=RUN_TIMEOUT)
        state = emulator.state()
        emulator_url = emulator.url
    assert run["state"] == "success", describe(dag_id, run_id)
    races = airflow_defer_races(e2e.api, dag_id, run_id)
    tis = e2e.api.task_instances(dag_id, run_id)
    assert task_states(tis) == all_success(("submit_swap", "wait_for_swap")), describe(dag_id, run_id)
    assert not unexplained_retries(tis, races), describe(dag_id, run_id)
    submitted = e2e.api.xcom(dag_id, run_id, "submit_swap")
    assert submitted == {
        "crun_task_id": submitted["crun_task_id"],
        "model": "image-face-swap",
        "status": "submitted",
    }
    sensed = e2e.api.xcom(dag_id, run_id, "wait_for_swap")
    assert set(sensed) == TASK_SENSOR_KEYS, sensed
    assert sensed["crun_task_id"] == submitted["crun_task_id"]
    assert sensed["status"] == "success"
    assert sensed["media_urls"] == [f"{emulator_url}/media/results/{submitted['crun_task_id']}.png"]
    assert sensed["credits"] == 6
    assert state["counts"]["CreateTask"] == state["tasks_created"] == 1
    assert [
        row["classpath"] for row in e2e.triggers.for_job(submitted["crun_task_id"], scenarios.DEFAULT.conn_id)
    ] == ["airflow_provider_crun.triggers.crun.CrunTaskTrigger"], "the sensor did not defer"
    e2e.record(
        "task_sensor_example",
        runs=1,
        create_task_requests=state["counts"]["CreateTask"],
        tasks_created=state["tasks_created"],
        task_info_polls=state["counts"]["TaskInfo"],
        wall_s=round(time.monotonic() - started, 1),
    )
