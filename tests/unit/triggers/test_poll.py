"""The triggers' poll loop, ``watch_job``, on a fake clock with a stub hook: no socket, no real waits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from airflow_provider_crun.protocol import envelope, errors, jobs, watch
from airflow_provider_crun.protocol.settings import CrunConnectionSettings
from airflow_provider_crun.triggers._poll import watch_job
from tests.support.crun_answers import DETECT_ID, FACE_0, FACE_1, RESULT, detection_data, task_data
from tests.support.fakes import FakeClock

JOB_ID = "task_12345678"
HANG = "hang"
TASK_SUMMARY = {"status": "success", "media_urls": [RESULT], "credits": 6.0, "duration_s": 4.2}


def api(code: int, retry_after: float | None = None) -> errors.ApiError:
    """The protocol error the hook's one attempt raises for ``code``."""
    return envelope.error_for_code(code, f"crun error {code}", retry_after=retry_after)


class StubHook:
    """
    The three things ``watch_job`` uses of a hook.

    ``aget_job`` answers from a script (data, an exception to raise, or :data:`HANG`); the last
    answer repeats. Every read is recorded with the fake clock's time.
    """

    def __init__(self, clock: FakeClock, *answers: Any, max_retries: int = 2) -> None:
        self.clock = clock
        self.answers = list(answers)
        self.settings = CrunConnectionSettings(
            base_url="http://127.0.0.1:1/api/v1", api_key="stub-key", max_retries=max_retries
        )
        self.reads: list[tuple[str, str, float]] = []
        self.session: list[str] = []
        self.cancelled = False

    async def aget_settings(self) -> CrunConnectionSettings:
        return self.settings

    @asynccontextmanager
    async def async_session(self) -> AsyncIterator[None]:
        self.session.append("open")
        try:
            yield
        finally:
            self.session.append("closed")

    async def aget_job(self, kind: jobs.JobKind, job_id: str) -> dict[str, Any]:
        assert self.session[-1:] == ["open"], "a read outside the pooled session"
        self.reads.append((kind.id_key, job_id, self.clock.time()))
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if answer == HANG:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled = True
                raise
        if isinstance(answer, BaseException):
            raise answer
        return dict(answer)

    @property
    def read_times(self) -> list[float]:
        return [at - START for _, _, at in self.reads]


class RecordingLog:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def info(self, message: str, *args: Any) -> None:
        self.lines.append(("info", message % args))

    def warning(self, message: str, *args: Any) -> None:
        self.lines.append(("warning", message % args))


START = 1_800_000_000.0


async def watch_for(
    hook: StubHook,
    *,
    kind: jobs.JobKind = jobs.TASK,
    poll_interval: float = 10.0,
    deadline_in: float = 600.0,
    limit: str = "timeout",
    log: RecordingLog | None = None,
) -> dict[str, Any]:
    # A guard, not a timing check: the fake clock never waits, so a loop that never ends fails here.
    async with asyncio.timeout(5):
        return await watch_job(
            hook,  # type: ignore[arg-type]
            kind,
            JOB_ID,
            poll_interval=poll_interval,
            deadline=hook.clock.time() + deadline_in,
            limit=limit,
            clock=hook.clock,
            log=log or RecordingLog(),
        )


def backoffs(clock: FakeClock) -> list[float]:
    """The sleeps after the first-poll jitter."""
    return clock.sleeps[1:]


# --------------------------------------------------------------------------------------------
# First poll and the poll rhythm


@pytest.mark.parametrize(
    ("jitter", "poll_interval", "deadline_in", "first_wait"),
    [
        (0.5, 8.0, 600.0, 4.0),
        (0.25, 8.0, 600.0, 2.0),
        (0.9, 10.0, 600.0, 9.0),
        (0.5, 10.0, 4.0, 2.0),
    ],
    ids=["half-of-8s", "quarter-of-8s", "most-of-10s", "bounded-by-a-near-deadline"],
)
async def test_first_poll_waits_exactly_the_clocks_jitter(
    jitter: float, poll_interval: float, deadline_in: float, first_wait: float
) -> None:
    clock = FakeClock(start=START, jitter=jitter)
    hook = StubHook(clock, task_data("success"))

    assert await watch_for(hook, poll_interval=poll_interval, deadline_in=deadline_in) == TASK_SUMMARY

    assert clock.sleeps == [first_wait]
    assert hook.read_times == [first_wait]


async def test_each_poll_is_exactly_one_read_one_poll_interval_apart() -> None:
    clock = FakeClock(start=START)
    hook = StubHook(
        clock, task_data("pending"), task_data("running"), task_data("running"), task_data("success")
    )

    assert await watch_for(hook, poll_interval=10) == TASK_SUMMARY

    assert hook.read_times == [5.0, 15.0, 25.0, 35.0]
    assert clock.sleeps == [5.0, 10.0, 10.0, 10.0]
    assert {(kind, job_id) for kind, job_id, _ in hook.reads} == {("crun_task_id", JOB_ID)}


async def test_a_detection_is_read_as_a_detection() -> None:
    clock = FakeClock(start=START)
    hook = StubHook(clock, detection_data("processing"), detection_data())

    result = await watch_for(hook, kind=jobs.DETECTION)

    assert result == {"detect_id": DETECT_ID, "faces": [{"id": 0, "link": FACE_0}, {"id": 1, "link": FACE_1}]}
    assert [kind for kind, _, _ in hook.reads] == ["detect_task_id", "detect_task_id"]


async def test_every_read_happens_inside_one_session_closed_at_the_end() -> None:
    clock = FakeClock(start=START)
    hook = StubHook(clock, task_data("running"), api(422))

    with pytest.raises(errors.ValidationError):
        await watch_for(hook)

    assert len(hook.reads) == 2
    assert hook.session == ["open", "closed"]


# --------------------------------------------------------------------------------------------
# Transient failures


async def test_backoff_honours_retry_after_first_then_grows_exponentially() -> None:
    clock = FakeClock(start=START)
    hook = StubHook(clock, api(429, retry_after=7), api(500), api(502), task_data("success"), max_retries=3)

    assert await watch_for(hook) == TASK_SUMMARY

    assert len(hook.reads) == 4
    waits = backoffs(clock)
    assert waits[0] == 7.0
    assert 1.0 <= waits[1] <= 2.0
    assert 2.0 <= waits[2] <= 4.0


async def test_backoff_without_retry_after_is_exponential_from_the_first_failure() -> None:
    clock = FakeClock(start=START)
    hook = StubHook(clock, api(500), api(455), api(503), task_data("success"), max_retries=3)

    await watch_for(hook)

    low_high = [(0.5, 1.0), (1.0, 2.0), (2.0, 4.0)]
    assert [low <= wait <= high for wait, (low, high) in zip(backoffs(clock), low_high, strict=True)] == [
        True
    ] * 3


@pytest.mark.parametrize("max_retries", [0, 1, 2, 4], ids=["0-retries", "1-retry", "2-retries", "4-retries"])
async def test_gives_up_after_max_retries_plus_one_failures_raising_the_last(max_retries: int) -> None:
    clock = FakeClock(start=START)
    failures = [api(code) for code in [500, 502, 503, 504, 500][: max_retries + 1]]
    hook = StubHook(clock, *failures, task_data("success"), max_retries=max_retries)

    with pytest.raises(errors.ServerError) as raised:
        await watch_for(hook)

    assert raised.value is failures[-1]
    assert len(hook.reads) == max_retries + 1
    assert len(backoffs(clock)) == max_retries


async def test_a_successful_read_resets_the_failure_count() -> None:
    clock = FakeClock(start=START)
    hook = StubHook(
        clock,
        api(500),
        api(500),
        task_data("running"),
        api(500),
        api(500),
        task_data("success"),
        max_retries=2,
    )

    assert await watch_for(hook) == TASK_SUMMARY
    assert len(hook.reads) == 6


async def test_transport_failures_are_retried_like_server_errors() -> None:
    clock = FakeClock(start=START)
    reset = errors.TransportError("Crun TaskInfo: ServerDisconnectedError", request_sent=True)
    hook = StubHook(clock, reset, task_data("success"))

    assert await watch_for(hook) == TASK_SUMMARY
    assert len(hook.reads) == 2


async def test_each_failed_poll_is_logged_with_the_count_and_the_wait() -> None:
    clock = FakeClock(start=START)
    log = RecordingLog()
    hook = StubHook(clock, api(429, retry_after=7), task_data("success"))

    await watch_for(hook, log=log)

    assert [line for level, line in log.lines if level == "warning"] == [
        f"Crun task {JOB_ID}: poll failed (Crun API error 429: crun error 429), 1 of 2 allowed in a row; "
        "polling again in 7.0 s."
    ]


# --------------------------------------------------------------------------------------------
# Permanent outcomes end the wait at once


@pytest.mark.parametrize(
    "code", [401, 402, 404, 418, 422, 505], ids=["401", "402", "404", "418-client", "422", "505"]
)
async def test_permanent_error_ends_the_wait_after_one_read(code: int) -> None:
    clock = FakeClock(start=START)
    error = api(code)
    hook = StubHook(clock, error, task_data("success"))

    with pytest.raises(errors.ApiError) as raised:
        await watch_for(hook)

    assert raised.value is error
    assert len(hook.reads) == 1
    assert backoffs(clock) == []


async def test_501_on_a_read_is_the_jobs_failure() -> None:
    clock = FakeClock(start=START)
    hook = StubHook(clock, task_data("running"), api(501), task_data("success"))

    with pytest.raises(errors.JobFailedError) as raised:
        await watch_for(hook)

    assert type(raised.value) is errors.JobFailedError
    assert str(raised.value) == f"Crun task {JOB_ID} failed: crun error 501 (code 501)"
    assert raised.value.job_id == JOB_ID
    assert len(hook.reads) == 2


async def test_failed_job_raises_with_crun_explanation() -> None:
    clock = FakeClock(start=START)
    hook = StubHook(clock, task_data("running"), task_data("failed"))

    with pytest.raises(errors.JobFailedError) as raised:
        await watch_for(hook)

    assert str(raised.value) == f"Crun task {JOB_ID} failed: the model crashed (code 500)"


# --------------------------------------------------------------------------------------------
# The deadline


@pytest.mark.parametrize("limit", ["timeout", "execution_timeout"], ids=["timeout", "execution-timeout"])
async def test_deadline_raises_a_timeout_naming_what_set_it(limit: str) -> None:
    clock = FakeClock(start=START)
    hook = StubHook(clock, task_data("running"))

    with pytest.raises(errors.JobTimeoutError) as raised:
        await watch_for(hook, poll_interval=10, deadline_in=30, limit=limit)

    assert raised.value.limit == limit
    assert f"(its {limit})" in str(raised.value)
    assert raised.value.job_id == JOB_ID
    assert "Last status: 'running'" in str(raised.value)
    # The last sleep is cut short so the last poll happens right at the deadline.
    assert hook.read_times == [5.0, 15.0, 25.0, 30.0]
    assert clock.now == START + 30


async def test_deadline_while_polls_fail_names_the_last_failure() -> None:
    clock = FakeClock(start=START)
    hook = StubHook(clock, api(500), max_retries=50)

    with pytest.raises(errors.JobTimeoutError) as raised:
        await watch_for(hook, poll_interval=10, deadline_in=6)

    assert "Last poll failed: Crun API error 500: crun error 500" in str(raised.value)
    assert clock.now == START + 6


@pytest.mark.parametrize(
    ("deadline_in", "reads", "raised"),
    [(100.5, 3, errors.JobTimeoutError), (150.5, 4, errors.RateLimitError)],
    ids=["deadline-cuts-the-retries-short -> timeout", "retries-used-up-at-the-deadline -> the-error"],
)
async def test_retry_after_waits_end_at_the_deadline(
    deadline_in: float, reads: int, raised: type[errors.CrunProtocolError]
) -> None:
    """The blocking wait's table too (tests/unit/hooks/test_crun.py); the first poll is at 0.5 s."""
    clock = FakeClock(start=START)
    hook = StubHook(clock, api(429, retry_after=60), max_retries=3)

    with pytest.raises(errors.CrunProtocolError) as caught:
        await watch_for(hook, poll_interval=1, deadline_in=deadline_in)

    assert type(caught.value) is raised
    assert len(hook.read_times) == reads
    assert clock.now == START + deadline_in
    assert "Crun API error 429" in str(caught.value)


async def test_an_expired_deadline_still_polls_once() -> None:
    clock = FakeClock(start=START)
    hook = StubHook(clock, task_data("success"))

    assert await watch_for(hook, deadline_in=-3600) == TASK_SUMMARY
    assert clock.sleeps == [0.0]


async def test_an_expired_deadline_times_out_after_that_one_poll() -> None:
    clock = FakeClock(start=START)
    hook = StubHook(clock, task_data("running"))

    with pytest.raises(errors.JobTimeoutError):
        await watch_for(hook, deadline_in=-3600)

    assert len(hook.reads) == 1


@pytest.mark.parametrize(
    "deadline_in", [-60.0, 0.0, 0.05], ids=["deadline-passed", "deadline-now", "just-ahead"]
)
async def test_a_hanging_read_cannot_carry_the_wait_past_deadline_and_grace(
    monkeypatch: pytest.MonkeyPatch, deadline_in: float
) -> None:
    # The fake clock never moves while the read hangs; only the loop's own bound on each read
    # (the time left, or the grace for a last poll) can end it. Without that bound, watch_for's
    # guard raises a plain TimeoutError instead of the JobTimeoutError expected here.
    monkeypatch.setattr(watch, "LAST_POLL_GRACE_SECONDS", 0.05)
    clock = FakeClock(start=START)
    hook = StubHook(clock, HANG)

    with pytest.raises(errors.JobTimeoutError) as raised:
        await watch_for(hook, deadline_in=deadline_in, limit="execution_timeout")

    assert hook.cancelled
    assert len(hook.reads) == 1
    assert raised.value.limit == "execution_timeout"


# --------------------------------------------------------------------------------------------
# What is logged


async def test_status_changes_are_logged_once_each_dated_from_creation() -> None:
    clock = FakeClock(start=START + 20)  # task_data's create_at is START
    log = RecordingLog()
    hook = StubHook(
        clock, task_data("pending"), task_data("pending"), task_data("running"), task_data("success")
    )

    await watch_for(hook, log=log)

    assert [line for level, line in log.lines if " -> " in line] == [
        f"Crun task {JOB_ID}: (start) -> pending, 25.0 s after it was created",
        f"Crun task {JOB_ID}: pending -> running, 45.0 s after it was created",
        f"Crun task {JOB_ID}: running -> success, 55.0 s after it was created",
    ]


async def test_an_unknown_status_is_warned_about_once_and_polling_goes_on() -> None:
    clock = FakeClock(start=START)
    log = RecordingLog()
    hook = StubHook(clock, task_data("queued_elsewhere"), task_data("queued_elsewhere"), task_data("success"))

    assert await watch_for(hook, log=log) == TASK_SUMMARY

    assert [line for level, line in log.lines if level == "warning"] == [
        f"Crun task {JOB_ID}: unknown status 'queued_elsewhere', treating it as not finished"
    ]
