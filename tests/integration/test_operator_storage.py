"""
The multi-face-swap example DAG storing its result in S3: moto's server, s3fs, an Airflow ``aws`` connection.

``dag.test()`` runs the DAG against the emulator with ``output_path="s3://<conn_id>@<bucket>/crun/"``;
then the bucket is listed, the swap is run again in the same DAG run (the next try of the same
task instance, which reattaches to the Crun task it stored), and the asset event Airflow recorded
in the metadata DB is read back.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_crun.testing.emulator import CrunEmulator
from tests.support.connections import EXAMPLE_DAGS
from tests.support.s3 import MotoS3, moto_s3_fixture  # noqa: F401
from tests.support.versions import DURABLE_EXECUTION

pytestmark = pytest.mark.integration

DAG_ID = "example_crun_multi_face_swap"
SWAP = "swap_faces"
MULTI = "image-face-swap-multi"


@pytest.fixture(scope="module")
def airflow_db() -> None:
    """Migrate the throwaway metadata DB of this pytest run (idempotent)."""
    airflow = Path(sys.executable).parent / "airflow"
    result = subprocess.run([str(airflow), "db", "migrate"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[CrunEmulator]:
    with CrunEmulator(detect_delays=(0.2, 0.2), task_delays=(0.3, 0.5)) as emu:
        monkeypatch.setenv("AIRFLOW_CONN_CRUN_DEFAULT", emu.connection_uri())
        monkeypatch.setenv("CRUN_EXAMPLE_MEDIA_BASE", emu.url)
        yield emu


def load_dag(dag_id: str) -> Any:
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 3.1
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef]

    bag = DagBag(dag_folder=str(EXAMPLE_DAGS))
    assert not bag.import_errors, bag.import_errors
    return bag.dags[dag_id]


def xcom(run_id: str, task_id: str) -> Any:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        value = session.scalar(
            XComModel.get_many(run_id=run_id, key="return_value", dag_ids=DAG_ID, task_ids=task_id)
            .with_only_columns(XComModel.value)
            .order_by(None)
        )
    return XComModel.deserialize_value(type("Row", (), {"value": value})())


def swap_events(run_id: str) -> list[dict[str, Any]]:
    """The asset events the swap task recorded in this run, oldest first."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(AssetModel.name, AssetModel.uri, AssetEvent.source_task_id, AssetEvent.extra)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetEvent.source_dag_id == DAG_ID, AssetEvent.source_run_id == run_id)
            .order_by(AssetEvent.id)
        ).all()
    return [{"asset": (name, uri), "task": task, "extra": extra} for name, uri, task, extra in rows]


def run_swap_again(run_id: str) -> str:
    """
    The next try of the swap task instance in the same DAG run, as ``dag.test()`` runs a task.

    The DAG run, its ``task_state_store`` (the stored Crun task) and the detection's XCom stay.
    """
    from airflow.models.taskinstance import TaskInstance
    from airflow.sdk.definitions.dag import _run_task
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import select

    with create_session() as session:
        ti = session.scalar(
            select(TaskInstance).where(
                TaskInstance.dag_id == DAG_ID, TaskInstance.run_id == run_id, TaskInstance.task_id == SWAP
            )
        )
        assert ti is not None
        ti.try_number += 1
        ti.state = TaskInstanceState.SCHEDULED
        session.commit()
        session.refresh(ti)
        session.expunge(ti)
    _run_task(ti=ti, task=load_dag(DAG_ID).task_dict[SWAP], run_triggerer=True)
    with create_session() as session:
        state = session.scalar(
            select(TaskInstance.state).where(
                TaskInstance.dag_id == DAG_ID, TaskInstance.run_id == run_id, TaskInstance.task_id == SWAP
            )
        )
    return str(state)


@pytest.mark.usefixtures("airflow_db")
def test_the_swap_stores_one_object_and_its_retry_stores_no_second(
    emulator: CrunEmulator, moto_s3: MotoS3
) -> None:
    bucket = moto_s3.create_bucket()
    image_url = emulator.input_image_url("group", faces=3)
    new_face = emulator.input_image_url("new-face", faces=1)

    run = load_dag(DAG_ID).test(
        run_conf={
            "image_url": image_url,
            "faces": {"1": new_face},
            "output_path": f"s3://{moto_s3.conn_id}@{bucket}/crun/",
        }
    )

    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "success", states
    swap = xcom(run.run_id, SWAP)
    crun_task_id = swap["crun_task_id"]
    key = f"crun/{crun_task_id}_0.png"
    stored_path = f"s3://{bucket}/{key}"
    assert swap["stored_paths"] == [stored_path]  # no conn_id in the URI
    objects = moto_s3.objects(bucket)
    assert list(objects) == [key]  # exactly one object, no temporary ones
    assert moto_s3.read(bucket, key)[:8] == b"\x89PNG\r\n\x1a\n"
    assert moto_s3.multipart_uploads(bucket) == []
    etag = moto_s3.client().head_object(Bucket=bucket, Key=key)["ETag"]

    # The asset event Airflow recorded for the swap's outlet.
    [event] = swap_events(run.run_id)
    assert event["asset"] == ("crun_face_swaps", "crun_face_swaps")
    assert event["task"] == SWAP
    assert event["extra"] == {
        "stored_paths": [stored_path],
        "crun_task_id": crun_task_id,
        "model": MULTI,
        "credits": swap["credits"],
        "image_url": image_url,
        "face_ids": [1],
        # The stored path has no connection id; a reader of the event opens it with this one.
        "conn_id": moto_s3.conn_id,
    }
    assert swap["credits"] == 6

    media_requests = emulator.counts["media"]
    assert run_swap_again(run.run_id) == "success"

    if not DURABLE_EXECUTION:
        # Below Airflow 3.3 there is no task_state_store: the next try creates (and pays for) a new
        # Crun task and stores its result beside the first one.
        second = xcom(run.run_id, SWAP)
        assert (emulator.counts["CreateTask"], emulator.tasks_created) == (2, 2)
        assert second["crun_task_id"] != crun_task_id
        assert sorted(moto_s3.objects(bucket)) == sorted([key, f"crun/{second['crun_task_id']}_0.png"])
        return
    # The next try of the same task instance reattaches to the stored Crun task: nothing is
    # created, the result is not downloaded again, and no second object appears.
    assert (emulator.counts["CreateTask"], emulator.tasks_created) == (1, 1)
    assert emulator.counts["media"] - media_requests == 1  # the HEAD that found the object complete
    assert moto_s3.objects(bucket) == objects
    assert moto_s3.client().head_object(Bucket=bucket, Key=key)["ETag"] == etag
    assert xcom(run.run_id, SWAP)["stored_paths"] == [stored_path]
    assert [e["extra"]["stored_paths"] for e in swap_events(run.run_id)] == [[stored_path], [stored_path]]
