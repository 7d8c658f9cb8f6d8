"""
Fixtures of the end-to-end suite: the emulators, a real Airflow 3, and the figures.

One Airflow deployment serves every end-to-end test; it starts on first use, so ``pytest -m "not
e2e"`` never pays for it. Scenario figures are printed at the end of the session and written to
``.e2e-results/last_results.json`` at the repository root (not tracked), or to the path in the
``CRUN_E2E_RESULTS`` environment variable.

Results are stored in S3: moto's server on loopback (:mod:`tests.support.s3`), which every
component reaches through the ``aws`` connection :data:`S3_CONN_ID`.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from airflow_provider_crun.testing.emulator import EmulatorProcess
from tests.e2e import scenarios
from tests.e2e.harness import AirflowDeployment, exit_on_sigterm
from tests.support.s3 import OFFLINE_AWS_ENV, MotoS3, aws_connection_json, moto_s3_server

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
RESULTS_ENV = "CRUN_E2E_RESULTS"
DEFAULT_RESULTS_FILE = REPO / ".e2e-results" / "last_results.json"
MANIFEST_NAME = "e2e_dags.json"
# The secret audit makes its own activity, and also audits what the other scenarios left: last.
RUN_LAST = ("test_secret_audit.py",)
#: The ``aws`` connection of every component, to the suite's moto S3 server.
S3_CONN_ID = "aws_e2e"

_RESULTS: dict[str, Any] = {}
_SESSION: dict[str, float] = {}


def results_file() -> Path:
    """Where the figures go: ``$CRUN_E2E_RESULTS``, else ``.e2e-results/last_results.json``."""
    configured = os.environ.get(RESULTS_ENV, "").strip()
    return Path(configured).expanduser() if configured else DEFAULT_RESULTS_FILE


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Move the secret audit after every other end-to-end test, keeping the suite's tests together."""
    positions = [index for index, item in enumerate(items) if HERE in item.path.parents]
    ordered = sorted((items[index] for index in positions), key=lambda item: item.path.name in RUN_LAST)
    for index, item in zip(positions, ordered, strict=True):
        items[index] = item


# ---------------------------------------------------------------------------------------------
# Trigger kwargs, sampled while the triggers exist


class TriggerSampler:
    """
    Read the ``trigger`` table twice a second and keep every row ever seen, decrypted.

    Airflow deletes a trigger row soon after its task resumes, so the secret audit and the
    restart scenario need this history rather than a look at the end.

    :param db_path: The deployment's SQLite file.
    :param fernet_key: The key the deployment encrypts trigger kwargs with.
    """

    def __init__(self, db_path: Path, fernet_key: str) -> None:
        from cryptography.fernet import Fernet

        self.db_path = db_path
        self.fernet = Fernet(fernet_key.encode())
        self.rows: dict[tuple[int, str], dict[str, Any]] = {}
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="e2e-trigger-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def decrypt(self, stored: str) -> str:
        """The JSON text of stored kwargs (plain JSON, or a Fernet token)."""
        return stored if stored.startswith("{") else self.fernet.decrypt(stored.encode()).decode()

    def sample(self) -> None:
        """Read the table once."""
        try:
            db = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=2)
            try:
                rows = db.execute("SELECT id, classpath, kwargs, triggerer_id FROM trigger").fetchall()
            finally:
                db.close()
        except sqlite3.Error as error:
            self.errors.append(f"{type(error).__name__}: {error}")
            return
        with self._lock:
            for trigger_id, classpath, kwargs, triggerer_id in rows:
                # SQLite reuses the id of a deleted row, so the id alone does not name a trigger.
                key = (trigger_id, kwargs)
                if key not in self.rows:
                    self.rows[key] = {
                        "classpath": classpath,
                        "kwargs": self.decrypt(kwargs),
                        "triggerers": set(),
                    }
                if triggerer_id is not None:
                    self.rows[key]["triggerers"].add(triggerer_id)

    def snapshot(self) -> list[dict[str, Any]]:
        """Every trigger seen: ``classpath``, decrypted ``kwargs`` (JSON text), ``triggerers`` (job ids)."""
        with self._lock:
            return [{**value, "triggerers": set(value["triggerers"])} for value in self.rows.values()]

    def for_job(self, job_id: str, conn_id: str) -> list[dict[str, Any]]:
        """Every trigger whose kwargs name ``job_id`` on the connection ``conn_id``."""
        return [
            row
            for row in self.snapshot()
            if f'"{job_id}"' in row["kwargs"] and f'"crun_conn_id": "{conn_id}"' in row["kwargs"]
        ]

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            try:
                self.sample()
            except Exception as error:  # keep sampling; the audit reports what went wrong
                self.errors.append(f"{type(error).__name__}: {error}")


# ---------------------------------------------------------------------------------------------
# The environment


@dataclass
class E2E:
    """Everything a scenario needs: the deployment, the emulators by connection id, S3, the figures."""

    airflow: AirflowDeployment
    emulators: dict[str, EmulatorProcess]
    triggers: TriggerSampler
    s3: MotoS3
    results: dict[str, Any] = field(default_factory=lambda: _RESULTS)

    @property
    def api(self) -> Any:
        return self.airflow.api

    def emulator(self, conn_id: str) -> EmulatorProcess:
        return self.emulators[conn_id]

    @contextlib.contextmanager
    def emulator_with(self, conn_id: str, *extra_args: str) -> Iterator[EmulatorProcess]:
        """
        Run the emulator behind ``conn_id`` with ``extra_args`` for a while, on the same port.

        The connections are environment variables of the Airflow components, fixed at start, and
        the emulator cannot change its task delays live; so the process is replaced by one with
        the extra arguments, and by one like the original afterwards (fresh state, same seed).
        Nothing else may use the backend meanwhile.
        """
        backend = next(backend for backend in scenarios.BACKENDS if backend.conn_id == conn_id)
        original = self.emulators[conn_id]
        port = urlsplit(original.url).port
        assert port is not None, original.url

        def replace(args: tuple[str, ...], seed: int | None) -> EmulatorProcess:
            self.emulators[conn_id].stop()
            process = EmulatorProcess(port=port, args=args, api_key=scenarios.API_KEY, seed=seed)
            atexit.register(process.stop)
            self.emulators[conn_id] = process.start()
            return process

        try:
            # No seed: its ids must not repeat the ones the original handed out this session.
            yield replace((*backend.args, *extra_args), None)
        finally:
            replace(backend.args, _SEEDS[conn_id])

    def media_url(self, conn_id: str, name: str, faces: int) -> str:
        """An input image URL on the emulator behind ``conn_id``."""
        return f"{self.emulators[conn_id].url}/media/input/{name}.png?faces={faces}"

    def record(self, scenario: str, **figures: Any) -> None:
        """Keep one scenario's figures for the results file."""
        self.results.setdefault("scenarios", {})[scenario] = figures


def _connection(url: str, backend: scenarios.Backend) -> str:
    return json.dumps(
        {"conn_type": "crun", "host": url, "password": backend.conn_key, "extra": dict(backend.conn_extra)}
    )


# A seed per emulator: task ids then differ between emulators, as they would on one Crun.
_SEEDS = {backend.conn_id: seed for seed, backend in enumerate(scenarios.BACKENDS, start=1)}


def _start_emulators(stack: ExitStack) -> dict[str, EmulatorProcess]:
    processes = {
        backend.conn_id: EmulatorProcess(
            args=backend.args, api_key=scenarios.API_KEY, seed=_SEEDS[backend.conn_id]
        )
        for backend in scenarios.BACKENDS
    }
    # The current process of each backend, also one that replaced the original (E2E.emulator_with).
    stack.callback(lambda: [process.stop() for process in processes.values()])
    for process in processes.values():
        atexit.register(process.stop)  # backstop if the session dies before the stack unwinds
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda process: process.start(), processes.values()))
    return processes


def _component_env(emulators: Mapping[str, EmulatorProcess], s3: MotoS3) -> dict[str, str]:
    env = {
        f"AIRFLOW_CONN_{backend.conn_id.upper()}": _connection(emulators[backend.conn_id].url, backend)
        for backend in scenarios.BACKENDS
    }
    # Results go to the moto S3 server; botocore must never look past it for credentials.
    env[f"AIRFLOW_CONN_{s3.conn_id.upper()}"] = aws_connection_json(s3.endpoint_url)
    env.update(OFFLINE_AWS_ENV)
    # The example DAGs build their default image URLs from this.
    env["CRUN_EXAMPLE_MEDIA_BASE"] = emulators[scenarios.DEFAULT.conn_id].url
    # Below the example's default of 16, so the load batch reaches its bound on jobs in flight.
    env["CRUN_EXAMPLE_CONCURRENCY"] = str(scenarios.BATCH_CONCURRENCY)
    return env


@pytest.fixture(scope="package")
def e2e(request: pytest.FixtureRequest) -> Iterator[E2E]:
    """
    Start the emulators and Airflow once for this package; stop every process after its last test.

    Package scope, not session scope: a plain ``pytest`` run goes on with the other suites, which
    need neither the deployment nor the CPU it would keep using.
    """
    started = time.monotonic()
    with ExitStack() as stack:
        stack.callback(exit_on_sigterm())
        emulators = _start_emulators(stack)
        s3 = stack.enter_context(moto_s3_server(S3_CONN_ID))
        home = Path(tempfile.mkdtemp(prefix="crun-e2e-airflow-"))
        dag_files = [*sorted((REPO / "example_dags").glob("*.py")), *sorted((HERE / "dags").glob("*.py"))]
        airflow = AirflowDeployment(home=home, dag_files=dag_files, extra_env=_component_env(emulators, s3))
        manifest = [dag.manifest_entry() for dag in scenarios.SWAP_DAGS]
        (airflow.dags_folder / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1))
        stack.callback(airflow.stop_all)
        try:
            airflow.start_all()
            airflow.wait_for_dags([*scenarios.EXAMPLE_DAGS, *(dag.dag_id for dag in scenarios.SWAP_DAGS)])
        except BaseException:
            for name, text in airflow.component_logs().items():
                print(f"----- {name} (tail) -----\n" + "\n".join(text.splitlines()[-40:]))
            raise
        sampler = TriggerSampler(airflow.db_path, airflow.fernet_key)
        sampler.start()
        stack.callback(sampler.stop)
        _SESSION["setup_s"] = round(time.monotonic() - started, 1)
        _SESSION["started"] = started
        print(f"\nAirflow home: {home} (component logs in {airflow.component_log_dir})")
        failures_before = request.session.testsfailed
        yield E2E(airflow, emulators, sampler, s3)
    _SESSION["total_s"] = round(time.monotonic() - started, 1)
    # Kept for a look at the logs when something failed, or when CRUN_E2E_KEEP_HOME is set.
    if request.session.testsfailed == failures_before and not os.environ.get("CRUN_E2E_KEEP_HOME"):
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def describe(e2e: E2E) -> Any:
    """``describe(dag_id, run_id)``: task states and failed logs, for assertion messages."""
    return e2e.airflow.describe_run


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Write the figures (only when e2e scenarios ran), with whether the session passed."""
    if not _RESULTS or "started" not in _SESSION:
        return
    _RESULTS["suite"] = {
        "pytest_exit_status": int(exitstatus),
        "tests_failed": session.testsfailed,
        "setup_s": _SESSION["setup_s"],
        # From the first end-to-end test's setup to the last one's teardown (every process stopped).
        "total_s": _SESSION.get("total_s", round(time.monotonic() - _SESSION["started"], 1)),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    path = results_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_RESULTS, indent=2, sort_keys=True, default=str) + "\n")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the figures of every scenario that ran."""
    if not _RESULTS.get("scenarios"):
        return
    terminalreporter.section("crun e2e figures")
    for name, figures in _RESULTS["scenarios"].items():
        terminalreporter.write_line(f"{name}: {json.dumps(figures, default=str)}")
    if "suite" in _RESULTS:
        terminalreporter.write_line(f"suite: {json.dumps(_RESULTS['suite'])}")
    terminalreporter.write_line(f"(written to {results_file()})")
