"""
(b) Triggerer high availability: SIGKILL the busier of two triggerers mid-batch.

The survivor must take over every trigger the dead one ran, within about Airflow's bound (a
triggerer whose heartbeat is older than ``[triggerer] triggerer_health_check_threshold``, here
2.1 x ``job_heartbeat_sec`` rounded up, loses its triggers on the survivor's next loop), and no
Crun job may be created twice: the triggers only poll, and they poll the same ids.
"""

from __future__ import annotations

import pytest

from tests.distributed import settings
from tests.distributed.chaos import BATCH_DAG, SLOW_DAG, Chaos
from tests.distributed.cluster import TRIGGERER_HEALTH_THRESHOLD_S, TRIGGERER_HEARTBEAT_S
from tests.distributed.context import Dist
from tests.support.airflow.checks import accepted_creates

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(5400)]

# The survivor notices on its next loop after the threshold; the trigger runner then needs a
# moment to take the rows. Anything much slower than this is not Airflow's HA working.
ADOPTION_LIMIT_S = TRIGGERER_HEALTH_THRESHOLD_S + 3 * TRIGGERER_HEARTBEAT_S


def test_survivor_adopts_the_dead_triggerers_triggers(dist: Dist, chaos: Chaos) -> None:
    kill = chaos.triggerer_kill
    assert kill["triggers_held_at_kill"] > 0, kill
    assert kill["adopted"] > 0, f"every trigger finished before the survivor could adopt one: {kill}"
    assert kill["adoption_s"] <= ADOPTION_LIMIT_S, kill
    for dag_id in (BATCH_DAG, SLOW_DAG):
        assert chaos.final[dag_id]["state"] == "success", dag_id
    main = dist.emulators[settings.MAIN_CONN].state()
    slow = dist.emulators[settings.SLOW_CONN].state()
    assert accepted_creates(main) == main["tasks_created"] == dist.images
    assert accepted_creates(slow) == slow["tasks_created"] == 2 * settings.SLOW_IMAGES
    dist.record(
        "b_triggerer_sigkill",
        **kill,
        airflow_bound_s=round(2.1 * TRIGGERER_HEARTBEAT_S, 1),
        triggerer_job_heartbeat_sec=TRIGGERER_HEARTBEAT_S,
        triggerer_health_check_threshold=TRIGGERER_HEALTH_THRESHOLD_S,
        duplicates=(accepted_creates(main) - dist.images)
        + (accepted_creates(slow) - 2 * settings.SLOW_IMAGES),
    )
