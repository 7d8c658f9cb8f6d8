"""Small assertions shared by the end-to-end scenarios."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from airflow_provider_crun.testing.emulator import EmulatorProcess, changed_faces, input_png
from tests.support.airflow.api import AirflowApi
from tests.support.airflow.scenarios import REJECTION_KINDS
from tests.support.s3 import MotoS3

#: The tasks of every swap DAG of the suite, and of the multi-face-swap example.
SWAP_FLOW = ("detect_faces", "swap_faces", "report")
#: The keys of a task operator's XCom (``CrunTaskResult``).
TASK_RESULT_KEYS = frozenset(
    {"crun_task_id", "model", "status", "media_urls", "credits", "duration_s", "stored_paths"}
)
#: The keys of a ``CrunTaskSensor``'s XCom.
TASK_SENSOR_KEYS = frozenset({"crun_task_id", "status", "media_urls", "credits", "duration_s"})
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def output_folder(path: Path) -> str:
    """The ``output_path`` of a run that stores into the local folder ``path``."""
    return path.as_uri() + "/"


def stored_uri(folder: Path, crun_task_id: str, index: int = 0, ext: str = "png") -> str:
    """The URI the operator stores result ``index`` of ``crun_task_id`` under, in ``folder``."""
    return f"{output_folder(folder)}{crun_task_id}_{index}.{ext}"


def local_file(uri: str) -> Path:
    """The local path of a ``file://`` URI the operator returned."""
    parts = urlsplit(uri)
    assert parts.scheme == "file", f"not a local file URI: {uri!r}"
    return Path(parts.path)


def s3_folder(s3: MotoS3, bucket: str, prefix: str) -> str:
    """The ``output_path`` of a run storing under ``prefix`` in ``bucket``, with the suite's connection."""
    return f"s3://{s3.conn_id}@{bucket}/{prefix.strip('/')}/"


def s3_key(uri: str, bucket: str) -> str:
    """The key of an ``s3://bucket/key`` URI the operator returned; it names ``bucket``, no connection."""
    parts = urlsplit(uri)
    assert (parts.scheme, parts.netloc) == ("s3", bucket), f"not an object of bucket {bucket!r}: {uri!r}"
    return parts.path.lstrip("/")


def sent_task_input(emulator: EmulatorProcess, crun_task_id: str) -> dict[str, Any]:
    """
    The ``input`` Crun got for a task, as the emulator's ``TaskInfo`` answers it (``param.input``).

    The emulator's ``state()`` does not expose what a task was created with, and the operator's
    XCom no longer carries Crun's raw data, so this asks the emulator's API with the suite's key.
    That is one more ``TaskInfo`` request: read the counters first.
    """
    request = urllib.request.Request(
        f"{emulator.api_url}/client/job/TaskInfo?task_id={quote(crun_task_id)}",
        headers={"x-api-key": emulator.api_key},
    )
    with _OPENER.open(request, timeout=10) as response:
        body = json.loads(response.read())
    assert body["code"] == 200, body
    return dict(body["data"]["param"]["input"])


def by_task(task_instances: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """Unmapped task instances by task id."""
    return {ti["task_id"]: ti for ti in task_instances if ti["map_index"] == -1}


def task_states(task_instances: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """``task_id -> state`` of the unmapped task instances."""
    return {task_id: ti["state"] for task_id, ti in by_task(task_instances).items()}


def all_success(task_ids: Iterable[str]) -> dict[str, str]:
    return dict.fromkeys(task_ids, "success")


# Airflow 3.3.2 logs this when it takes the stale exit event of a deferring try for an external kill
# of the resumed try, and fails (or retries) a healthy task: apache/airflow#72716 (PR #72767).
AIRFLOW_DEFER_RACE = "state mismatch"
AIRFLOW_DEFER_RACE_ISSUE = "https://github.com/apache/airflow/issues/72716"


def airflow_defer_races(api: AirflowApi, dag_id: str, run_id: str) -> dict[tuple[str, int], int]:
    """How often the Airflow defer race struck each ``(task_id, map_index)`` of a run."""
    races: dict[tuple[str, int], int] = {}
    for entry in api.event_logs(event=AIRFLOW_DEFER_RACE, dag_id=dag_id, run_id=run_id):
        key = (entry["task_id"], entry["map_index"] if entry["map_index"] is not None else -1)
        races[key] = races.get(key, 0) + 1
    return races


def unexplained_retries(
    task_instances: Iterable[Mapping[str, Any]], races: Mapping[tuple[str, int], int]
) -> list[tuple[str, int, int]]:
    """
    ``(task_id, map_index, try_number)`` of every task instance that needed more than one try.

    A try that Airflow's own defer race failed is the only excuse for another one (the durable
    reattach then finishes the same Crun job, which the request counts check). A race does not
    always cost a try, so this allows up to one extra try per race.
    """
    return [
        (ti["task_id"], ti["map_index"], ti["try_number"])
        for ti in task_instances
        if ti["try_number"] > 1 + races.get((ti["task_id"], ti["map_index"]), 0)
    ]


def fired(state: Mapping[str, Any], endpoint: str, kinds: Iterable[str] | None = None) -> int:
    """How many faults the emulator injected on ``endpoint`` (of ``kinds``, or of any kind)."""
    total = 0
    for key, count in state.get("faults_fired", {}).items():
        name, _, kind = key.partition(":")
        if name == endpoint and (kinds is None or kind in kinds):
            total += int(count)
    return total


def accepted_creates(state: Mapping[str, Any]) -> int:
    """
    ``CreateTask`` requests minus the ones the emulator rejected with 429/455 (also as a body code).

    A rejection creates nothing and may be re-sent, so it does not count. Every other request
    may have created a task, so a correct client sends exactly one per swap.
    """
    return int(state["counts"]["CreateTask"]) - fired(state, "CreateTask", REJECTION_KINDS)


def faults_injected(state: Mapping[str, Any]) -> int:
    return sum(int(count) for count in state.get("faults_fired", {}).values())


def swapped_faces(result: bytes, image_name: str, face_count: int) -> list[int]:
    """Face ids whose region differs between the emulator's input image and the stored ``result``."""
    return changed_faces(input_png(image_name, face_count), result, face_count)


def log_of(
    api: AirflowApi, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1
) -> str:
    """A task try's log; waits briefly, since the last lines may land just after the state."""
    text = ""
    for _ in range(5):
        text = api.task_log(dag_id, run_id, task_id, try_number, map_index)
        if "::endgroup::" in text or "Task instance is in" in text or "ERROR" in text.upper():
            break
        time.sleep(1)
    return text
