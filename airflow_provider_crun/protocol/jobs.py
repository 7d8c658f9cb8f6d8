"""
Reading a task or a detection: its phase, and, once it succeeded, a small typed summary.

Every reader here either returns well-typed values or raises
:class:`~airflow_provider_crun.protocol.errors.MalformedResponseError` naming the job: an answer
Crun does not document is an error, never a guess.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_crun.protocol import calls, errors
from airflow_provider_crun.protocol.envelope import SUCCESS_CODE, snippet


def is_http_url(value: str) -> bool:
    """Whether ``value`` parses as an absolute ``http(s)`` URL with a host."""
    try:
        parts = urlsplit(value)
        return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
    except ValueError:
        return False


class JobPhase(StrEnum):
    """Where a task or detection stands, whatever spelling its endpoint used."""

    SUCCEEDED = "success"
    FAILED = "failed"
    RUNNING = "running"
    UNKNOWN = "unknown"

    @property
    def is_terminal(self) -> bool:
        """Whether the job will not change any more."""
        return self in TERMINAL_PHASES


TERMINAL_PHASES = frozenset({JobPhase.SUCCEEDED, JobPhase.FAILED})
# Detections say "succeeded", tasks "success", a detection's result "succeed": accept all on both.
SUCCESS_STATUSES = frozenset({"success", "succeeded", "succeed"})
FAILED_STATUSES = frozenset({"failed"})
RUNNING_STATUSES = frozenset({"starting", "processing", "pending", "running"})


def job_phase(status: str) -> JobPhase:
    """Classify a status word case-insensitively; an undocumented one is ``UNKNOWN``."""
    word = status.strip().lower()
    if word in SUCCESS_STATUSES:
        return JobPhase.SUCCEEDED
    if word in FAILED_STATUSES:
        return JobPhase.FAILED
    if word in RUNNING_STATUSES:
        return JobPhase.RUNNING
    return JobPhase.UNKNOWN


@dataclass(frozen=True)
class JobRead:
    """
    One read of a job, classified.

    :param phase: Where it stands.
    :param status: The status word, lower-cased.
    :param created_at: When Crun created it (epoch seconds), when the answer says.
    :param failure: Crun's explanation, when it failed.
    :param result: The small JSON summary of a succeeded job (see :func:`read_task` and
        :func:`read_detection`), else ``None``.
    """

    phase: JobPhase
    status: str
    created_at: float | None = None
    failure: str | None = None
    result: dict[str, Any] | None = None


class _Reader:
    """Field checks that name the job in every complaint."""

    def __init__(self, label: str, job_id: str, data: Any) -> None:
        self.label, self.job_id, self.data = label, job_id, data

    def malformed(self, problem: str, value: Any) -> errors.MalformedResponseError:
        return errors.MalformedResponseError(
            SUCCESS_CODE, f"Crun {self.label} {self.job_id}: {problem}: {snippet(value)!r}"
        )

    def mapping(self, value: Any, what: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.malformed(f"{what} is not an object", value)
        return value

    def number(self, value: Any, what: str) -> float | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.malformed(f"{what} is not a number", value)
        return float(value)

    def url(self, value: Any, what: str) -> str:
        if not isinstance(value, str) or not is_http_url(value):
            raise self.malformed(f"{what} is not an http(s) URL", value)
        return value

    def status(self) -> str:
        value = self.mapping(self.data, "the answer").get("status")
        if value is None:
            return ""
        if not isinstance(value, str):
            raise self.malformed("status is not a word", value)
        return value.strip().lower()


def failure_detail(data: Any) -> str:
    """Crun's explanation of a failed job, as one line, whatever shape it came in."""
    return " ".join(_failure_detail(data).split())


def _failure_detail(data: Any) -> str:
    if not isinstance(data, dict):
        return "no detail"
    for candidate in (data.get("error"), data.get("result")):
        if isinstance(candidate, dict):
            code, message = candidate.get("code"), candidate.get("message") or candidate.get("error")
            if message:
                return f"{message} (code {code})" if code is not None else str(message)
        elif candidate:
            return str(candidate)
    return "no detail"


def _read(reader: _Reader, summary: Callable[[_Reader], dict[str, Any]], created_key: str | None) -> JobRead:
    status = reader.status()
    phase = job_phase(status)
    created_at = reader.number(reader.data.get(created_key), created_key) if created_key else None
    if phase is JobPhase.FAILED:
        return JobRead(phase, status, created_at, failure=failure_detail(reader.data))
    if phase is JobPhase.SUCCEEDED:
        return JobRead(phase, status, created_at, result=summary(reader))
    return JobRead(phase, status, created_at)


def _task_summary(reader: _Reader) -> dict[str, Any]:
    result = reader.data.get("result")
    urls: Any = [] if result is None else reader.mapping(result, "result").get("media_urls", [])
    if not isinstance(urls, list):
        raise reader.malformed("result.media_urls is not a list", urls)
    return {
        "status": reader.status(),
        "media_urls": [reader.url(url, "a media URL") for url in urls],
        "credits": reader.number(reader.data.get("credits"), "credits"),
        "duration_s": reader.number(reader.data.get("duration_s"), "duration_s"),
    }


def read_task(data: Any, task_id: str) -> JobRead:
    """
    Read a ``TaskInfo`` answer.

    A succeeded task's summary is ``{"status", "media_urls", "credits", "duration_s"}``.
    """
    return _read(_Reader("task", task_id, data), _task_summary, "create_at")


def _face_id(reader: _Reader, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise reader.malformed("a face id is not a non-negative integer", value)
    return value


def _detection_summary(reader: _Reader) -> dict[str, Any]:
    result = reader.mapping(reader.data.get("result"), "result")
    detect_id = result.get("id")
    if isinstance(detect_id, bool) or not isinstance(detect_id, (str, int)) or str(detect_id).strip() == "":
        raise reader.malformed("result.id (the detect_id) is missing", result)
    faces = result.get("faces")
    # A null or missing list is not "no faces": a succeeded detection always lists what it found.
    if not isinstance(faces, list):
        raise reader.malformed("result.faces is not a list", faces)
    parsed: list[dict[str, Any]] = []
    for face in faces:
        face = reader.mapping(face, "a face")
        parsed.append(
            {"id": _face_id(reader, face.get("id")), "link": reader.url(face.get("link"), "a face link")}
        )
    if len({face["id"] for face in parsed}) != len(parsed):
        raise reader.malformed("two faces share an id", faces)
    return {"detect_id": str(detect_id), "faces": parsed}


def read_detection(data: Any, detect_task_id: str) -> JobRead:
    """
    Read a ``detect-face-result`` answer.

    A succeeded detection's summary is ``{"detect_id", "faces": [{"id", "link"}]}``.
    """
    return _read(_Reader("face detection", detect_task_id, data), _detection_summary, None)


@dataclass(frozen=True)
class JobKind:
    """
    What differs between watching a task and watching a face detection.

    :param label: How messages name it.
    :param id_key: The name of its id in XCom, events and ``task_state_store``.
    :param status_request: Builds the call that reads it.
    :param read: Classifies one answer of that call.
    """

    label: str
    id_key: str
    status_request: Callable[[str], calls.CrunRequest]
    read: Callable[[Any, str], JobRead]


TASK = JobKind("task", "crun_task_id", calls.task_info_request, read_task)
DETECTION = JobKind("face detection", "detect_task_id", calls.detection_result_request, read_detection)
JOB_KINDS = {kind.id_key: kind for kind in (TASK, DETECTION)}
