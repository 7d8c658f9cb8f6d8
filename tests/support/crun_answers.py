"""Crun answers as the API documents them, for scripting a fake transport or server."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

BASE = "http://127.0.0.1:8089"
API = f"{BASE}/api/v1"
CREATE = f"{API}/client/job/CreateTask"
TASK_INFO = f"{API}/client/job/TaskInfo"
DETECT = f"{API}/client/job/detect-face-image"
DETECT_RESULT = f"{API}/client/job/detect-face-result"
BALANCE = f"{API}/client/account/balance"

TASK_ID = "task_12345678"
DETECT_TASK_ID = "dit60yt8reqplt1c16"
DETECT_ID = "m1oZzqYp9dN"
IMAGE = "https://example.com/group.png"
NEW_FACE = "https://example.com/new-face.jpg"
FACE_0 = "https://cdn.example.com/detected-face-0.jpg"
FACE_1 = "https://cdn.example.com/detected-face-1.jpg"
RESULT = "https://cdn.example.com/result.png"


def envelope(data: Any, code: int = 200, message: str = "success") -> dict[str, Any]:
    return {"code": code, "message": message, "data": data}


def ok(data: Any) -> dict[str, Any]:
    """``requests_mock`` keyword arguments of a successful answer."""
    return {"json": envelope(data)}


def api_error(code: int, *, in_body: bool = False, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """``requests_mock`` keyword arguments of an error, as the HTTP status or inside an HTTP-200 body."""
    answer: dict[str, Any] = {"json": envelope(None, code, f"crun error {code}")}
    answer["status_code"] = 200 if in_body else code
    if headers:
        answer["headers"] = headers
    return answer


def task_data(status: str, task_id: str = TASK_ID, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"task_id": task_id, "status": status, "result": None, "create_at": 1_800_000_000}
    if status == "success":
        data.update(result={"media_urls": [RESULT]}, credits=6, duration_s=4.2)
    if status == "failed":
        data.update(result={"code": 500, "message": "the model crashed"})
    data.update(extra)
    return data


def detection_data(
    status: str = "succeeded", faces: list[dict[str, Any]] | None = None, detect_task_id: str = DETECT_TASK_ID
) -> dict[str, Any]:
    if status != "succeeded":
        return {"detect_task_id": detect_task_id, "status": status, "error": None, "result": None}
    faces = [{"id": 0, "link": FACE_0}, {"id": 1, "link": FACE_1}] if faces is None else faces
    return {
        "detect_task_id": detect_task_id,
        "status": status,
        "error": None,
        "result": {"id": DETECT_ID, "status": "succeed", "faces": faces},
    }


def detection_xcom(expires_in: float = 3000.0, **changes: Any) -> dict[str, Any]:
    """A CrunDetectFacesOperator result, as the swap receives it."""
    value: dict[str, Any] = {
        "detect_id": DETECT_ID,
        "detect_task_id": DETECT_TASK_ID,
        "image_url": IMAGE,
        "faces": [{"id": 0, "link": FACE_0}, {"id": 1, "link": FACE_1}],
        "expires_at": (datetime.now(UTC) + timedelta(seconds=expires_in)).isoformat(),
    }
    value.update(changes)
    return value


def body_of(answer: dict[str, Any]) -> bytes:
    return json.dumps(answer["json"]).encode()
