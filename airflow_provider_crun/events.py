"""
The one event a Crun trigger yields, and its validation on resume.

Events cross the metadata database between the triggerer and a worker, so they carry only what
the resume method needs: the job id, a small summary of the result, or the error's fields
(``kind``, ``code``, ``permanent``...). The resume side rebuilds the very exception the
blocking path raises for the same Crun answer, and trusts nothing: anything but a well-formed
``success`` raises, ``None`` and unknown statuses included.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

from airflow_provider_crun.exceptions import CrunError, CrunUnclassifiedError, error_from_event
from airflow_provider_crun.protocol import errors
from airflow_provider_crun.protocol.jobs import JobKind

EventStatus = Literal["success", "failed", "timeout", "error"]


class CrunEvent(TypedDict, total=False):
    """
    The payload of a Crun trigger's event.

    The job's id is under its kind's ``id_key`` (``crun_task_id`` or ``detect_task_id``).
    ``result`` is present on success, ``error`` (an error's fields) otherwise. ``resume_state``
    is what the deferring operator asked to get back, because ``airflow dags test`` drops
    ``defer(kwargs=...)`` on resume.
    """

    status: EventStatus
    message: str
    result: dict[str, Any]
    error: dict[str, Any]
    resume_state: dict[str, Any]


def success_event(
    kind: JobKind, job_id: str, result: dict[str, Any], resume_state: dict[str, Any] | None
) -> dict[str, Any]:
    """The event of a job that succeeded, with its summary."""
    event: dict[str, Any] = {
        "status": "success",
        kind.id_key: job_id,
        "message": f"Crun {kind.label} {job_id} succeeded.",
        "result": result,
    }
    if resume_state:
        event["resume_state"] = resume_state
    return event


def failure_event(
    kind: JobKind, job_id: str, error: errors.CrunProtocolError, resume_state: dict[str, Any] | None
) -> dict[str, Any]:
    """The event of a wait that ended without a result: the job failed, timed out, or a read failed."""
    status: EventStatus = {"job_failed": "failed", "timeout": "timeout"}.get(error.kind, "error")  # type: ignore[assignment]
    event: dict[str, Any] = {
        "status": status,
        kind.id_key: job_id,
        "message": str(error),
        "error": error.fields(),
    }
    if resume_state:
        event["resume_state"] = resume_state
    return event


def result_from_event(event: Any, kind: JobKind) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """
    Read a success event.

    :returns: ``(job_id, result, resume_state)``.
    :raises CrunError: the class the blocking path raises for the same outcome, rebuilt from the
        event's ``error``; a retryable :class:`~airflow_provider_crun.exceptions.CrunError` for a
        missing or malformed event (a retry reattaches, so it never pays twice).
    """
    if not isinstance(event, dict):
        raise CrunUnclassifiedError(f"Crun trigger returned no usable event: {event!r}")
    job_id = event.get(kind.id_key)
    if not isinstance(job_id, str) or not job_id:
        raise CrunUnclassifiedError(f"Crun trigger event without a {kind.id_key}: {event!r}")
    status = event.get("status")
    if status == "success":
        result, state = event.get("result"), event.get("resume_state") or {}
        if not isinstance(result, dict) or not isinstance(state, dict):
            raise CrunUnclassifiedError(f"Crun {kind.label} {job_id}: success event without a result.")
        return job_id, result, state
    if status in ("failed", "timeout", "error") and isinstance(event.get("error"), dict):
        raise error_from_event(event["error"])
    message = str(event.get("message") or "no message")
    raise CrunUnclassifiedError(f"Crun {kind.label} {job_id} ended with status {status!r}: {message}")


__all__ = ["CrunError", "CrunEvent", "EventStatus", "failure_event", "result_from_event", "success_event"]
