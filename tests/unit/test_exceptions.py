"""Every protocol error has an Airflow twin: same class family, same fields, same message."""

from __future__ import annotations

import json
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_crun import exceptions
from airflow_provider_crun.protocol import errors

# Values unlike every default, so a twin that drops or resets a field shows.
ALL_FIELDS: dict[str, Any] = {
    "message": "what went wrong",
    "code": 429,
    "http_status": 200,
    "retry_after": 2.5,
    "request_sent": False,
    "job_id": "t1",
    "limit": "execution_timeout",
}
ATTRIBUTES = ("message", "code", "http_status", "retry_after", "request_sent", "job_id", "limit")
MISSING = object()
KINDS = sorted(errors.ERRORS_BY_KIND)


def example(kind: str) -> errors.CrunProtocolError:
    return errors.ERRORS_BY_KIND[kind].from_fields({"kind": kind, **ALL_FIELDS})


def attributes(error: BaseException) -> dict[str, Any]:
    return {name: getattr(error, name, MISSING) for name in ATTRIBUTES}


@pytest.mark.parametrize("kind", KINDS, ids=KINDS)
def test_airflow_error_is_a_faithful_twin(kind: str) -> None:
    error = example(kind)

    twin = exceptions.airflow_error(error)

    assert isinstance(twin, exceptions.CrunError)
    assert isinstance(twin, type(error))
    assert (twin.kind, twin.permanent) == (error.kind, error.permanent)
    assert attributes(twin) == attributes(error)
    assert twin.fields() == error.fields()
    assert str(twin) == str(error)


# Whether each kind fails the task without an Airflow retry.
FAILS_WITHOUT_RETRY = {
    "api": False,
    "auth": True,
    "client": True,
    "config": True,
    "creation_unknown": True,
    "credits": True,
    "error": False,
    "feature_disabled": True,
    "generation_failed": True,
    "input": True,
    "job_failed": True,
    "malformed": False,
    "not_found": True,
    "rate_limit": False,
    "redirect": True,
    "server": False,
    "timeout": False,
    "transport": False,
    "unavailable": False,
    "validation": True,
}


def test_permanence_table_covers_every_kind() -> None:
    assert sorted(FAILS_WITHOUT_RETRY) == KINDS


@pytest.mark.parametrize(
    ("kind", "fails_without_retry"),
    sorted(FAILS_WITHOUT_RETRY.items()),
    ids=[f"{kind}-{'fails' if fails else 'retries'}" for kind, fails in sorted(FAILS_WITHOUT_RETRY.items())],
)
def test_airflow_fail_exception_exactly_when_permanent(kind: str, fails_without_retry: bool) -> None:
    error = example(kind)
    twin = exceptions.airflow_error(error)
    assert error.permanent is fails_without_retry
    assert isinstance(twin, AirflowFailException) is fails_without_retry


@pytest.mark.parametrize("kind", KINDS, ids=KINDS)
def test_an_airflow_error_maps_to_itself(kind: str) -> None:
    twin = exceptions.airflow_error(example(kind))
    assert exceptions.airflow_error(twin) is twin


def test_a_subclass_maps_to_its_nearest_twin() -> None:
    class PickyValidationError(errors.ValidationError):
        pass

    twin = exceptions.airflow_error(PickyValidationError(422, "picky"))
    assert type(twin) is exceptions.CrunValidationError
    assert str(twin) == "Crun API error 422: picky"


@pytest.mark.parametrize("kind", KINDS, ids=KINDS)
def test_error_from_event_round_trip(kind: str) -> None:
    error = example(kind)
    fields = json.loads(json.dumps(error.fields()))

    rebuilt = exceptions.error_from_event(fields)

    assert type(rebuilt) is type(exceptions.airflow_error(error))
    assert attributes(rebuilt) == attributes(error)
    assert str(rebuilt) == str(error)


@pytest.mark.parametrize(
    "fields",
    [{"kind": "from-a-newer-release", "message": "new"}, {"message": "new"}, None, "new"],
    ids=["unknown-kind", "no-kind", "none", "not-a-dict"],
)
def test_unknown_kind_is_a_retryable_unclassified_error(fields: object) -> None:
    rebuilt = exceptions.error_from_event(fields)
    assert type(rebuilt) is exceptions.CrunUnclassifiedError
    assert not isinstance(rebuilt, AirflowFailException)
    assert rebuilt.permanent is False


def test_unknown_kind_keeps_its_message() -> None:
    assert str(exceptions.error_from_event({"kind": "from-a-newer-release", "message": "new"})) == "new"


@pytest.mark.parametrize(
    ("error", "twin_class"),
    [
        (errors.ValidationError(422, "bad"), exceptions.CrunValidationError),
        (errors.RateLimitError(429, "slow", retry_after=3.0), exceptions.CrunRateLimitError),
        (errors.TransportError("reset", request_sent=True), exceptions.CrunTransportError),
        (errors.JobTimeoutError("late", job_id="t1"), exceptions.CrunTimeoutError),
        (errors.CreationUnknownError("maybe"), exceptions.CrunCreationUnknownError),
        (errors.CrunProtocolError("odd"), exceptions.CrunUnclassifiedError),
    ],
    ids=["422-validation", "429-rate-limit", "transport", "timeout", "creation-unknown", "base-unclassified"],
)
def test_named_twins(error: errors.CrunProtocolError, twin_class: type[exceptions.CrunError]) -> None:
    assert type(exceptions.airflow_error(error)) is twin_class
