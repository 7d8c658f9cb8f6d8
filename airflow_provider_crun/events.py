"""
The payload a Crun trigger yields, and its validation on resume.

Events cross the metadata database between the triggerer and the worker, so the resume side
trusts nothing: anything but an explicit ``success`` raises, including ``None`` and unknown
statuses.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

from airflow_provider_crun.exceptions import CrunError, CrunJobFailedError

EventStatus = Literal["success", "failed", "timeout", "error"]


class CrunEvent(TypedDict, total=False):
    """
    What :class:`~airflow_provider_crun.triggers.crun.CrunTaskTrigger` and
    :class:`~airflow_provider_crun.triggers.crun.CrunFaceDetectionTrigger` yield.

    ``crun_task_id`` or ``detect_task_id`` names the job. ``data`` is Crun's ``data`` object of
    the last poll (``None`` when there was none). ``resume_state`` is whatever the deferring
    operator asked the trigger to carry back, because ``airflow dags test`` drops
    ``defer(kwargs=...)`` on resume.
    """

    status: EventStatus
    crun_task_id: str
    detect_task_id: str
    data: dict[str, Any] | None
    message: str
    resume_state: dict[str, Any]


class CrunTimeoutError(CrunError):
    """The job did not finish before the deadline. Crun keeps running it; its id is in the message."""


def make_event(
    status: EventStatus,
    *,
    id_key: str,
    job_id: str,
    message: str,
    data: dict[str, Any] | None = None,
    resume_state: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build an event payload: plain JSON, never a pickle."""
    event: dict[str, Any] = {"status": status, id_key: job_id, "data": data, "message": message}
    if resume_state:
        event["resume_state"] = resume_state
    return event


def data_from_event(event: Any, *, id_key: str) -> dict[str, Any]:
    """
    Return the finished job's ``data`` from a success event, or raise.

    :param event: The payload handed to the resume method.
    :param id_key: ``crun_task_id`` or ``detect_task_id``.
    :raises CrunJobFailedError: the job failed (no retry: it would fail again the same way).
    :raises CrunTimeoutError: the deadline passed.
    :raises CrunError: an API error, a missing event or an unknown status.
    """
    if not isinstance(event, dict):
        raise CrunError(f"Crun trigger returned no usable event: {event!r}")
    status = event.get("status")
    job_id = str(event.get(id_key, "<unknown>"))
    message = str(event.get("message") or "no message")
    if status == "success":
        data = event.get("data")
        if not isinstance(data, dict):
            raise CrunError(f"Crun {id_key} {job_id}: success event without data.")
        return data
    outcome = {"failed": "failed", "timeout": "timed out"}.get(str(status), f"ended with status {status!r}")
    # The triggers' messages already name the job; repeating the id would only add noise.
    described = (
        f"{message} (status: {status})"
        if job_id in message
        else f"Crun {id_key} {job_id} {outcome}: {message}"
    )
    if status == "failed":
        raise CrunJobFailedError(described, job_id=job_id)
    if status == "timeout":
        raise CrunTimeoutError(described)
    raise CrunError(described)
