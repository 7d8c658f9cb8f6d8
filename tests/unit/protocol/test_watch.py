"""What every waiter decides the same way: status changes, warnings, outcomes and deadlines."""

from __future__ import annotations

import pytest

from airflow_provider_crun.protocol import errors, jobs, watch
from tests.support.crun_answers import (
    DETECT_ID,
    DETECT_TASK_ID,
    FACE_0,
    FACE_1,
    RESULT,
    detection_data,
    task_data,
)

CREATED = 1_800_000_000.0


def task_watch() -> watch.JobWatch:
    return watch.JobWatch(jobs.TASK, "t1")


class TestObserve:
    def test_reports_changes_only_with_age_since_creation(self) -> None:
        seen = task_watch()
        first = seen.observe(task_data("pending"), now=CREATED)
        again = seen.observe(task_data("PENDING"), now=CREATED + 1)
        moved = seen.observe(task_data("processing"), now=CREATED + 2.5)
        assert first.change == "Crun task t1: (start) -> pending, 0.0 s after it was created"
        assert again.change is None
        assert moved.change == "Crun task t1: pending -> processing, 2.5 s after it was created"
        assert seen.last_status == "processing"

    def test_change_without_clock_or_creation_time(self) -> None:
        seen = watch.JobWatch(jobs.DETECTION, "d1")
        assert (
            seen.observe(detection_data("pending"), now=CREATED).change
            == "Crun face detection d1: (start) -> pending"
        )
        assert task_watch().observe(task_data("pending")).change == "Crun task t1: (start) -> pending"

    def test_clock_behind_creation_never_reports_negative_age(self) -> None:
        change = task_watch().observe(task_data("pending"), now=CREATED - 50).change
        assert change == "Crun task t1: (start) -> pending, 0.0 s after it was created"

    def test_missing_status_reads_as_empty(self) -> None:
        assert task_watch().observe({"task_id": "t1"}).change == "Crun task t1: (start) -> (empty)"

    def test_warns_once_per_unknown_status(self) -> None:
        seen = watch.JobWatch(jobs.DETECTION, "d1")
        warnings = [
            seen.observe({"status": word}).warning
            for word in ("queued", "queued", "pending", "queued", "held")
        ]
        assert warnings == [
            "Crun face detection d1: unknown status 'queued', treating it as not finished",
            None,
            None,
            None,
            "Crun face detection d1: unknown status 'held', treating it as not finished",
        ]

    @pytest.mark.parametrize(
        ("data", "done"),
        [
            (task_data("pending"), False),
            (task_data("mystery"), False),
            (task_data("failed"), True),
            (task_data("success"), True),
        ],
        ids=["running", "unknown", "failed", "succeeded"],
    )
    def test_done_only_when_terminal(self, data: dict[str, object], done: bool) -> None:
        assert task_watch().observe(data).done is done

    def test_malformed_answer_raises_naming_the_job(self) -> None:
        with pytest.raises(errors.MalformedResponseError, match="Crun task t1: credits is not a number"):
            task_watch().observe(task_data("success", credits="6"))


class TestOutcome:
    def test_task_success_is_its_summary(self) -> None:
        seen = task_watch()
        assert seen.outcome(seen.observe(task_data("success"))) == {
            "status": "success",
            "media_urls": [RESULT],
            "credits": 6.0,
            "duration_s": 4.2,
        }

    def test_detection_success_is_its_summary(self) -> None:
        seen = watch.JobWatch(jobs.DETECTION, DETECT_TASK_ID)
        assert seen.outcome(seen.observe(detection_data())) == {
            "detect_id": DETECT_ID,
            "faces": [{"id": 0, "link": FACE_0}, {"id": 1, "link": FACE_1}],
        }

    def test_failure_raises_job_failed_with_crun_explanation(self) -> None:
        seen = task_watch()
        with pytest.raises(errors.JobFailedError) as raised:
            seen.outcome(seen.observe(task_data("failed")))
        assert type(raised.value) is errors.JobFailedError
        assert str(raised.value) == "Crun task t1 failed: the model crashed (code 500)"
        assert raised.value.job_id == "t1"


class TestReadError:
    def test_generation_failed_is_the_jobs_own_failure(self) -> None:
        failure = task_watch().read_error(errors.GenerationFailedError(501, "no face found"))
        assert type(failure) is errors.JobFailedError
        assert (str(failure), failure.job_id) == ("Crun task t1 failed: no face found (code 501)", "t1")

    @pytest.mark.parametrize(
        "error",
        [
            errors.ServerError(500, "x"),
            errors.NotFoundError(404, "x"),
            errors.MalformedResponseError(200, "x"),
            errors.TransportError("x", request_sent=True),
        ],
        ids=["500", "404", "malformed", "transport"],
    )
    def test_anything_else_is_itself(self, error: errors.CrunProtocolError) -> None:
        assert task_watch().read_error(error) is error


class TestTimedOut:
    def test_names_deadline_limit_id_and_reattach(self) -> None:
        error = task_watch().timed_out(CREATED, "execution_timeout", None)
        assert type(error) is errors.JobTimeoutError
        assert (error.job_id, error.limit) == ("t1", "execution_timeout")
        assert str(error) == (
            "Crun task t1 did not finish by 2027-01-15T08:00:00+00:00 (its execution_timeout). Crun keeps "
            "running it: a retry of this task reattaches to it; its id is t1."
        )

    def test_adds_last_status_and_last_error(self) -> None:
        seen = task_watch()
        seen.observe(task_data("processing"))
        error = seen.timed_out(CREATED, "timeout", errors.ServerError(502, "bad gateway"))
        assert str(error).endswith(
            "its id is t1. Last status: 'processing'. Last poll failed: Crun API error 502: bad gateway"
        )
        assert error.limit == "timeout"


@pytest.mark.parametrize(
    ("timeout", "execution_deadline", "expected"),
    [
        (600.0, None, (CREATED + 600, "timeout")),
        (600.0, CREATED + 900, (CREATED + 600, "timeout")),
        (600.0, CREATED + 300, (CREATED + 300, "execution_timeout")),
        (600.0, CREATED + 600, (CREATED + 600, "timeout")),
        (600.0, CREATED - 5, (CREATED - 5, "execution_timeout")),
    ],
    ids=[
        "no-execution-timeout",
        "own-timeout-first",
        "execution-timeout-first",
        "tie-names-own-timeout",
        "execution-timeout-already-past",
    ],
)
def test_wait_deadline(timeout: float, execution_deadline: float | None, expected: tuple[float, str]) -> None:
    assert watch.wait_deadline(CREATED, timeout, execution_deadline) == expected


def test_iso_is_utc_to_the_second() -> None:
    assert watch.iso(CREATED + 0.9) == "2027-01-15T08:00:00+00:00"
