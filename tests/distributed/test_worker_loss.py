"""
(c) Worker loss: SIGKILL a whole Celery worker while it runs swaps whose Crun task exists.

The worker is chosen when it runs blocking swaps of the slow DAG (their Crun tasks take about two
minutes); it usually also holds batch tasks, some in their resume method. Airflow fails the lost
tries after ``[scheduler] task_instance_heartbeat_timeout`` and retries them on the other worker;
each retry must reattach to the Crun task its first try created: one ``CreateTask`` per swap.
"""

from __future__ import annotations

import pytest

from tests.distributed import settings
from tests.distributed.chaos import SLOW_DAG, Chaos
from tests.distributed.cluster import TASK_HEARTBEAT_TIMEOUT_S
from tests.distributed.context import Dist
from tests.support.airflow.checks import accepted_creates, log_of

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(5400)]


def test_retries_of_a_lost_worker_reattach(dist: Dist, chaos: Chaos) -> None:
    held = chaos.held_by_dead_worker
    blocking = [ti for ti in held if ti["kind"] == "blocking"]
    assert blocking, chaos.worker_kill
    api = dist.cluster.api
    retries = []
    for ti in held:
        now = api.task_instance(ti["dag_id"], ti["run_id"], ti["task_id"], ti["map_index"])
        assert now["state"] == "success", (ti, now["state"])
        assert now["try_number"] > ti["try_number"], ("the lost try was not retried", ti, now)
        retries.append(now["try_number"] - ti["try_number"])
    for ti in blocking:
        swap = api.xcom(SLOW_DAG, ti["run_id"], "swap_blocking", ti["map_index"])
        lost = log_of(api, SLOW_DAG, ti["run_id"], "swap_blocking", ti["try_number"], ti["map_index"])
        retry = log_of(api, SLOW_DAG, ti["run_id"], "swap_blocking", ti["try_number"] + 1, ti["map_index"])
        assert f"Created Crun task {swap['crun_task_id']}" in lost, lost[-2000:]
        assert f"Reattaching to Crun task {swap['crun_task_id']}" in retry, retry[-3000:]
        assert "Created Crun task" not in retry, retry[-3000:]
        assert len(swap["stored_paths"]) == 1, swap
    slow = dist.emulators[settings.SLOW_CONN].state()
    assert slow["counts"]["CreateTask"] == accepted_creates(slow) == 2 * settings.SLOW_IMAGES, slow
    assert slow["tasks_created"] == 2 * settings.SLOW_IMAGES
    main = dist.emulators[settings.MAIN_CONN].state()
    assert accepted_creates(main) == main["tasks_created"] == dist.images
    dist.record(
        "c_worker_sigkill",
        **chaos.worker_kill,
        held=[f"{ti['task_id']}[{ti['map_index']}] try {ti['try_number']} ({ti['kind']})" for ti in held],
        extra_tries=sum(retries),
        task_instance_heartbeat_timeout_s=TASK_HEARTBEAT_TIMEOUT_S,
        slow_create_task_requests=slow["counts"]["CreateTask"],
        slow_tasks_created=slow["tasks_created"],
        duplicates=accepted_creates(slow) - 2 * settings.SLOW_IMAGES + accepted_creates(main) - dist.images,
    )
