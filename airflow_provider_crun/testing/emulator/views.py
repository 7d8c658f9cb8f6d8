"""The ``data`` objects of the two status endpoints, built from a record and the current time."""

from __future__ import annotations

import copy
from typing import Any

from airflow_provider_crun.testing.emulator import urls
from airflow_provider_crun.testing.emulator.model import Detection, Task, number, timestamp

PROVIDER_NAME = "crun-emulator"


def _unfinished_status(now: float, second_at: float, statuses: tuple[str, str]) -> str:
    """The status of a job that is not done at ``now``: the first one until ``second_at``."""
    return statuses[0] if now < second_at else statuses[1]


def detection_data(detection: Detection, now: float, base_url: str) -> dict[str, Any]:
    """``GET /client/job/detect-face-result`` data of ``detection`` at time ``now``."""
    data: dict[str, Any] = {
        "detect_task_id": detection.detect_task_id,
        "status": "starting",
        "error": None,
        "result": None,
    }
    if now < detection.done_at:
        data["status"] = _unfinished_status(now, detection.processing_at, ("starting", "processing"))
        return data
    if detection.error is not None:
        data.update(status="failed", error=detection.error)
        return data
    data["status"] = "succeeded"
    data["result"] = {
        "id": detection.detect_id,
        "status": "succeed",
        "type": "face_detect",
        "hair_id": None,
        "faces": [
            {"id": i, "link": base_url + urls.crop_path(detection.detect_id, i)}
            for i in range(detection.face_count)
        ],
        "started_at": timestamp(detection.created_wall + (detection.processing_at - detection.created)),
        "finished_at": timestamp(detection.created_wall + (detection.done_at - detection.created)),
        "error": None,
    }
    return data


def task_data(task: Task, now: float, base_url: str) -> dict[str, Any]:
    """``GET /client/job/TaskInfo`` data of ``task`` at time ``now``."""
    data: dict[str, Any] = {
        "task_id": task.task_id,
        "provider": PROVIDER_NAME,
        "model_version": f"{task.model}-emulator-1",
        "status": "pending",
        "param": {
            "model": task.model,
            "callback_url": task.callback_url,
            "input": copy.deepcopy(task.input),
        },
        "create_at": int(task.created_wall),
        "result": None,
        "duration_s": None,
        "complete_at": None,
        "source": "api",
    }
    if now < task.done_at:
        data["status"] = _unfinished_status(now, task.running_at, ("pending", "running"))
        return data
    if task.error is not None:
        data["status"] = "failed"
        data["result"] = {"code": 501, "message": task.error}
    else:
        data["status"] = "success"
        data["result"] = {"media_urls": [base_url + urls.result_path(task.task_id)]}
    data["duration_s"] = round(task.done_at - task.created, 3)
    data["complete_at"] = int(task.created_wall + (task.done_at - task.created))
    data["credits"] = number(task.cost)
    return data
