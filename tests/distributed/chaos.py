"""
One batch run with three failures injected into it, and what each one did.

The batch example runs over N images on the fault-injecting emulator while the slow-swap DAG holds
long Crun tasks on its own emulator. While both are in flight: (b) SIGKILL the triggerer that
runs the most triggers, and time until the survivor runs every one of them; (c) SIGKILL the
Celery worker that runs blocking swaps, and time until each task it held has another try;
(d) restart PostgreSQL while swaps are deferred, and restart whatever component exits because of
it, as a process supervisor would. The tests assert on the :class:`Chaos` record.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from tests.distributed.cluster import TRIGGERERS, WORKERS, CeleryDeployment
from tests.distributed.monitor import Monitor
from tests.support.airflow.api import FINISHED_RUN_STATES
from tests.support.airflow.processes import wait_until

BATCH_DAG = "example_crun_batch_face_swap"
SLOW_DAG = "distributed_crun_slow_swaps"
T = TypeVar("T")


@dataclass
class Chaos:
    """What happened to one batch run and the slow run beside it."""

    batch_run: str = ""
    slow_run: str = ""
    batch_wall_s: float = 0.0
    triggerer_kill: dict[str, Any] = field(default_factory=dict)
    worker_kill: dict[str, Any] = field(default_factory=dict)
    held_by_dead_worker: list[dict[str, Any]] = field(default_factory=list)
    db_restart: dict[str, Any] = field(default_factory=dict)
    final: dict[str, dict[str, Any]] = field(default_factory=dict)


def checked_wait(cluster: CeleryDeployment, predicate: Callable[[], T], *, timeout: float, what: str) -> T:
    """:func:`wait_until`, failing at once with its log tail when a component exits by itself."""

    def check() -> T:
        cluster.check_alive()
        return predicate()

    return wait_until(check, timeout=timeout, interval=0.5, what=what)


def _running_tis(cluster: CeleryDeployment) -> list[dict[str, Any]]:
    rows = cluster.database.query(
        "SELECT dag_id, run_id, task_id, map_index, try_number, pid, next_method FROM task_instance "
        "WHERE state = 'running'"
    )
    keys = ("dag_id", "run_id", "task_id", "map_index", "try_number", "pid", "next_method")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def kill_busiest_triggerer(cluster: CeleryDeployment, monitor: Monitor) -> dict[str, Any]:
    """(b) SIGKILL the triggerer with the most triggers; wait until the survivor runs them all."""
    jobs = {name: cluster.triggerer_job(name) for name in TRIGGERERS}
    held = {name: monitor.assigned_to(job) for name, job in jobs.items()}
    victim = max(held, key=lambda name: len(held[name]))
    survivor = next(name for name in TRIGGERERS if name != victim)
    cluster.kill(victim)
    killed_at = time.monotonic()

    def adopted() -> dict[int, int | None] | None:
        now = monitor.triggerer_of(held[victim])
        return now if all(job == jobs[survivor] for job in now.values()) else None

    final = checked_wait(cluster, adopted, timeout=120, what=f"{survivor} to adopt {victim}'s triggers")
    adoption_s = round(time.monotonic() - killed_at, 1)
    cluster.start(victim)
    return {
        "victim": victim,
        "victim_job": jobs[victim],
        "survivor_job": jobs[survivor],
        "triggers_held_at_kill": len(held[victim]),
        "survivor_triggers_at_kill": len(held[survivor]),
        "adopted": len(final),
        "finished_meanwhile": len(held[victim]) - len(final),
        "adoption_s": adoption_s,
        "restarted_as_job": cluster.triggerer_job(victim),
    }


def kill_worker_with_blocking_swaps(cluster: CeleryDeployment) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(c) SIGKILL the worker running the most blocking swaps; wait until each lost try is retried."""

    def pick() -> tuple[str, list[dict[str, Any]]] | None:
        running = _running_tis(cluster)
        by_worker = {name: cluster.component_pids(name) for name in WORKERS}
        held = {name: [ti for ti in running if ti["pid"] in pids] for name, pids in by_worker.items()}
        name = max(held, key=lambda n: sum(ti["task_id"] == "swap_blocking" for ti in held[n]))
        return (name, held[name]) if any(ti["task_id"] == "swap_blocking" for ti in held[name]) else None

    victim, held = checked_wait(cluster, pick, timeout=300, what="a worker running blocking swaps")
    cluster.kill(victim)
    killed_at = time.monotonic()

    def retried() -> bool:
        for ti in held:
            rows = cluster.database.query(
                "SELECT try_number, state FROM task_instance WHERE dag_id = %s AND run_id = %s "
                "AND task_id = %s AND map_index = %s",
                (ti["dag_id"], ti["run_id"], ti["task_id"], ti["map_index"]),
            )
            try_number, state = rows[0]
            if try_number <= ti["try_number"] and state != "success":
                return False
        return True

    checked_wait(cluster, retried, timeout=300, what="every try of the dead worker to be retried")
    recovered_s = round(time.monotonic() - killed_at, 1)
    cluster.start(victim)
    for ti in held:
        ti["kind"] = (
            "blocking"
            if ti["task_id"] == "swap_blocking"
            else ("resume method" if ti["next_method"] else "before deferring")
        )
    figures = {
        "victim": victim,
        "tis_held": len(held),
        "blocking_swaps_held": sum(ti["kind"] == "blocking" for ti in held),
        "resuming_tis_held": sum(ti["kind"] == "resume method" for ti in held),
        "all_retried_after_s": recovered_s,
    }
    return figures, held


def restart_postgres(cluster: CeleryDeployment, *, watch_s: float = 60.0) -> dict[str, Any]:
    """(d) ``pg_ctlcluster ... restart`` while swaps are deferred; restart any component it killed."""
    deferred = checked_wait(
        cluster,
        lambda: cluster.database.query("SELECT count(*) FROM task_instance WHERE state = 'deferred'")[0][0],
        timeout=300,
        what="deferred tasks",
    )
    version = sorted(path.name for path in Path("/etc/postgresql").iterdir())[-1]
    started = time.monotonic()
    argv = ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"]
    subprocess.run(argv, check=True, capture_output=True, timeout=120)
    restart_s = round(time.monotonic() - started, 1)
    restarted: list[str] = []
    deadline = time.monotonic() + watch_s
    while time.monotonic() < deadline:
        restarted += cluster.restart_exited()
        time.sleep(2)
    return {
        "deferred_at_restart": int(deferred),
        "pg_restart_s": restart_s,
        "components_exited_and_restarted": restarted,
    }


def run_batch_with_chaos(
    cluster: CeleryDeployment, monitor: Monitor, batch_conf: dict[str, Any], slow_conf: dict[str, Any]
) -> Chaos:
    """Trigger both runs, inject (b), (c), (d) while they are in flight, and wait for both."""
    chaos = Chaos()
    chaos.batch_run = cluster.api.trigger(BATCH_DAG, batch_conf)
    chaos.slow_run = cluster.api.trigger(SLOW_DAG, slow_conf)
    images = len(slow_conf["image_urls"])

    def slow_swaps_in_flight() -> bool:
        counts = cluster.task_counts(SLOW_DAG, chaos.slow_run)
        return counts.get(("swap_deferred", "deferred"), 0) == images and bool(
            counts.get(("swap_blocking", "running"))
        )

    checked_wait(cluster, slow_swaps_in_flight, timeout=600, what="the slow swaps to be in flight")
    chaos.triggerer_kill = kill_busiest_triggerer(cluster, monitor)
    chaos.worker_kill, chaos.held_by_dead_worker = kill_worker_with_blocking_swaps(cluster)
    chaos.db_restart = restart_postgres(cluster)
    pending = {BATCH_DAG: chaos.batch_run, SLOW_DAG: chaos.slow_run}
    deadline = time.monotonic() + 3600
    while pending:
        # After the DB restart, a supervisor's job: start again whatever exits by itself.
        chaos.db_restart["components_exited_and_restarted"] += cluster.restart_exited()
        for dag_id, run_id in list(pending.items()):
            run = cluster.api.run(dag_id, run_id)
            if run["state"] in FINISHED_RUN_STATES:
                chaos.final[dag_id] = run
                del pending[dag_id]
                if dag_id == BATCH_DAG:
                    chaos.batch_wall_s = round(run_seconds(run), 1)
        if time.monotonic() > deadline:
            raise TimeoutError(f"runs still not finished after an hour: {pending}")
        time.sleep(2)
    return chaos


def run_seconds(run: dict[str, Any]) -> float:
    """A DAG run's wall time, from its own start and end dates."""
    return (
        datetime.fromisoformat(run["end_date"]) - datetime.fromisoformat(run["start_date"])
    ).total_seconds()
