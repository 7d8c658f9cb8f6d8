"""The protocol's errors: their kinds, what is permanent, and their round trip through plain fields."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from airflow_provider_crun.protocol import errors

FUZZ = settings(max_examples=300, deadline=None)

# One instance of every class, each with fields that differ from the defaults, so a round trip
# that drops a field shows.
EXAMPLES: list[errors.CrunProtocolError] = [
    errors.CrunProtocolError("something odd"),
    errors.ConfigError("the connection has no API key"),
    errors.InputError("face id 7 was not detected"),
    errors.TransportError("connection reset", request_sent=False),
    errors.ApiError(302, "a moved endpoint", http_status=200, retry_after=None),
    errors.ClientError(418, "teapot"),
    errors.AuthError(401, "bad key"),
    errors.InsufficientCreditsError(402, "no credits"),
    errors.NotFoundError(404, "no such task"),
    errors.ValidationError(422, "image_url is required"),
    errors.RateLimitError(429, "slow down", retry_after=7.5),
    errors.ServiceUnavailableError(455, "maintenance", http_status=200, retry_after=30.0),
    errors.ServerError(502, "bad gateway"),
    errors.GenerationFailedError(501, "no face found"),
    errors.FeatureDisabledError(505, "feature disabled"),
    errors.MalformedResponseError(200, "not an envelope"),
    errors.RedirectError(302, "redirect refused"),
    errors.JobFailedError("Crun task t1 failed", job_id="t1"),
    errors.JobTimeoutError("Crun task t1 is late", job_id="t1", limit="execution_timeout"),
    errors.CreationUnknownError("CreateTask may have created a task"),
]
EXAMPLE_IDS = [error.kind for error in EXAMPLES]

ATTRIBUTES = ("message", "code", "http_status", "retry_after", "request_sent", "job_id", "limit")
MISSING = object()


def attributes(error: errors.CrunProtocolError) -> dict[str, Any]:
    return {name: getattr(error, name, MISSING) for name in ATTRIBUTES}


def test_examples_cover_every_error_class_and_kind() -> None:
    defined = {
        value
        for value in vars(errors).values()
        if isinstance(value, type) and issubclass(value, errors.CrunProtocolError)
    }
    # A class missing here, or two classes sharing a kind, would drop out of ERRORS_BY_KIND.
    assert set(errors.ERRORS_BY_KIND.values()) == defined
    assert {type(error) for error in EXAMPLES} == defined


@pytest.mark.parametrize(
    ("kind", "permanent"),
    [
        ("error", False),
        ("config", True),
        ("input", True),
        ("transport", False),
        ("api", False),
        ("client", True),
        ("auth", True),
        ("credits", True),
        ("not_found", True),
        ("validation", True),
        ("rate_limit", False),
        ("unavailable", False),
        ("server", False),
        ("generation_failed", True),
        ("feature_disabled", True),
        ("malformed", False),
        ("redirect", True),
        ("job_failed", True),
        ("timeout", False),
        ("creation_unknown", True),
    ],
    ids=lambda value: str(value),
)
def test_kind_and_permanence(kind: str, permanent: bool) -> None:
    error = next(error for error in EXAMPLES if error.kind == kind)
    assert errors.ERRORS_BY_KIND[kind] is type(error)
    assert error.permanent is permanent
    assert error.fields()["permanent"] is permanent


@pytest.mark.parametrize("error", EXAMPLES, ids=EXAMPLE_IDS)
def test_fields_round_trip(error: errors.CrunProtocolError) -> None:
    fields = json.loads(json.dumps(error.fields()))

    rebuilt = errors.error_from_fields(fields)

    assert type(rebuilt) is type(error)
    assert attributes(rebuilt) == attributes(error)
    assert rebuilt.fields() == error.fields()
    assert str(rebuilt) == str(error)


@pytest.mark.parametrize(
    ("error", "extra_fields"),
    [
        (errors.CrunProtocolError("m"), {}),
        (errors.TransportError("m", request_sent=True), {"request_sent": True}),
        (
            errors.RateLimitError(429, "m", http_status=200, retry_after=2.0),
            {"code": 429, "http_status": 200, "retry_after": 2.0},
        ),
        (errors.JobFailedError("m", job_id="d1"), {"job_id": "d1"}),
        (errors.JobTimeoutError("m", job_id="d1", limit="timeout"), {"job_id": "d1", "limit": "timeout"}),
    ],
    ids=["base", "transport-request-sent", "api-code-status-retry-after", "job-id", "timeout-limit"],
)
def test_fields_name_kind_message_permanence_and_own_fields(
    error: errors.CrunProtocolError, extra_fields: dict[str, Any]
) -> None:
    assert error.fields() == {
        "kind": error.kind,
        "message": "m",
        "permanent": error.permanent,
        **extra_fields,
    }


def test_api_error_reads_as_crun_api_error_with_code() -> None:
    error = errors.ValidationError(422, "image_url is required")
    assert str(error) == "Crun API error 422: image_url is required"
    assert (error.code, error.message, error.http_status, error.retry_after) == (
        422,
        "image_url is required",
        422,
        None,
    )


@pytest.mark.parametrize(
    ("fields", "expected_class", "expected"),
    [
        ({"kind": "transport", "message": "m"}, errors.TransportError, {"request_sent": True}),
        ({"kind": "timeout", "message": "m"}, errors.JobTimeoutError, {"limit": "timeout", "job_id": None}),
        ({"kind": "job_failed", "job_id": 12}, errors.JobFailedError, {"job_id": "12"}),
        (
            {"kind": "rate_limit", "code": 429},
            errors.RateLimitError,
            {"http_status": 429, "retry_after": None},
        ),
        ({"kind": "rate_limit", "code": 429, "retry_after": 3}, errors.RateLimitError, {"retry_after": 3.0}),
        ({"kind": "auth"}, errors.AuthError, {"message": "", "code": 0}),
    ],
    ids=[
        "transport-without-request-sent-assumes-sent",
        "timeout-without-limit-is-timeout",
        "numeric-job-id-becomes-text",
        "api-without-status-uses-code",
        "integer-retry-after-becomes-float",
        "api-without-code-or-message",
    ],
)
def test_missing_fields_get_safe_defaults(
    fields: dict[str, Any], expected_class: type[errors.CrunProtocolError], expected: dict[str, Any]
) -> None:
    rebuilt = errors.error_from_fields(fields)
    assert type(rebuilt) is expected_class
    assert {name: getattr(rebuilt, name) for name in expected} == expected


@pytest.mark.parametrize(
    "fields",
    [None, "boom", ["auth"], {"kind": "from-a-newer-release", "message": "m"}, {"message": "m"}],
    ids=["none", "text", "list", "unknown-kind", "no-kind"],
)
def test_anything_unrecognised_becomes_the_retryable_base(fields: object) -> None:
    rebuilt = errors.error_from_fields(fields)
    assert type(rebuilt) is errors.CrunProtocolError
    assert rebuilt.permanent is False


def test_unrecognised_fields_keep_a_message_a_human_can_use() -> None:
    assert (
        errors.error_from_fields({"kind": "new", "message": "from the future"}).message == "from the future"
    )
    assert errors.error_from_fields(["auth"]).message == "an error without details: ['auth']"


# ---------------------------------------------------------------------------------------------
# Fuzzing error_from_fields: it reads trigger events out of the metadata database.

JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
JSON = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=12,
)
KINDS = st.sampled_from(sorted(errors.ERRORS_BY_KIND)) | st.text(max_size=12)


def assert_well_typed(error: object, fields: object) -> None:
    assert isinstance(error, errors.CrunProtocolError)
    kind = fields.get("kind") if isinstance(fields, dict) else None
    assert type(error) is errors.ERRORS_BY_KIND.get(str(kind), errors.CrunProtocolError)
    assert isinstance(error.message, str)
    if isinstance(error, errors.ApiError):
        assert type(error.code) is int
        assert type(error.http_status) is int
        assert error.retry_after is None or type(error.retry_after) is float
    if isinstance(error, errors.TransportError):
        assert type(error.request_sent) is bool
    if isinstance(error, errors.JobFailedError):
        assert error.job_id is None or isinstance(error.job_id, str)
    if isinstance(error, errors.JobTimeoutError):
        assert isinstance(error.limit, str)
    json.dumps(error.fields())


WELL_TYPED_FIELDS = st.fixed_dictionaries(
    {"kind": KINDS},
    optional={
        "message": st.text(max_size=30),
        "permanent": st.booleans(),
        "code": st.integers(min_value=100, max_value=599),
        "http_status": st.integers(min_value=100, max_value=599),
        "retry_after": st.none() | st.floats(min_value=0, max_value=60),
        "request_sent": st.booleans(),
        "job_id": st.none() | st.text(min_size=1, max_size=12),
        "limit": st.sampled_from(["timeout", "execution_timeout"]),
    },
)


@FUZZ
@given(fields=WELL_TYPED_FIELDS)
def test_fuzz_error_from_fields_of_well_typed_fields(fields: dict[str, Any]) -> None:
    assert_well_typed(errors.error_from_fields(fields), fields)


ANY_FIELDS = JSON | st.fixed_dictionaries(
    {"kind": KINDS},
    optional={
        name: JSON
        for name in ("message", "code", "http_status", "retry_after", "request_sent", "job_id", "limit")
    },
)


@FUZZ
@given(fields=ANY_FIELDS)
@example(fields={"kind": "api", "code": "abc"})
@example(fields={"kind": "rate_limit", "code": 429, "retry_after": "soon"})
@example(fields={"kind": "server", "code": 1e400})
@example(fields={"kind": "api", "code": 1, "http_status": [1]})
def test_fuzz_error_from_fields_of_any_json(fields: object) -> None:
    assert_well_typed(errors.error_from_fields(fields), fields)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"kind": "api", "code": "abc"}, (0, 0, None)),
        ({"kind": "api", "code": [1]}, (0, 0, None)),
        ({"kind": "server", "code": float("inf")}, (0, 0, None)),
        ({"kind": "server", "code": 502.5}, (0, 0, None)),
        ({"kind": "server", "code": 502.0}, (502, 502, None)),
        ({"kind": "api", "code": True}, (0, 0, None)),
        ({"kind": "rate_limit", "code": 429, "retry_after": "soon"}, (429, 429, None)),
        ({"kind": "rate_limit", "code": 429, "retry_after": float("nan")}, (429, 429, None)),
        ({"kind": "rate_limit", "code": 429, "retry_after": True}, (429, 429, None)),
        ({"kind": "api", "code": 400, "http_status": [1]}, (400, 400, None)),
        ({"kind": "api", "code": 400, "http_status": "200"}, (400, 400, None)),
    ],
    ids=[
        "code-text",
        "code-a-list",
        "code-infinite",
        "code-fractional",
        "code-whole-float",
        "code-boolean",
        "retry-after-text",
        "retry-after-nan",
        "retry-after-boolean",
        "http-status-a-list",
        "http-status-text",
    ],
)
def test_unusable_numbers_in_fields_are_dropped_not_raised(
    fields: dict[str, Any], expected: tuple[int, int, float | None]
) -> None:
    rebuilt = errors.error_from_fields(fields)
    assert isinstance(rebuilt, errors.ApiError)
    assert (rebuilt.code, rebuilt.http_status, rebuilt.retry_after) == expected
