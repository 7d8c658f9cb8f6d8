"""The example DAGs: they import cleanly, and each runs end to end with ``dag.test()`` on the emulator."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_crun.testing.emulator import CrunEmulator, changed_faces
from tests.support.connections import EXAMPLE_DAGS

pytestmark = pytest.mark.integration

EXAMPLE_DAG_IDS = [
    "example_crun_multi_face_swap",
    "example_crun_batch_face_swap",
    "example_crun_task_sensor",
    "example_crun_use_swapped_image",
]


@pytest.fixture(scope="module")
def airflow_db() -> None:
    """Migrate the throwaway metadata DB of this pytest run once."""
    airflow = Path(sys.executable).parent / "airflow"
    result = subprocess.run([str(airflow), "db", "migrate"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[CrunEmulator]:
    with CrunEmulator(detect_delays=(0.2, 0.2), task_delays=(0.3, 0.5)) as emu:
        monkeypatch.setenv("AIRFLOW_CONN_CRUN_DEFAULT", emu.connection_uri())
        monkeypatch.setenv("CRUN_EXAMPLE_MEDIA_BASE", emu.url)
        yield emu


def dag_bag() -> Any:
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 3.1
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef]
    return DagBag(dag_folder=str(EXAMPLE_DAGS))


def load_dag(dag_id: str) -> Any:
    bag = dag_bag()
    assert not bag.import_errors, bag.import_errors
    return bag.dags[dag_id]


def xcom(run: Any, task_id: str, map_index: int = -1) -> Any:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        value = session.scalar(
            XComModel.get_many(
                run_id=run.run_id,
                key="return_value",
                dag_ids=run.dag_id,
                task_ids=task_id,
                map_indexes=map_index,
            ).with_only_columns(XComModel.value)
        )
    return XComModel.deserialize_value(type("Row", (), {"value": value})())


def assert_all_succeeded(run: Any) -> None:
    states = {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}
    assert run.state == "success", states
    assert set(states.values()) == {"success"}, states


def test_every_example_dag_imports_cleanly() -> None:
    bag = dag_bag()
    assert bag.import_errors == {}
    assert sorted(bag.dag_ids) == sorted(EXAMPLE_DAG_IDS)


def missing_pools(dag: Any) -> list[str]:
    """One line per task whose pool a fresh Airflow does not have, saying how to create it."""
    from airflow.models.pool import Pool
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        existing = set(session.scalars(select(Pool.pool)))
    return [
        f"{dag.dag_id}.{task.task_id} names the pool {task.pool!r}, which does not exist, so the task "
        f"would never be scheduled: create it with `airflow pools set {task.pool} 16 'Crun jobs in "
        "flight' --include-deferred`, or leave the task in the default pool."
        for task in dag.tasks
        if task.pool not in existing
    ]


@pytest.mark.usefixtures("airflow_db")
def test_the_examples_need_no_pool_created_by_hand() -> None:
    """A task in a missing pool waits forever in silence; a fresh Airflow runs every example as is."""
    bag = dag_bag()

    assert [line for dag_id in EXAMPLE_DAG_IDS for line in missing_pools(bag.dags[dag_id])] == []


@pytest.mark.usefixtures("airflow_db")
def test_a_missing_pool_is_caught_with_how_to_create_it() -> None:
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG

    with DAG("pooled", schedule=None) as dag:
        EmptyOperator(task_id="swap", pool="crun_api")

    assert missing_pools(dag) == [
        "pooled.swap names the pool 'crun_api', which does not exist, so the task would never be "
        "scheduled: create it with `airflow pools set crun_api 16 'Crun jobs in flight' "
        "--include-deferred`, or leave the task in the default pool."
    ]


@pytest.mark.usefixtures("airflow_db")
def test_multi_face_swap(emulator: CrunEmulator, tmp_path: Path) -> None:
    image_url = emulator.input_image_url("group", faces=3)
    new_face = emulator.input_image_url("new-face", faces=1)
    run = load_dag("example_crun_multi_face_swap").test(
        run_conf={"image_url": image_url, "faces": {"1": new_face}, "output_path": tmp_path.as_uri() + "/"}
    )
    assert_all_succeeded(run)

    detection = xcom(run, "detect_faces")
    assert detection["image_url"] == image_url
    assert [face["id"] for face in detection["faces"]] == [0, 1, 2]
    swap = xcom(run, "swap_faces")
    assert swap["status"] == "success"
    assert set(swap) == {
        "crun_task_id",
        "model",
        "status",
        "media_urls",
        "credits",
        "duration_s",
        "stored_paths",
    }
    report = xcom(run, "report")
    assert (
        report["stored_paths"]
        == swap["stored_paths"]
        == [f"{tmp_path.as_uri()}/{swap['crun_task_id']}_0.png"]
    )
    assert (emulator.counts["CreateTask"], emulator.tasks_created, emulator.detections_created) == (1, 1, 1)

    # The stored image differs from the input exactly in face 1's region: the other detected faces
    # were sent with their own crop as target.
    stored = Path(swap["stored_paths"][0].removeprefix("file://"))
    assert changed_faces(emulator_get(image_url), stored.read_bytes(), faces=3) == [1]


def emulator_get(url: str) -> bytes:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()  # type: ignore[no-any-return]


@pytest.mark.usefixtures("airflow_db")
def test_batch_face_swap(emulator: CrunEmulator, tmp_path: Path) -> None:
    images = [emulator.input_image_url(f"batch-{n}", faces=2) for n in range(3)]
    new_face = emulator.input_image_url("new-face", faces=1)
    run = load_dag("example_crun_batch_face_swap").test(
        run_conf={
            "image_urls": images,
            "new_face": new_face,
            "face_id": 1,
            "output_path": tmp_path.as_uri() + "/",
        }
    )
    assert_all_succeeded(run)
    summary = xcom(run, "summarize")
    assert summary["swapped"] == 3
    assert len(summary["stored_paths"]) == 3
    assert summary["credits"] == 3 * 6
    assert (emulator.tasks_created, emulator.detections_created) == (3, 3)


@pytest.mark.usefixtures("airflow_db")
def test_task_sensor(emulator: CrunEmulator) -> None:
    image_url = emulator.input_image_url("portrait", faces=1)
    run = load_dag("example_crun_task_sensor").test(
        run_conf={"image_url": image_url, "new_face": emulator.input_image_url("new-face", faces=1)}
    )
    assert_all_succeeded(run)
    submitted = xcom(run, "submit_swap")
    assert submitted["status"] == "submitted"
    finished = xcom(run, "wait_for_swap")
    assert finished["crun_task_id"] == submitted["crun_task_id"]
    assert finished["status"] == "success"
    assert finished["media_urls"]
    assert emulator.tasks_created == 1
