"""
OpenLineage events of a real ``dag.test()`` run, read back from the provider's file transport.

Why a subprocess: under Airflow 3.3 ``dag.test()`` runs each task through the Task SDK's task
runner in this very process, and that runner does call the listeners
(``airflow.sdk.listener.get_listener_manager().hook.on_task_instance_success`` /
``..._failed``). But the OpenLineage plugin decides once per process whether it has a listener:
``conf.is_disabled()`` is cached, and the plugin class body reads it at import; the SDK's
listener manager is cached too. With no transport configured at that moment, the plugin has
no listener for the life of the process. So each run happens in a fresh interpreter whose
environment configures the file transport (and sets ``[openlineage] disabled = False``) before
Airflow starts; the child also reports that the listener is registered. The provider emits
from a forked child of the task runner by default (``execute_in_thread = False``), which this
test keeps.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from airflow_provider_crun.testing.emulator import CrunEmulator
from tests.support.connections import EXAMPLE_DAGS

pytestmark = pytest.mark.integration

NAMESPACE = "crun-lineage-test"
EXAMPLE_DAG_ID = "example_crun_multi_face_swap"
FAILING_DAG_ID = "crun_lineage_failing_swap"

# A one-task DAG for the failure event: a blocking single-face swap with no retry.
FAILING_DAG = f'''
"""A face swap whose Crun task fails."""
from airflow.sdk import DAG

from airflow_provider_crun.operators.crun import CrunFaceSwapOperator

with DAG(dag_id="{FAILING_DAG_ID}", schedule=None, catchup=False) as dag:
    CrunFaceSwapOperator(
        task_id="swap_face",
        image_url="{{{{ dag_run.conf['image_url'] }}}}",
        new_face="{{{{ dag_run.conf['new_face'] }}}}",
        output_path="{{{{ dag_run.conf['output_path'] }}}}",
        poll_interval=0.2,
        retries=0,
    )
'''

# Runs in the child: one dag.test(), then what it returned, as one JSON line.
CHILD = textwrap.dedent(
    """
    import json
    import sys

    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 3.1
        from airflow.models.dagbag import DagBag
    from airflow.models.xcom import XComModel
    from airflow.providers.openlineage import conf as ol_conf
    try:
        from airflow.sdk.listener import get_listener_manager
    except ImportError:  # Airflow 3.1: the task runner calls the core listener manager
        from airflow.listeners.listener import get_listener_manager
    from airflow.utils.session import create_session

    dag_folder, dag_id, run_conf = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    bag = DagBag(dag_folder=dag_folder)
    assert not bag.import_errors, bag.import_errors
    listeners = sorted(type(p).__name__ for p in get_listener_manager().pm.get_plugins())
    run = bag.dags[dag_id].test(run_conf=run_conf)


    def xcom(task_id):
        with create_session() as session:
            value = session.scalar(
                XComModel.get_many(run_id=run.run_id, key="return_value", dag_ids=dag_id, task_ids=task_id)
                .with_only_columns(XComModel.value)
                .order_by(None)
            )
        return None if value is None else XComModel.deserialize_value(type("Row", (), {"value": value})())


    print("CRUN-RESULT " + json.dumps({
        "openlineage_disabled": ol_conf.is_disabled(),
        "listeners": listeners,
        "states": {ti.task_id: str(ti.state) for ti in run.get_task_instances()},
        "xcoms": {task_id: xcom(task_id) for task_id in bag.dags[dag_id].task_ids},
    }, default=str))
    """
)


@pytest.fixture(scope="module")
def lineage_home(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An Airflow home and a DAGs folder of their own, with a migrated metadata DB."""
    root = tmp_path_factory.mktemp("openlineage")
    dags = root / "dags"
    dags.mkdir()
    shutil.copy(EXAMPLE_DAGS / f"{EXAMPLE_DAG_ID}.py", dags)
    (dags / f"{FAILING_DAG_ID}.py").write_text(FAILING_DAG)
    env = {"AIRFLOW_HOME": str(root / "home"), "AIRFLOW__CORE__DAGS_FOLDER": str(dags)}
    airflow = Path(sys.executable).parent / "airflow"
    migrated = subprocess.run(
        [str(airflow), "db", "migrate"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert migrated.returncode == 0, migrated.stdout[-3000:] + migrated.stderr[-3000:]
    return env


@pytest.fixture
def emulator() -> Iterator[CrunEmulator]:
    with CrunEmulator(detect_delays=(0.2, 0.2), task_delays=(0.3, 0.5)) as emu:
        yield emu


def run_dag(
    home: dict[str, str], emulator: CrunEmulator, dag_id: str, run_conf: dict[str, Any], events: Path
) -> dict[str, Any]:
    """``dag.test()`` in a fresh interpreter with the file transport writing to ``events``."""
    env = {
        **os.environ,
        **home,
        "AIRFLOW_CONN_CRUN_DEFAULT": emulator.connection_uri(),
        "CRUN_EXAMPLE_MEDIA_BASE": emulator.url,
        "AIRFLOW__OPENLINEAGE__DISABLED": "False",
        "AIRFLOW__OPENLINEAGE__NAMESPACE": NAMESPACE,
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(events), "append": True}
        ),
    }
    env.pop("OPENLINEAGE_DISABLED", None)
    child = subprocess.run(
        [sys.executable, "-c", CHILD, home["AIRFLOW__CORE__DAGS_FOLDER"], dag_id, json.dumps(run_conf)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert child.returncode == 0, child.stdout[-4000:] + child.stderr[-4000:]
    [line] = [line for line in child.stdout.splitlines() if line.startswith("CRUN-RESULT ")]
    result: dict[str, Any] = json.loads(line.removeprefix("CRUN-RESULT "))
    # The listener really was there: the events below come from it, not from this test.
    assert result["openlineage_disabled"] is False
    assert "OpenLineageListener" in result["listeners"]
    return result


def read_events(path: Path, job_name: str, event_type: str) -> list[dict[str, Any]]:
    """The events of one job and type, in the order the file transport appended them."""
    events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [e for e in events if (e["job"]["name"], e["eventType"]) == (job_name, event_type)]


def dataset_names(datasets: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(dataset["namespace"], dataset["name"]) for dataset in datasets]


def http_dataset(url: str) -> tuple[str, str]:
    """OpenLineage's naming of an HTTP dataset: ``scheme://host:port``, and the path without query."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}", parts.path.lstrip("/")


def test_the_swap_complete_event_names_the_image_the_targets_the_stored_file_and_the_crun_task(
    lineage_home: dict[str, str], emulator: CrunEmulator, tmp_path: Path
) -> None:
    image_url = emulator.input_image_url("group", faces=3)
    new_face = emulator.input_image_url("new-face", faces=1)
    out = tmp_path / "out"
    events_file = tmp_path / "ol.jsonl"

    result = run_dag(
        lineage_home,
        emulator,
        EXAMPLE_DAG_ID,
        {"image_url": image_url, "faces": {"1": new_face}, "output_path": out.as_uri() + "/"},
        events_file,
    )

    assert set(result["states"].values()) == {"success"}, result["states"]
    swap = result["xcoms"]["swap_faces"]
    detection = result["xcoms"]["detect_faces"]
    crun_task_id = swap["crun_task_id"]
    faces = {face["id"]: face["link"] for face in detection["faces"]}
    [complete] = read_events(events_file, f"{EXAMPLE_DAG_ID}.swap_faces", "COMPLETE")

    assert complete["job"]["namespace"] == NAMESPACE
    # The detected image, then each face's target in face id order: faces 0 and 2 keep their
    # own detected crop, face 1 gets the new face.
    assert dataset_names(complete["inputs"]) == [
        http_dataset(image_url),
        http_dataset(faces[0]),
        http_dataset(new_face),
        http_dataset(faces[2]),
    ]
    assert dataset_names(complete["outputs"]) == [("file", f"{out}/{crun_task_id}_0.png")]
    assert (out / f"{crun_task_id}_0.png").is_file()
    crun_facet = complete["run"]["facets"]["crun"]
    assert {key: crun_facet[key] for key in ("crun_task_id", "model", "credits")} == {
        "crun_task_id": crun_task_id,
        "model": "image-face-swap-multi",
        "credits": swap["credits"],
    }
    assert crun_facet["_producer"].startswith("https://github.com/apache/airflow")
    assert emulator.tasks_created == 1


def test_a_failed_swap_fail_event_names_its_inputs_and_the_failed_crun_task(
    lineage_home: dict[str, str], emulator: CrunEmulator, tmp_path: Path
) -> None:
    emulator.add_fault("CreateTask", "task_fail", times=1)
    image_url = emulator.input_image_url("portrait", faces=1)
    new_face = emulator.input_image_url("new-face", faces=1)
    out = tmp_path / "out"
    events_file = tmp_path / "ol.jsonl"

    result = run_dag(
        lineage_home,
        emulator,
        FAILING_DAG_ID,
        {"image_url": image_url, "new_face": new_face, "output_path": out.as_uri() + "/"},
        events_file,
    )

    assert result["states"] == {"swap_face": "failed"}
    [fail] = read_events(events_file, f"{FAILING_DAG_ID}.swap_face", "FAIL")
    assert dataset_names(fail["inputs"]) == [http_dataset(image_url), http_dataset(new_face)]
    assert fail["outputs"] == []
    crun_facet = fail["run"]["facets"]["crun"]
    assert crun_facet["model"] == "image-face-swap"
    assert crun_facet.get("credits") is None
    assert emulator.state.find_task(crun_facet["crun_task_id"]) is not None  # the task Crun failed
    assert emulator.tasks_created == 1
    assert not out.exists()


def test_the_detection_complete_event_names_the_image_the_face_crops_and_the_detection(
    lineage_home: dict[str, str], emulator: CrunEmulator, tmp_path: Path
) -> None:
    from airflow_provider_crun.openlineage.facets import CrunDetectionRunFacet, CrunTaskRunFacet

    image_url = emulator.input_image_url("pair", faces=2)
    new_face = emulator.input_image_url("new-face", faces=1)
    events_file = tmp_path / "ol.jsonl"

    result = run_dag(
        lineage_home,
        emulator,
        EXAMPLE_DAG_ID,
        {"image_url": image_url, "faces": {"0": new_face}, "output_path": (tmp_path / "out").as_uri() + "/"},
        events_file,
    )

    assert set(result["states"].values()) == {"success"}, result["states"]
    detection = result["xcoms"]["detect_faces"]
    [detected] = read_events(events_file, f"{EXAMPLE_DAG_ID}.detect_faces", "COMPLETE")
    [swapped] = read_events(events_file, f"{EXAMPLE_DAG_ID}.swap_faces", "COMPLETE")

    assert dataset_names(detected["inputs"]) == [http_dataset(image_url)]
    crops = [http_dataset(face["link"]) for face in detection["faces"]]
    assert len(crops) == 2
    assert dataset_names(detected["outputs"]) == crops
    facet = detected["run"]["facets"]["crun_detection"]
    assert {key: facet[key] for key in ("detect_task_id", "detect_id", "face_count")} == {
        "detect_task_id": detection["detect_task_id"],
        "detect_id": detection["detect_id"],
        "face_count": 2,
    }
    # Face 1 kept its own crop, so the graph runs image -> detection -> crop -> swap.
    assert crops[1] in dataset_names(swapped["inputs"])
    # Each custom facet names its own schema, which the package ships.
    assert facet["_schemaURL"] == CrunDetectionRunFacet._get_schema()
    assert swapped["run"]["facets"]["crun"]["_schemaURL"] == CrunTaskRunFacet._get_schema()
    assert facet["_schemaURL"].endswith("/CrunDetectionRunFacet.json#/$defs/CrunDetectionRunFacet")
