"""
One batch run with three failures injected into it, and what each one did.

The batch example runs over N images on the fault-injecting emulator while the slow-swap DAG holds
long Crun tasks on its own emulator. While both are in flight, in this order: (b) SIGKILL the
triggerer that runs the most triggers, and time until the survivor runs every one of them;
(d) restart PostgreSQL while swaps are deferred, and restart whatever component exits because of
it, as a process supervisor would; (c) SIGKILL the Celery worker that runs blocking swaps and
swaps in their resume method, and time until each task it held has another try. The tests
assert on the :class:`Chaos` record.
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
#: Triggers the busier triggerer should run when it is killed (the batch defers up to 32 at once).
TRIGGERS_AT_KILL = 10
#: How long the worker kill waits for a worker holding both blocking and resuming swaps.
RESUME_WINDOW_S = 8.0
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


def checked_wait(
    cluster: CeleryDeployment,
    predicate: Callable[[], T],
    *,
    timeout: float,
    what: str,
    restarted: list[str] | None = None,
) -> T:
    """
    :func:`wait_until`, failing at once with its log tail when a component exits by itself.

    :param restarted: Instead of failing, restart what exited and add its name here (a process
        supervisor's job, after the DB restart).
    """

    def check() -> T:
        if restarted is None:
            cluster.check_alive()
        else:
            restarted.extend(cluster.restart_exited())
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

    def busy() -> dict[str, set[int]] | None:
        now = {name: monitor.assigned_to(job) for name, job in jobs.items()}
        return now if max(len(ids) for ids in now.values()) >= TRIGGERS_AT_KILL else None

    try:
        what = f"a triggerer running {TRIGGERS_AT_KILL} triggers"
        held = checked_wait(cluster, busy, timeout=120, what=what)
    except TimeoutError:
        # A small batch may never get there: kill what there is, the figures say how many.
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


def kill_worker_with_blocking_swaps(
    cluster: CeleryDeployment, *, restarted: list[str] | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """
    (c) SIGKILL the worker running blocking swaps, preferably while it also runs deferred swaps in
    their resume method; wait until each lost try is retried.

    The slow emulator serves results slowly, so after the slow Crun tasks succeed both kinds
    spend about 20 s storing them: blocking swaps in ``execute``, deferred ones in
    ``execute_complete``. A worker holding both is killed; if none does within
    :data:`RESUME_WINDOW_S` of the first resume seen, the one with the most blocking swaps is.

    :param restarted: Restart components that exit meanwhile (after the DB restart) and add
        their names here, instead of failing.
    """
    first_resume_at: list[float] = []

    def pick() -> tuple[str, list[dict[str, Any]]] | None:
        running = _running_tis(cluster)
        by_worker = {name: cluster.component_pids(name) for name in WORKERS}
        held = {name: [ti for ti in running if ti["pid"] in pids] for name, pids in by_worker.items()}
        blocking = {name: sum(ti["task_id"] == "swap_blocking" for ti in tis) for name, tis in held.items()}
        resuming = {
            name: sum(ti["task_id"] == "swap_deferred" and bool(ti["next_method"]) for ti in tis)
            for name, tis in held.items()
        }
        both = [name for name in WORKERS if blocking[name] and resuming[name]]
        if both:
            name = max(both, key=lambda n: blocking[n] + resuming[n])
            return name, held[name]
        if any(resuming.values()) and not first_resume_at:
            first_resume_at.append(time.monotonic())
        if first_resume_at and time.monotonic() - first_resume_at[0] > RESUME_WINDOW_S:
            name = max(WORKERS, key=lambda n: blocking[n])
            return (name, held[name]) if blocking[name] else None
        return None

    victim, held = checked_wait(
        cluster, pick, timeout=400, what="a worker running blocking swaps", restarted=restarted
    )
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

    checked_wait(
        cluster, retried, timeout=300, what="every try of the dead worker to be retried", restarted=restarted
    )
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
    # The DB restart before the worker kill: it needs deferred swaps (the slow ones are deferred
    # early), and the kill waits for the slow swaps' resume methods, about two minutes in.
    chaos.db_restart = restart_postgres(cluster)
    exited_later = chaos.db_restart["components_exited_and_restarted"]
    chaos.worker_kill, chaos.held_by_dead_worker = kill_worker_with_blocking_swaps(
        cluster, restarted=exited_later
    )
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
