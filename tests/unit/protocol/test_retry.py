"""The one retry predicate, what a failed creation may have created, and the backoff."""

from __future__ import annotations

import random

import pytest

from airflow_provider_crun.protocol import errors, retry

NOT_SENT = errors.TransportError("connection refused", request_sent=False)
SENT = errors.TransportError("read timeout", request_sent=True)

# (error, retried on a read, retried on a creation, may a failed creation have created a job)
CASES = [
    (errors.RateLimitError(429, "x"), True, True, False),
    (errors.ServiceUnavailableError(455, "x"), True, True, False),
    (errors.ServerError(500, "x"), True, False, True),
    (errors.ServerError(502, "x"), True, False, True),
    (errors.ServerError(503, "x"), True, False, True),
    (errors.ServerError(504, "x"), True, False, True),
    (errors.ServerError(599, "x"), False, False, True),
    (errors.MalformedResponseError(200, "x"), True, False, True),
    (NOT_SENT, True, True, False),
    (SENT, True, False, True),
    (errors.ApiError(302, "x"), False, False, True),
    (errors.ClientError(418, "x"), False, False, False),
    (errors.AuthError(401, "x"), False, False, False),
    (errors.InsufficientCreditsError(402, "x"), False, False, False),
    (errors.NotFoundError(404, "x"), False, False, False),
    (errors.ValidationError(422, "x"), False, False, False),
    (errors.GenerationFailedError(501, "x"), False, False, False),
    (errors.FeatureDisabledError(505, "x"), False, False, False),
    (errors.RedirectError(302, "x"), False, False, False),
    (errors.JobFailedError("x", job_id="t1"), False, False, False),
    (errors.JobTimeoutError("x", job_id="t1"), False, False, False),
    (errors.ConfigError("x"), False, False, False),
    (ValueError("bug"), False, False, False),
]
CASE_IDS = [
    "429-rate-limited",
    "455-maintenance",
    "500-server-error",
    "502-bad-gateway",
    "503-unavailable",
    "504-gateway-timeout",
    "599-undocumented-5xx",
    "malformed-body",
    "connection-refused-before-send",
    "timeout-after-send",
    "undocumented-non-error-code",
    "undocumented-4xx",
    "401-auth",
    "402-credits",
    "404-not-found",
    "422-validation",
    "501-generation-failed",
    "505-feature-disabled",
    "redirect",
    "job-failed",
    "job-timeout",
    "config",
    "programming-error",
]


@pytest.mark.parametrize(("error", "on_read", "on_create", "_created"), CASES, ids=CASE_IDS)
def test_is_retryable(error: BaseException, on_read: bool, on_create: bool, _created: bool) -> None:
    assert retry.is_retryable(error, creates_billable=False) is on_read
    assert retry.is_retryable(error, creates_billable=True) is on_create


@pytest.mark.parametrize(("error", "_read", "_create", "created"), CASES, ids=CASE_IDS)
def test_may_have_created(error: BaseException, _read: bool, _create: bool, created: bool) -> None:
    assert retry.may_have_created(error) is created


@pytest.mark.parametrize("error", [case[0] for case in CASES], ids=CASE_IDS)
def test_a_creation_is_resent_only_when_nothing_can_have_been_created(error: BaseException) -> None:
    assert not (retry.is_retryable(error, creates_billable=True) and retry.may_have_created(error))


def test_backoff_honours_retry_after() -> None:
    error = errors.RateLimitError(429, "x", retry_after=7.0)
    assert retry.backoff_seconds(1, error) == 7.0
    assert retry.backoff_seconds(9, errors.RateLimitError(429, "x", retry_after=0.0)) == 0.0


@pytest.mark.parametrize(
    ("attempt", "ceiling"),
    [(0, 1.0), (1, 1.0), (2, 2.0), (3, 4.0), (5, 16.0), (6, 30.0), (40, 30.0)],
    ids=["attempt-0", "attempt-1", "attempt-2", "attempt-3", "attempt-5", "capped-6", "capped-40"],
)
def test_backoff_is_bounded_exponential_with_equal_jitter(attempt: int, ceiling: float) -> None:
    rng = random.Random(1)
    waits = [retry.backoff_seconds(attempt, errors.ServerError(500, "x"), rng=rng) for _ in range(200)]
    assert all(ceiling / 2 <= wait <= ceiling for wait in waits)
    assert len(set(waits)) > 1


def test_backoff_base_and_cap_are_parameters() -> None:
    rng = random.Random(2)
    assert all(5.0 <= retry.backoff_seconds(3, base=10.0, cap=10.0, rng=rng) <= 10.0 for _ in range(50))
