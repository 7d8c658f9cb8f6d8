"""
A real Airflow 3 deployment for the end-to-end tests.

``airflow db migrate`` runs once; then the scheduler, triggerer, dag-processor and api-server run
as separate subprocesses sharing one temporary ``AIRFLOW_HOME`` on SQLite. Every component runs
in its own process group, so it can be killed with everything it spawned (LocalExecutor workers,
trigger runners, uvicorn), and an ``atexit`` hook kills whatever a crashed test session left
behind. :class:`AirflowApi` talks to the api-server's public REST API (``/api/v2``).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil
import requests

COMPONENTS = ("scheduler", "triggerer", "dag-processor", "api-server")
FINISHED_RUN_STATES = frozenset({"success", "failed"})
VENV_BIN = Path(sys.executable).parent
SQLITE_SETTINGS = "crun_e2e_sqlite"

T = TypeVar("T")

# Every process group this module started and has not reaped yet: the atexit backstop.
_LIVE_GROUPS: dict[int, subprocess.Popen[bytes]] = {}


def _kill_leftovers() -> None:
    for pgid in list(_LIVE_GROUPS):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        _LIVE_GROUPS.pop(pgid, None)


atexit.register(_kill_leftovers)


def exit_on_sigterm() -> Callable[[], None]:
    """
    Turn SIGTERM into ``SystemExit`` so finalizers and ``atexit`` still stop every component.

    Python's default SIGTERM handling exits without either. Returns the function that restores
    the previous handler.
    """
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, previous)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    predicate: Callable[[], T], *, timeout: float, interval: float = 0.5, what: str = "condition"
) -> T:
    """
    Call ``predicate`` until it returns something truthy, and return that.

    :raises TimeoutError: naming ``what`` when ``timeout`` seconds pass first.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def start_group(argv: Sequence[str], *, env: Mapping[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a new process group (session), stdout and stderr appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        log.write(f"\n===== {time.strftime('%H:%M:%S')} starting {' '.join(argv)}\n".encode())
        log.flush()
        process = subprocess.Popen(
            list(argv),
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    _LIVE_GROUPS[process.pid] = process
    return process


def stop_group(process: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM, grace: float = 15.0) -> None:
    """
    Signal the whole process group of ``process``; SIGKILL the group after ``grace`` seconds.

    The group is SIGKILLed at the end in any case, so no grandchild survives its parent.
    """
    pgid = process.pid
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
    if sig != signal.SIGKILL:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(10)
    _LIVE_GROUPS.pop(pgid, None)


def tail(path: Path, lines: int = 60) -> str:
    """The last ``lines`` lines of a text file, or a note that it is missing."""
    if not path.exists():
        return f"<{path} does not exist>"
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def process_tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its descendants, counting the ones they already reaped."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
    return round(total, 1)


def task_process(ti_id: str) -> psutil.Process | None:
    """
    The process running the task instance ``ti_id``, or ``None`` when there is none.

    In Airflow 3 the LocalExecutor worker supervises a forked child that runs the task; the child
    titles itself ``airflow worker -- <task instance id>``.
    """
    title = f"airflow worker -- {ti_id}"
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if cmdline.strip() == title:
            return process
    return None


# ---------------------------------------------------------------------------------------------
# REST API client


class AirflowApi:
    """
    A small client for the api-server's public REST API.

    The deployment runs the SimpleAuthManager with ``simple_auth_manager_all_admins``. Airflow
    3.3 then treats every request as an admin's; 3.1 still wants a token, which that mode hands
    out without credentials (``GET /auth/token``), so a 401 fetches one and sends the request again.

    :param base_url: ``http://127.0.0.1:<port>``.
    """

    PAGE = 100
    ATTEMPTS = 4

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        self.session.trust_env = False  # never a proxy: the tests talk only to 127.0.0.1
        self.session.hooks["response"].append(self._authorize_on_401)

    def _authorize_on_401(self, response: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
        if response.status_code != 401 or "Authorization" in response.request.headers:
            return response
        with requests.Session() as plain:
            plain.trust_env = False
            token = plain.get(f"{self.base_url}/auth/token", timeout=10).json()["access_token"]
        self.session.headers["Authorization"] = f"Bearer {token}"
        again = response.request.copy()
        again.headers["Authorization"] = f"Bearer {token}"
        return self.session.send(again, timeout=kwargs.get("timeout"))

    def close(self) -> None:
        self.session.close()

    def request(
        self, method: str, path: str, *, ok: Iterable[int] = (200,), idempotent: bool = False, **kwargs: Any
    ) -> Any:
        """
        Send a request to ``/api/v2`` + ``path``; return the JSON body of an ``ok`` status.

        A GET, or a request the caller calls ``idempotent``, is sent again after a 5xx (on SQLite a
        busy moment surfaces as "database is locked", which the api-server answers with HTTP 500)
        or after a timeout or a broken connection (an api-server starved of CPU by a loaded machine).
        """
        kwargs.setdefault("timeout", 30)
        attempts = self.ATTEMPTS if method == "GET" or idempotent else 1
        for attempt in range(1, attempts + 1):
            try:
                response = self.session.request(method, f"{self.base_url}/api/v2{path}", **kwargs)
            except (requests.Timeout, requests.ConnectionError):
                if attempt == attempts:
                    raise
                time.sleep(attempt)
                continue
            if response.status_code < 500 or attempt == attempts:
                break
            time.sleep(attempt)
        if response.status_code not in set(ok):
            raise AssertionError(f"{method} {path} -> HTTP {response.status_code}: {response.text[:2000]}")
        return response.json() if response.content else None

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params or None)

    # -- health and DAGs ------------------------------------------------------------------------

    def health(self) -> dict[str, Any] | None:
        """``/api/v2/monitor/health``, or ``None`` while the api-server is not answering."""
        try:
            response = self.session.get(f"{self.base_url}/api/v2/monitor/health", timeout=5)
        except requests.RequestException:
            return None
        return response.json() if response.status_code == 200 else None

    def dag_exists(self, dag_id: str) -> bool:
        response = self.session.get(f"{self.base_url}/api/v2/dags/{dag_id}", timeout=10)
        return response.status_code == 200

    def import_errors(self) -> list[dict[str, Any]]:
        return list(self.get("/importErrors", limit=self.PAGE)["import_errors"])

    # -- runs -----------------------------------------------------------------------------------

    def trigger(
        self, dag_id: str, conf: Mapping[str, Any] | None = None, *, run_id: str | None = None
    ) -> str:
        """
        Start a manual run of ``dag_id`` with ``conf``; return its run id.

        The run id is chosen here, so sending the request again after a 5xx is safe: a run that was
        created after all answers 409, which counts as created.
        """
        run_id = run_id or f"e2e__{time.strftime('%Y%m%dT%H%M%S')}_{secrets.token_hex(4)}"
        body: dict[str, Any] = {"logical_date": None, "conf": dict(conf or {}), "dag_run_id": run_id}
        self.request("POST", f"/dags/{dag_id}/dagRuns", ok=(200, 201, 409), idempotent=True, json=body)
        return run_id

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(self.get(f"/dags/{dag_id}/dagRuns/{run_id}"))

    def runs(self, dag_id: str, **filters: Any) -> list[dict[str, Any]]:
        """The runs of ``dag_id`` matching ``filters`` (e.g. ``run_type="asset_triggered"``), oldest first."""
        page = self.get(f"/dags/{dag_id}/dagRuns", limit=self.PAGE, order_by="id", **filters)
        return list(page["dag_runs"])

    def wait_for_run(self, dag_id: str, run_id: str, *, timeout: float) -> dict[str, Any]:
        """Poll the run until it succeeds or fails; return it."""
        return wait_until(
            lambda: (run := self.run(dag_id, run_id))["state"] in FINISHED_RUN_STATES and run,
            timeout=timeout,
            interval=1.0,
            what=f"run {dag_id}/{run_id} to finish",
        )

    def wait_for_runs(
        self, runs: Sequence[tuple[str, str]], *, timeout: float
    ) -> dict[tuple[str, str], dict[str, Any]]:
        """Wait for several runs; one poll round per second for all of them."""
        done: dict[tuple[str, str], dict[str, Any]] = {}

        def all_finished() -> bool:
            for key in runs:
                if key not in done:
                    run = self.run(*key)
                    if run["state"] in FINISHED_RUN_STATES:
                        done[key] = run
            return len(done) == len(runs)

        try:
            wait_until(all_finished, timeout=timeout, interval=1.0, what=f"{len(runs)} runs to finish")
        except TimeoutError as error:
            pending = [f"{dag_id}/{run_id}" for dag_id, run_id in runs if (dag_id, run_id) not in done]
            raise TimeoutError(f"{error}; still running: {pending}") from None
        return done

    # -- task instances, XCom, logs ---------------------------------------------------------------

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Every task instance of a run (mapped ones included), across pages."""
        items: list[dict[str, Any]] = []
        while True:
            page = self.get(
                f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances",
                limit=self.PAGE,
                offset=len(items),
                order_by="map_index",
            )
            items.extend(page["task_instances"])
            if len(items) >= page["total_entries"] or not page["task_instances"]:
                return items

    def task_instance(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[str, Any]:
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"
        if map_index >= 0:
            path += f"/{map_index}"
        return dict(self.get(path))

    def xcom(
        self, dag_id: str, run_id: str, task_id: str, map_index: int = -1, key: str = "return_value"
    ) -> Any:
        """An XCom value as stored (Airflow 3 keeps JSON-serializable values as JSON)."""
        entry = self.get(
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}", map_index=map_index
        )
        value = entry["value"]
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return json.loads(value)
        return value

    def set_xcom(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        value: Any,
        map_index: int = -1,
        key: str = "return_value",
    ) -> Any:
        """Replace an existing XCom's value (``PATCH .../xcomEntries/{key}``); return the stored entry."""
        return self.request(
            "PATCH",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}",
            idempotent=True,
            json={"value": value, "map_index": map_index},
        )

    def event_logs(self, **filters: Any) -> list[dict[str, Any]]:
        """Audit log entries (``/eventLogs``) matching ``filters``, e.g. ``event="state mismatch"``."""
        return list(self.get("/eventLogs", limit=self.PAGE, **filters)["event_logs"])

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1) -> str:
        """The log of one try, as text (one line per structured log record), or why there is none."""
        try:
            response = self.session.get(
                f"{self.base_url}/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
                params={"map_index": map_index, "full_content": True},
                headers={"Accept": "application/json"},
                timeout=30,
            )
        except (requests.Timeout, requests.ConnectionError):
            return "<log unavailable: the api-server did not answer>"
        if response.status_code != 200:
            return f"<log unavailable: HTTP {response.status_code} {response.text[:300]}>"
        content = response.json().get("content")
        if isinstance(content, list):
            return "\n".join(
                json.dumps(record, default=str) if not isinstance(record, str) else record
                for record in content
            )
        return str(content)


# ---------------------------------------------------------------------------------------------
# The deployment


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
