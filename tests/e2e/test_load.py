"""
(f) Load: the batch example mapped over 200 images, with about 5 % transient faults injected.

Every result is stored in S3 (the suite's moto server), in a bucket of the run's own, which must
then hold exactly one object per swap. The example bounds the Crun jobs of each kind in flight
(``max_active_tis_per_dag``, which counts deferred task instances too; 8 in this suite); the
emulator's peak of jobs between creation and end must stay within it.
``CRUN_E2E_LOAD_IMAGES`` runs a smaller batch, for a quicker check of the scenario itself.

Every fault is one the provider must absorb: 429/455 rejections on the creation calls (nothing
is created, so re-sending is safe) and 500s, malformed bodies and dropped connections on the
reads. Each rule draws from its own generator seeded by the emulator's ``--seed``.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from typing import Any

import pytest

from tests.e2e.context import E2E
from tests.support.airflow import scenarios
from tests.support.airflow.checks import (
    accepted_creates,
    airflow_defer_races,
    faults_injected,
    fired,
    s3_folder,
    s3_key,
    unexplained_retries,
)
from tests.support.airflow.processes import process_tree_cpu
from tests.support.airflow.scenarios import TRANSIENT_FAULT_MIX

pytestmark = pytest.mark.e2e

DAG_ID = "example_crun_batch_face_swap"
IMAGES = int(os.environ.get("CRUN_E2E_LOAD_IMAGES", "200"))
# The batch example's bound on Crun jobs of each kind in flight (its CRUN_EXAMPLE_CONCURRENCY).
IN_FLIGHT_BOUND = scenarios.BATCH_CONCURRENCY
# Four detections, then four swaps, in flight at once (deferred ones count), and the swaps start
# only once every detection is done: 2 x 50 rounds of a task process, a deferral and a resume.
RUN_TIMEOUT = 2400
FAULTS = TRANSIENT_FAULT_MIX


def emulator_cpu(e2e: E2E) -> float:
    process = e2e.emulator(scenarios.DEFAULT.conn_id).process
    return process_tree_cpu(process.pid) if process is not None else 0.0


@pytest.mark.timeout(RUN_TIMEOUT + 120)
def test_batch_of_200_with_transient_faults(e2e: E2E, describe: Any) -> None:
    emulator = e2e.emulator(scenarios.DEFAULT.conn_id)
    bucket = e2e.s3.create_bucket()
    # Forget earlier scenarios' jobs too: the peak of jobs in flight is this batch's alone.
    emulator.reset(everything=True)
    emulator.set_faults(FAULTS)
    base = emulator.url
    conf = {
        "image_urls": [f"{base}/media/input/load-{n:03d}.png?faces=2" for n in range(IMAGES)],
        "new_face": f"{base}/media/input/new-face.png?faces=1",
        "face_id": 0,
        "output_path": s3_folder(e2e.s3, bucket, "load"),
    }
    cpu_before = {**e2e.airflow.cpu_seconds(), "emulator": emulator_cpu(e2e)}
    started = time.monotonic()
    try:
        run_id = e2e.api.trigger(DAG_ID, conf)
        run = e2e.api.wait_for_run(DAG_ID, run_id, timeout=RUN_TIMEOUT)
    finally:
        emulator.set_faults(())
    wall = round(time.monotonic() - started, 1)
    cpu_after = {**e2e.airflow.cpu_seconds(), "emulator": emulator_cpu(e2e)}
    cpu = {name: round(used - cpu_before.get(name, 0.0), 1) for name, used in cpu_after.items()}

    assert run["state"] == "success", describe(DAG_ID, run_id)
    tis = e2e.api.task_instances(DAG_ID, run_id)
    by_state = Counter((ti["task_id"], ti["state"]) for ti in tis)
    assert by_state[("detect_faces", "success")] == IMAGES, by_state
    assert by_state[("swap_faces", "success")] == IMAGES, by_state
    tries = Counter(ti["try_number"] for ti in tis if ti["task_id"] in ("detect_faces", "swap_faces"))
    races = airflow_defer_races(e2e.api, DAG_ID, run_id)

    summary = e2e.api.xcom(DAG_ID, run_id, "summarize")
    assert summary["swapped"] == IMAGES
    assert summary["credits"] == 6 * IMAGES
    stored = {s3_key(path, bucket) for path in summary["stored_paths"]}
    assert len(stored) == IMAGES
    # Exactly one object per swap: every image once, no second copy, nothing half-written.
    objects = e2e.s3.objects(bucket)
    assert set(objects) == stored, sorted(set(objects) ^ stored)
    assert all(size > 0 for size in objects.values()), objects

    state = emulator.state()
    assert state["tasks_created"] == IMAGES
    # The example's max_active_tis_per_dag (deferred task instances count) bounds Crun's own
    # concurrency: the most jobs between their creation and their end, as the emulator saw them.
    assert state["peak_tasks_in_flight"] <= IN_FLIGHT_BOUND, state["peak_tasks_in_flight"]
    assert state["peak_detections_in_flight"] <= IN_FLIGHT_BOUND, state["peak_detections_in_flight"]
    assert accepted_creates(state) == IMAGES, state
    assert state["detections_created"] == IMAGES
    injected = faults_injected(state)
    assert injected > 0, "no fault fired: the load ran without faults"
    requests = sum(
        state["counts"][endpoint] for endpoint in scenarios.READ_ENDPOINTS + scenarios.CREATION_ENDPOINTS
    )
    e2e.record(
        f"load_batch_{IMAGES}",
        runs=1,
        mapped_swaps=IMAGES,
        s3_objects=len(objects),
        s3_bytes=sum(objects.values()),
        s3_open_multipart_uploads=len(e2e.s3.multipart_uploads(bucket)),
        api_requests=requests,
        faults_injected=injected,
        fault_rate=round(injected / requests, 3),
        faults_by_kind=state["faults_fired"],
        create_task_requests=state["counts"]["CreateTask"],
        create_task_rejected=fired(state, "CreateTask", scenarios.REJECTION_KINDS),
        tasks_created=state["tasks_created"],
        in_flight_bound=IN_FLIGHT_BOUND,
        peak_tasks_in_flight=state["peak_tasks_in_flight"],
        peak_detections_in_flight=state["peak_detections_in_flight"],
        task_tries=dict(tries),
        airflow_defer_races=sum(races.values()),
        cpu_s_by_component=cpu,
        wall_s=wall,
    )
    # Every fault was absorbed inside the try that met it: no Airflow retry was needed, except
    # where Airflow's own defer race failed a try (the durable reattach then kept the counts exact).
    assert not unexplained_retries(tis, races), unexplained_retries(tis, races)
