"""Event validation on resume: anything but an explicit success raises."""

from __future__ import annotations

import pytest

from airflow_provider_crun.events import CrunTimeoutError, data_from_event, make_event
from airflow_provider_crun.exceptions import CrunError, CrunJobFailedError


def test_success_returns_data() -> None:
    event = make_event(
        "success", id_key="crun_task_id", job_id="t1", message="ok", data={"status": "success"}
    )
    assert data_from_event(event, id_key="crun_task_id") == {"status": "success"}


def test_resume_state_travels_only_when_given() -> None:
    assert "resume_state" not in make_event("success", id_key="crun_task_id", job_id="t", message="m")
    event = make_event("success", id_key="crun_task_id", job_id="t", message="m", resume_state={"model": "x"})
    assert event["resume_state"] == {"model": "x"}


@pytest.mark.parametrize(
    ("event", "error", "message"),
    [
        (
            make_event(
                "failed",
                id_key="crun_task_id",
                job_id="t1",
                message="Crun task t1 failed: no face (code 501)",
            ),
            CrunJobFailedError,
            "Crun task t1 failed: no face (code 501) (status: failed)",
        ),
        (
            make_event("failed", id_key="crun_task_id", job_id="t1", message="no face"),
            CrunJobFailedError,
            "Crun crun_task_id t1 failed: no face",
        ),
        (
            make_event("timeout", id_key="detect_task_id", job_id="d1", message="too slow"),
            CrunTimeoutError,
            "Crun detect_task_id d1 timed out: too slow",
        ),
        (
            make_event("error", id_key="crun_task_id", job_id="t1", message="Crun API error 401: bad key"),
            CrunError,
            "Crun crun_task_id t1 ended with status 'error': Crun API error 401: bad key",
        ),
        (
            {"status": "cancelled", "crun_task_id": "t1"},
            CrunError,
            "Crun crun_task_id t1 ended with status 'cancelled': no message",
        ),
        ({"crun_task_id": "t1"}, CrunError, "Crun crun_task_id t1 ended with status None: no message"),
        (
            {"status": "success", "crun_task_id": "t1", "data": None},
            CrunError,
            "Crun crun_task_id t1: success event without data.",
        ),
        (None, CrunError, "Crun trigger returned no usable event: None"),
        ("success", CrunError, "Crun trigger returned no usable event: 'success'"),
    ],
    ids=[
        "failed-message-already-names-job",
        "failed-bare-message",
        "timeout",
        "error",
        "unknown-status",
        "no-status",
        "success-without-data",
        "none",
        "not-a-dict",
    ],
)
def test_anything_but_success_raises(event: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as raised:
        data_from_event(event, id_key="crun_task_id" if not str(event).count("detect") else "detect_task_id")
    assert str(raised.value) == message


def test_failed_is_not_retried_by_airflow() -> None:
    from airflow.providers.common.compat.sdk import AirflowFailException

    assert issubclass(CrunJobFailedError, AirflowFailException)
    assert not issubclass(CrunTimeoutError, AirflowFailException)
