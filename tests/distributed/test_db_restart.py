"""
(d) Metadata DB blip: ``pg_ctlcluster ... restart`` while swaps are deferred.

Every connection of every component breaks at once. The harness restarts any component that
exits because of it, as a process supervisor (systemd, Kubernetes) would, and records which did:
that is Airflow's behaviour, not the provider's. The provider's part is that both runs still
finish with no Crun job created twice.
"""

from __future__ import annotations

import pytest

from tests.distributed import settings
from tests.distributed.chaos import BATCH_DAG, SLOW_DAG, Chaos, run_seconds
from tests.distributed.context import Dist
from tests.support.airflow.checks import accepted_creates

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(5400)]


def test_runs_survive_a_postgres_restart(dist: Dist, chaos: Chaos) -> None:
    restart = chaos.db_restart
    assert restart["deferred_at_restart"] > 0, restart
    for dag_id, run_id in ((BATCH_DAG, chaos.batch_run), (SLOW_DAG, chaos.slow_run)):
        assert chaos.final[dag_id]["state"] == "success", dist.cluster.describe_run(dag_id, run_id)
    slow_counts = dist.cluster.task_counts(SLOW_DAG, chaos.slow_run)
    for task_id in ("swap_blocking", "swap_deferred"):
        assert slow_counts[(task_id, "success")] == settings.SLOW_IMAGES, slow_counts
    slow = dist.emulators[settings.SLOW_CONN].state()
    main = dist.emulators[settings.MAIN_CONN].state()
    assert accepted_creates(slow) == slow["tasks_created"] == 2 * settings.SLOW_IMAGES
    assert accepted_creates(main) == main["tasks_created"] == dist.images
    stored = [key for key in dist.s3.objects(dist.bucket) if key.startswith("slow/")]
    assert len(stored) == 2 * settings.SLOW_IMAGES, stored
    dist.record(
        "d_postgres_restart",
        **restart,
        slow_run_wall_s=round(run_seconds(chaos.final[SLOW_DAG]), 1),
        duplicates=accepted_creates(slow) - 2 * settings.SLOW_IMAGES + accepted_creates(main) - dist.images,
    )
