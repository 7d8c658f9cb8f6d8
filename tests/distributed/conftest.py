"""
Fixtures of the distributed suite: a production-shaped Airflow, one batch run with kills, figures.

The suite needs PostgreSQL and Redis on loopback and the ``distributed`` extra. Without them its
tests are skipped with one line saying what is missing and how to start it, unless
``$CRUN_REQUIRE_DISTRIBUTED`` is set (CI sets it): then they fail. Figures are printed at the end
of the session and written to ``.e2e-results/distributed_results.json`` (or ``$CRUN_DIST_RESULTS``).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_crun.testing.emulator import EmulatorProcess
from tests.distributed import settings
from tests.distributed.chaos import BATCH_DAG, SLOW_DAG, Chaos, run_batch_with_chaos
from tests.distributed.cluster import CeleryDeployment
from tests.distributed.context import Dist
from tests.distributed.monitor import Monitor
from tests.support.airflow.processes import exit_on_sigterm
from tests.support.airflow.scenarios import API_KEY
from tests.support.s3 import OFFLINE_AWS_ENV, aws_connection_json, moto_s3_server
from tests.support.services import ScratchDatabase, ScratchRedis, missing_packages, missing_services

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
RUN_LAST = "test_secret_audit_stores.py"
_RESULTS: dict[str, Any] = {}
_SKIPPED: list[str] = []


def results_file() -> Path:
    configured = os.environ.get(settings.RESULTS_ENV, "").strip()
    return Path(configured) if configured else REPO / ".e2e-results" / "distributed_results.json"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip (or, under ``$CRUN_REQUIRE_DISTRIBUTED``, fail) the suite when a service is missing."""
    ours = [item for item in items if HERE in item.path.parents]
    if not ours:
        return
    positions = [items.index(item) for item in ours]
    for index, item in zip(positions, sorted(ours, key=lambda i: i.path.name == RUN_LAST), strict=True):
        items[index] = item
    missing = missing_packages() or missing_services()
    if missing is None:
        return
    reason = f"distributed suite: missing {missing}"
    if settings.required():
        raise pytest.UsageError(f"{reason}, and ${settings.REQUIRE_ENV} is set")
    _SKIPPED.append(reason)
    for item in ours:
        item.add_marker(pytest.mark.skip(reason=reason))


def _emulator(args: tuple[str, ...], seed: int) -> EmulatorProcess:
    process = EmulatorProcess(args=args, api_key=API_KEY, seed=seed)
    atexit.register(process.stop)
    return process.start()


def _connection(url: str) -> str:
    return json.dumps({"conn_type": "crun", "host": url, "password": API_KEY, "extra": {"max_retries": 4}})


@pytest.fixture(scope="package")
def dist(request: pytest.FixtureRequest) -> Iterator[Dist]:
    """Start PostgreSQL's database, Redis' DB, S3, the emulators and Airflow; remove them all after."""
    started = time.monotonic()
    with ExitStack() as stack:
        stack.callback(exit_on_sigterm())
        broker = ScratchRedis.claim()
        stack.callback(broker.flush)
        database = ScratchDatabase().create()
        atexit.register(database.drop)
        stack.callback(database.drop)
        s3 = stack.enter_context(moto_s3_server())
        bucket = s3.create_bucket()
        emulators = {settings.MAIN_CONN: _emulator(settings.MAIN_ARGS, 1)}
        emulators[settings.SLOW_CONN] = _emulator(settings.SLOW_ARGS, 2)
        for process in emulators.values():
            stack.callback(process.stop)
        env = {f"AIRFLOW_CONN_{conn.upper()}": _connection(e.url) for conn, e in emulators.items()}
        env |= {f"AIRFLOW_CONN_{s3.conn_id.upper()}": aws_connection_json(s3.endpoint_url), **OFFLINE_AWS_ENV}
        env |= {"CRUN_EXAMPLE_MEDIA_BASE": emulators[settings.MAIN_CONN].url}
        env |= {"CRUN_EXAMPLE_CONCURRENCY": str(settings.BATCH_CONCURRENCY)}
        env |= {"CRUN_DIST_SLOW_CONN": settings.SLOW_CONN}
        home = Path(tempfile.mkdtemp(prefix="crun-dist-airflow-"))
        dag_files = [REPO / "example_dags" / f"{BATCH_DAG}.py", HERE / "dags" / f"{SLOW_DAG}.py"]
        cluster = CeleryDeployment(
            home=home, dag_files=dag_files, extra_env=env, parallelism=12, database=database, broker=broker
        )
        stack.callback(cluster.stop_all)
        try:
            cluster.wait_started()
            cluster.wait_for_dags([BATCH_DAG, SLOW_DAG])
        except BaseException:
            for name, text in cluster.component_logs().items():
                print(f"----- {name} (tail) -----\n" + "\n".join(text.splitlines()[-40:]))
            raise
        monitor = Monitor(database, broker, cluster.fernet_key, API_KEY).start()
        stack.callback(monitor.stop)
        _RESULTS["setup_s"] = round(time.monotonic() - started, 1)
        print(f"\nAirflow home: {home}; database {database.name}; broker {broker.url}")
        failures_before = request.session.testsfailed
        yield Dist(cluster, emulators, s3, bucket, monitor, settings.batch_images(), _RESULTS)
    _RESULTS["total_s"] = round(time.monotonic() - started, 1)
    if request.session.testsfailed == failures_before and not os.environ.get("CRUN_E2E_KEEP_HOME"):
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="package")
def chaos(dist: Dist) -> Chaos:
    """The batch run, with a triggerer, a worker and PostgreSQL failing under it (once per session)."""
    main = dist.emulators[settings.MAIN_CONN]
    base = main.url
    main.set_faults(settings.FAULTS)
    batch_conf = {
        "image_urls": [f"{base}/media/input/dist-{n:04d}.png?faces=2" for n in range(dist.images)],
        "new_face": f"{base}/media/input/new-face.png?faces=1",
        "face_id": 0,
        "output_path": dist.output_path("batch"),
    }
    slow = dist.emulators[settings.SLOW_CONN].url
    slow_conf = {
        "image_urls": [f"{slow}/media/input/slow-{n}.png?faces=2" for n in range(settings.SLOW_IMAGES)],
        "new_face": f"{slow}/media/input/new-face.png?faces=1",
        "output_path": dist.output_path("slow"),
    }
    cpu_before = dist.cluster.cpu_seconds()
    try:
        outcome = run_batch_with_chaos(dist.cluster, dist.monitor, batch_conf, slow_conf)
    finally:
        main.set_faults(())
    cpu_after = dist.cluster.cpu_seconds()
    _RESULTS["cpu_s_by_component"] = {
        name: round(used - cpu_before.get(name, 0.0), 1) for name, used in cpu_after.items()
    }
    return outcome


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _RESULTS.get("scenarios"):
        return
    _RESULTS["pytest_exit_status"] = int(exitstatus)
    _RESULTS["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    path = results_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_RESULTS, indent=2, sort_keys=True, default=str) + "\n")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for reason in _SKIPPED:
        terminalreporter.write_line(f"SKIPPED {reason}")
    if not _RESULTS.get("scenarios"):
        return
    terminalreporter.section("crun distributed figures")
    for name, figures in _RESULTS["scenarios"].items():
        terminalreporter.write_line(f"{name}: {json.dumps(figures, default=str)}")
    extra = {key: value for key, value in _RESULTS.items() if key != "scenarios"}
    terminalreporter.write_line(f"suite: {json.dumps(extra, default=str)}")
    terminalreporter.write_line(f"(written to {results_file()})")
