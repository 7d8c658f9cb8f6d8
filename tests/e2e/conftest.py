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
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_crun.testing.emulator import EmulatorProcess
from tests.e2e.context import E2E, SEEDS, TriggerSampler
from tests.support.airflow import scenarios
from tests.support.airflow.deployment import AirflowDeployment
from tests.support.airflow.processes import exit_on_sigterm
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
# The environment


def _connection(url: str, backend: scenarios.Backend) -> str:
    return json.dumps(
        {"conn_type": "crun", "host": url, "password": backend.conn_key, "extra": dict(backend.conn_extra)}
    )


def _start_emulators(stack: ExitStack) -> dict[str, EmulatorProcess]:
    processes = {
        backend.conn_id: EmulatorProcess(
            args=backend.args, api_key=scenarios.API_KEY, seed=SEEDS[backend.conn_id]
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
        yield E2E(airflow, emulators, sampler, s3, _RESULTS)
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
