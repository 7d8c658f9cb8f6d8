"""
A production-shaped Airflow 3: CeleryExecutor, PostgreSQL, Redis, two triggerers, two workers.

:class:`CeleryDeployment` is the end-to-end suite's :class:`AirflowDeployment` (same process-group
handling, REST client and ``atexit`` backstop) with other components and settings: a fresh
PostgreSQL database, a Redis DB number as the Celery broker, ``triggerer-1``/``triggerer-2`` and
``worker-1``/``worker-2`` (Celery, concurrency 4 each), each with its own log-server port.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

from tests.support.airflow.deployment import AirflowDeployment, Component
from tests.support.airflow.processes import VENV_BIN, free_port, wait_until
from tests.support.services import ScratchDatabase, ScratchRedis

TRIGGERERS = ("triggerer-1", "triggerer-2")
WORKERS = ("worker-1", "worker-2")
WORKER_CONCURRENCY = 4
#: ``[triggerer] job_heartbeat_sec``; a dead triggerer's triggers move after about 2.1 x this.
TRIGGERER_HEARTBEAT_S = 5
TRIGGERER_HEALTH_THRESHOLD_S = 11  # 2.1 x 5 = 10.5, rounded up: Airflow reads it with getint
#: ``[scheduler] task_instance_heartbeat_timeout``: how soon a task on a lost worker is retried.
TASK_HEARTBEAT_TIMEOUT_S = 30


@dataclass
class CeleryDeployment(AirflowDeployment):
    """
    :param database: The run's own PostgreSQL database (created by the caller).
    :param broker: The Redis DB number Celery uses as its broker.
    """

    database: ScratchDatabase = field(default_factory=ScratchDatabase)
    broker: ScratchRedis = field(default_factory=ScratchRedis.claim)
    #: ``TriggererJob`` id of each triggerer start, in order: ``(component, job id)``.
    triggerer_jobs: list[tuple[str, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.components.pop("triggerer")
        for name in TRIGGERERS:
            env = {"AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port())}
            argv = [str(VENV_BIN / "airflow"), "triggerer"]
            self.components[name] = Component(name, argv, self.component_log_dir / f"{name}.log", env)
        for name in WORKERS:
            env = {"AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port())}
            argv = [str(VENV_BIN / "airflow"), "celery", "worker", "--concurrency", str(WORKER_CONCURRENCY)]
            argv += ["--celery-hostname", f"{name}@%h", "--without-mingle", "--without-gossip"]
            self.components[name] = Component(name, argv, self.component_log_dir / f"{name}.log", env)

    @property
    def env(self) -> dict[str, str]:
        env = super().env
        for key in ("SQL_ALCHEMY_CONNECT_ARGS", "SQL_ALCHEMY_CONNECT_ARGS_ASYNC"):
            env.pop(f"AIRFLOW__DATABASE__{key}", None)
        env.update(
            {
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.database.url,
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__CELERY__BROKER_URL": self.broker.url,
                "AIRFLOW__CELERY__RESULT_BACKEND": self.database.celery_result_backend,
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(WORKER_CONCURRENCY),
                "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": str(TRIGGERER_HEARTBEAT_S),
                "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": str(TRIGGERER_HEALTH_THRESHOLD_S),
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(TASK_HEARTBEAT_TIMEOUT_S),
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
                # A task whose Celery message a lost worker had reserved is queued forever on the
                # broker side: the scheduler re-queues it after this long. A scheduler restarted
                # meanwhile handles only its own queued tasks, so it adopts the dead one's sooner.
                "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "120",
                "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT_CHECK_INTERVAL": "15",
                "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "30",
            }
        )
        return env

    # -- life cycle -----------------------------------------------------------------------------

    def start(self, name: str) -> None:
        """Start one component; for a triggerer, wait for its new ``TriggererJob`` row and keep its id."""
        known = {job_id for _, job_id in self.triggerer_jobs}
        super().start(name)
        if name in TRIGGERERS:
            job_id = wait_until(
                lambda: next(iter(set(self.running_triggerer_jobs()) - known), None),
                timeout=120,
                interval=0.5,
                what=f"the TriggererJob of {name}",
            )
            self.triggerer_jobs.append((name, job_id))

    def running_triggerer_jobs(self) -> list[int]:
        rows = self.database.query("SELECT id FROM job WHERE job_type = 'TriggererJob' AND state = 'running'")
        return [int(row[0]) for row in rows]

    def triggerer_job(self, name: str) -> int:
        """The job id of the current process of triggerer ``name``."""
        return next(job_id for component, job_id in reversed(self.triggerer_jobs) if component == name)

    def component_pids(self, name: str) -> set[int]:
        """Every pid in the process tree of component ``name`` (empty when it is not running)."""
        process = self.components[name].process
        if process is None or process.poll() is not None:
            return set()
        try:
            root = psutil.Process(process.pid)
            return {root.pid, *(child.pid for child in root.children(recursive=True))}
        except psutil.Error:
            return set()

    def exited(self) -> list[str]:
        """Components that should run and have exited."""
        return [name for name, c in self.components.items() if c.process is not None and not c.running]

    def restart_exited(self) -> list[str]:
        """Start again every component that exited by itself (what a process supervisor does)."""
        names = self.exited()
        for name in names:
            self.components[name].process = None
            self.start(name)
        return names

    def pg_dump(self) -> bytes:
        """A plain-text ``pg_dump`` of the metadata database."""
        from tests.support.services import PG_HOST, PG_PORT, PG_USER

        argv = ["pg_dump", "-h", PG_HOST, "-p", str(PG_PORT), "-U", PG_USER, self.database.name]
        return subprocess.run(argv, check=True, capture_output=True, timeout=300).stdout

    def task_counts(self, dag_id: str, run_id: str) -> dict[tuple[str, str], int]:
        """``(task_id, state) -> count`` of one run, straight from the metadata DB."""
        rows = self.database.query(
            "SELECT task_id, coalesce(state, 'none'), count(*) FROM task_instance "
            "WHERE dag_id = %s AND run_id = %s GROUP BY 1, 2",
            (dag_id, run_id),
        )
        return {(task_id, state): int(count) for task_id, state, count in rows}

    def wait_started(self, *, timeout: float = 240.0) -> None:
        """Migrate, start every component, and wait for health and two live triggerer jobs."""
        self.start_all(timeout=timeout)
        wait_until(lambda: len(self.running_triggerer_jobs()) >= 2, timeout=60, what="two triggerer jobs")


def sleep_until(deadline: float) -> None:
    time.sleep(max(0.0, deadline - time.monotonic()))


def jsonable(value: Any) -> Any:
    """Sets and tuples as lists, for the results file."""
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, set | tuple | list):
        return [jsonable(item) for item in value]
    return value
