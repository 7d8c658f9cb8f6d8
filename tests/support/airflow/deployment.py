"""
A real Airflow 3 deployment for the end-to-end tests.

``airflow db migrate`` runs once; then the scheduler, triggerer, dag-processor and api-server run
as separate subprocesses sharing one temporary ``AIRFLOW_HOME`` on SQLite (the distributed suite
subclasses it for PostgreSQL and Celery). :attr:`AirflowDeployment.api` talks to the api-server.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.airflow.api import AirflowApi
from tests.support.airflow.processes import (
    VENV_BIN,
    free_port,
    process_tree_cpu,
    start_group,
    stop_group,
    tail,
    wait_until,
)

COMPONENTS = ("scheduler", "triggerer", "dag-processor", "api-server")
SQLITE_SETTINGS = "crun_e2e_sqlite"


@dataclass
class Component:
    """One Airflow component subprocess and its log file."""

    name: str
    argv: list[str]
    log_path: Path
    #: Environment of this component only, over the deployment's (e.g. its own log server port).
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class AirflowDeployment:
    """
    Airflow 3 in a temporary home: scheduler, triggerer, dag-processor and api-server.

    :param home: The ``AIRFLOW_HOME`` (created); the SQLite DB, task logs and component logs live here.
    :param dag_files: DAG files copied into the deployment's dags folder.
    :param extra_env: Extra environment for every component (connections, example settings).
    :param parallelism: ``[core] parallelism``: LocalExecutor worker processes.
    """

    home: Path
    dag_files: Sequence[Path]
    extra_env: Mapping[str, str] = field(default_factory=dict)
    parallelism: int = 8
    api_port: int = field(default_factory=free_port)
    # The log servers bind fixed ports by default, and other deployments may run on this machine.
    worker_log_port: int = field(default_factory=free_port)
    trigger_log_port: int = field(default_factory=free_port)
    # Seconds a SQLite writer waits for the lock. Python's default of 5 s is too short when the
    # scheduler, api-server, triggerer and eight task processes all write on two cores.
    sqlite_busy_timeout: float = 30.0
    fernet_key: str = field(default_factory=lambda: _new_fernet_key())
    jwt_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    components: dict[str, Component] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.dags_folder.mkdir(exist_ok=True)
        self.site_dir.mkdir(exist_ok=True)
        (self.site_dir / f"{SQLITE_SETTINGS}.py").write_text(
            '"""SQLite connect arguments of the e2e deployment (imported by [database] settings)."""\n\n'
            f"CONNECT_ARGS = {{'timeout': {self.sqlite_busy_timeout}}}\n"
            f"CONNECT_ARGS_ASYNC = {{'timeout': {self.sqlite_busy_timeout}}}\n"
        )
        for source in self.dag_files:
            (self.dags_folder / source.name).write_bytes(source.read_bytes())
        self.api = AirflowApi(self.base_url)
        for name in COMPONENTS:
            argv = [str(VENV_BIN / "airflow"), name]
            if name == "api-server":
                argv += ["--host", "127.0.0.1", "--port", str(self.api_port), "--workers", "1"]
            self.components[name] = Component(name, argv, self.component_log_dir / f"{name}.log")

    # -- paths ----------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def dags_folder(self) -> Path:
        return self.home / "dags"

    @property
    def db_path(self) -> Path:
        return self.home / "airflow.db"

    @property
    def site_dir(self) -> Path:
        """On the components' ``PYTHONPATH``: holds the SQLite settings module."""
        return self.home / "site"

    @property
    def task_log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def component_log_dir(self) -> Path:
        return self.home / "component-logs"

    # -- environment ----------------------------------------------------------------------------

    @property
    def env(self) -> dict[str, str]:
        """The environment of every component: the caller's, minus any Airflow setting, plus ours."""
        env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
        env.update(
            {
                "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.db_path}",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": f"{SQLITE_SETTINGS}.CONNECT_ARGS",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS_ASYNC": f"{SQLITE_SETTINGS}.CONNECT_ARGS_ASYNC",
                "PYTHONPATH": os.pathsep.join(
                    part for part in (str(self.site_dir), os.environ.get("PYTHONPATH", "")) if part
                ),
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
                "AIRFLOW__CORE__FERNET_KEY": self.fernet_key,
                "AIRFLOW__CORE__AUTH_MANAGER": (
                    "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
                ),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.api_port),
                "AIRFLOW__API__BASE_URL": self.base_url,
                "AIRFLOW__API_AUTH__JWT_SECRET": self.jwt_secret,
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self.worker_log_port),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(self.trigger_log_port),
                # Short loops, so a triggered run starts and a deferred task resumes within a second or two.
                "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
                "AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC": "2",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
                # Must stay on: with it off, Airflow 3.3.2 creates no asset-triggered run either
                # (apache/airflow#62929). Every DAG here but the asset-scheduled
                # example_crun_use_swapped_image has schedule=None, so nothing else starts by itself.
                "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "True",
                "AIRFLOW__SCHEDULER__MAX_TIS_PER_QUERY": "64",
                "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
                # A task supervisor may linger this long after its task deferred. Meanwhile the trigger
                # can fire and the task resume, and Airflow 3.3.2 then takes the stale exit event for
                # an external kill (apache/airflow#72716). A short interval keeps that window small.
                "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
                "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "10",
                # For tasks without their own retry_delay (the batch example): 5 s instead of 300 s, so
                # a try lost to Airflow's defer race does not idle a whole run for five minutes.
                "AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY": "5",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "120",
                "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
                "AIRFLOW__DAG_PROCESSOR__PRINT_STATS_INTERVAL": "600",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        return env

    # -- life cycle -----------------------------------------------------------------------------

    def migrate(self) -> None:
        """``airflow db migrate`` (raises with its output if it fails)."""
        log_path = self.component_log_dir / "db-migrate.log"
        process = start_group([str(VENV_BIN / "airflow"), "db", "migrate"], env=self.env, log_path=log_path)
        try:
            code = process.wait(300)
        finally:
            stop_group(process, grace=1)
        if code != 0:
            raise RuntimeError(f"airflow db migrate failed ({code}):\n{tail(log_path)}")

    def start(self, name: str) -> None:
        """Start one component (again)."""
        component = self.components[name]
        if component.running:
            raise RuntimeError(f"{name} is already running")
        env = {**self.env, **component.env}
        component.process = start_group(component.argv, env=env, log_path=component.log_path)
        component.starts += 1

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Kill one component's whole process group (SIGKILL: no cleanup, as on a crashed machine)."""
        component = self.components[name]
        if component.process is not None:
            stop_group(component.process, sig=sig)
            component.process = None

    def start_all(self, *, timeout: float = 180.0) -> None:
        """Migrate, start every component and wait until the health endpoint reports them all healthy."""
        self.migrate()
        for name in self.components:
            self.start(name)
        self.wait_healthy(timeout=timeout)

    def stop_all(self) -> None:
        """Stop every component (SIGTERM, then SIGKILL after a grace period); safe to call twice."""
        for component in reversed(self.components.values()):
            if component.process is not None:
                stop_group(component.process, grace=10)
                component.process = None
        self.api.close()

    def wait_healthy(
        self, *, timeout: float, components: Iterable[str] = ("scheduler", "triggerer", "dag_processor")
    ) -> None:
        """Wait until ``/monitor/health`` reports the metadata DB and ``components`` healthy."""
        wanted = ("metadatabase", *components)

        def healthy() -> bool:
            self.check_alive()
            health = self.api.health()
            return health is not None and all(
                (health.get(part) or {}).get("status") == "healthy" for part in wanted
            )

        wait_until(healthy, timeout=timeout, interval=1.0, what=f"Airflow health of {wanted}")

    def check_alive(self) -> None:
        """Raise with the log tail of any component that exited although it should be running."""
        for component in self.components.values():
            if component.process is not None and component.process.poll() is not None:
                raise RuntimeError(
                    f"airflow {component.name} exited with {component.process.returncode}:\n"
                    f"{tail(component.log_path)}"
                )

    def wait_for_dags(self, dag_ids: Iterable[str], *, timeout: float = 180.0) -> None:
        """Wait until the dag-processor has parsed every DAG; fail at once on an import error."""
        missing = set(dag_ids)

        def parsed() -> bool:
            self.check_alive()
            errors = self.api.import_errors()
            if errors:
                raise RuntimeError(f"DAG import errors: {json.dumps(errors, indent=1)[:4000]}")
            for dag_id in sorted(missing):
                if self.api.dag_exists(dag_id):
                    missing.discard(dag_id)
            return not missing

        try:
            wait_until(parsed, timeout=timeout, interval=1.0, what="the DAGs to be parsed")
        except TimeoutError as error:
            raise TimeoutError(f"{error}; not parsed: {sorted(missing)}") from None

    # -- diagnostics ----------------------------------------------------------------------------

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds used so far by each running component's process tree (exited children included)."""
        return {
            name: process_tree_cpu(component.process.pid)
            for name, component in self.components.items()
            if component.process is not None and component.running
        }

    def component_logs(self) -> dict[str, str]:
        """Every component log's full text, by file name."""
        return {
            path.name: path.read_text(errors="replace")
            for path in sorted(self.component_log_dir.glob("*.log"))
        }

    def describe_run(self, dag_id: str, run_id: str) -> str:
        """Task states and the failed tries' log tails of a run, for an assertion message."""
        lines = [f"run {dag_id}/{run_id}:"]
        try:
            tis = self.api.task_instances(dag_id, run_id)
        except Exception as error:  # diagnostics must never hide the original failure
            return f"{lines[0]} <cannot list task instances: {error}>"
        for ti in tis:
            lines.append(f"  {ti['task_id']}[{ti['map_index']}] {ti['state']} try={ti['try_number']}")
        shown = 0
        for ti in tis:
            if ti["state"] in ("success", "upstream_failed", "skipped") or shown >= 3:
                continue
            shown += 1
            for try_number in range(1, max(1, ti["try_number"]) + 1):
                log = self.api.task_log(dag_id, run_id, ti["task_id"], try_number, ti["map_index"])
                lines.append(f"  --- log {ti['task_id']}[{ti['map_index']}] try {try_number} (tail) ---")
                lines.extend("    " + line for line in log.splitlines()[-25:])
        if shown == 0 and all(ti["state"] == "success" for ti in tis):
            return "\n".join(lines)
        # The scheduler and every triggerer (a distributed cluster names them triggerer-1, -2, ...).
        for name in [name for name in self.components if name == "scheduler" or name.startswith("triggerer")]:
            lines.append(f"  --- {name} log (tail) ---")
            lines.extend("    " + line for line in tail(self.components[name].log_path, 20).splitlines())
        return "\n".join(lines)


def _new_fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()
