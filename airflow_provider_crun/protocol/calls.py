"""The five Crun calls, as data a transport can send, and the fingerprint of a creation."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider_crun import __version__

USER_AGENT = f"airflow-provider-crun/{__version__}"
MODEL_MULTI_FACE_SWAP = "image-face-swap-multi"
MODEL_FACE_SWAP = "image-face-swap"


@dataclass(frozen=True)
class CrunRequest:
    """
    One Crun API call, ready for a transport to send.

    :param name: The endpoint's short name, for logs and messages.
    :param method: ``GET`` or ``POST``.
    :param path: Path below the versioned base URL, e.g. ``/client/job/TaskInfo``.
    :param params: Query parameters.
    :param body: JSON body.
    :param creates_billable: ``True`` for calls that create (and bill) a job on Crun. Such a
        call is never re-sent once it may have reached the server.
    :param id_field: For a creation call, the field of ``data`` that names the new job.
    """

    name: str
    method: str
    path: str
    params: Mapping[str, str] | None = None
    body: Mapping[str, Any] | None = None
    creates_billable: bool = False
    id_field: str | None = None

    @functools.cached_property
    def description(self) -> str:
        """The call and the job it is about, for messages: ``"TaskInfo task_12345678"``."""
        subject = next(iter(self.params.values()), "") if self.params else ""
        return f"{self.name} {subject}".strip()

    @property
    def fingerprint(self) -> str:
        """
        A stable digest of what a creation call asks for: path and canonical JSON body.

        Stored next to the job id, so a retry reattaches only to a job made for the same request.
        """
        canonical = json.dumps(
            {"path": self.path, "body": self.body}, sort_keys=True, separators=(",", ":"), default=str
        )
        return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()[:32]


_JOB_PATH = "/client/job/"


def _creation_request(name: str, body: Mapping[str, Any], id_field: str) -> CrunRequest:
    # Built in one place so that no creation call can lack ``creates_billable``, which is what
    # keeps a transport from ever sending a billed call twice.
    return CrunRequest(
        name=name, method="POST", path=_JOB_PATH + name, body=body, creates_billable=True, id_field=id_field
    )


def _job_query(name: str, id_param: str, job_id: str) -> CrunRequest:
    return CrunRequest(name=name, method="GET", path=_JOB_PATH + name, params={id_param: job_id})


def detect_faces_request(image_url: str) -> CrunRequest:
    """The call that creates a face detection (billed)."""
    return _creation_request("detect-face-image", {"image_url": image_url}, "detect_task_id")


def detection_result_request(detect_task_id: str) -> CrunRequest:
    """The call that reads a face detection."""
    return _job_query("detect-face-result", "detect_task_id", detect_task_id)


def create_task_request(model: str, input: Mapping[str, Any], callback_url: str | None = None) -> CrunRequest:
    """A ``CreateTask`` call (billed); ``callback_url`` is left out of the body when ``None``."""
    body: dict[str, Any] = {"model": model, "input": dict(input)}
    if callback_url is not None:
        body["callback_url"] = callback_url
    return _creation_request("CreateTask", body, "task_id")


def task_info_request(task_id: str) -> CrunRequest:
    """The unified task query, ``TaskInfo``."""
    return _job_query("TaskInfo", "task_id", task_id)


def balance_request() -> CrunRequest:
    """The balance query: free, so it doubles as the connection test."""
    return CrunRequest(name="balance", method="GET", path="/client/account/balance")


def request_headers(api_key: str) -> dict[str, str]:
    """Headers for every call; the key travels only in ``x-api-key``."""
    return {"x-api-key": api_key, "User-Agent": USER_AGENT, "Accept": "application/json"}
