"""
(c) Worker loss: SIGKILL a whole Celery worker while it runs swaps whose Crun task exists.

The worker is chosen when it runs blocking swaps of the slow DAG (their Crun tasks take about two
minutes) while they store their results, and, if one worker does within a few seconds, deferred
swaps of that DAG in their resume method too; it usually also holds batch tasks. Airflow fails the lost
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
    # Swaps of the slow DAG, killed in execute (blocking) or in execute_complete (deferred): the
    # lost try created the Crun task, the retry reattaches to it and creates nothing.
    for ti in [ti for ti in held if ti["dag_id"] == SLOW_DAG]:
        task_id, run_id, map_index = ti["task_id"], ti["run_id"], ti["map_index"]
        swap = api.xcom(SLOW_DAG, run_id, task_id, map_index)
        # An earlier try lost to the DB restart may have created it; the lost try itself, else.
        tries = range(1, ti["try_number"] + 1)
        earlier = [log_of(api, SLOW_DAG, run_id, task_id, n, map_index) for n in tries]
        retry = log_of(api, SLOW_DAG, run_id, task_id, ti["try_number"] + 1, map_index)
        created = [log for log in earlier if f"Created Crun task {swap['crun_task_id']}" in log]
        assert len(created) == 1, earlier[-1][-2000:]
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
