"""The ``{code, message, data}`` envelope: from an HTTP answer to ``data`` or the matching error."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_crun.protocol import envelope, errors

FUZZ = settings(max_examples=300, deadline=None)

DOCUMENTED_ERRORS = [
    (401, errors.AuthError),
    (402, errors.InsufficientCreditsError),
    (404, errors.NotFoundError),
    (422, errors.ValidationError),
    (429, errors.RateLimitError),
    (455, errors.ServiceUnavailableError),
    (500, errors.ServerError),
    (501, errors.GenerationFailedError),
    (505, errors.FeatureDisabledError),
]
ERROR_IDS = [str(code) for code, _ in DOCUMENTED_ERRORS]


def body(code: Any = 200, message: Any = "success", data: Any = None) -> bytes:
    return json.dumps({"code": code, "message": message, "data": data}).encode()


class TestParseResponse:
    def test_success_returns_data(self) -> None:
        assert envelope.parse_response(200, body(data={"task_id": "t"}), {}) == {"task_id": "t"}

    def test_success_without_data_returns_none(self) -> None:
        assert envelope.parse_response(200, body(data=None), {}) is None

    def test_unknown_extra_fields_are_kept(self) -> None:
        data = {"task_id": "t", "brand_new_field": [1, 2]}
        assert envelope.parse_response(200, body(data=data), {}) == data

    @pytest.mark.parametrize(("code", "error_class"), DOCUMENTED_ERRORS, ids=ERROR_IDS)
    def test_error_as_http_status(self, code: int, error_class: type[errors.ApiError]) -> None:
        with pytest.raises(error_class) as raised:
            envelope.parse_response(code, body(code, "crun says no"), {})
        assert type(raised.value) is error_class
        assert (raised.value.code, raised.value.message, raised.value.http_status) == (
            code,
            "crun says no",
            code,
        )

    @pytest.mark.parametrize(("code", "error_class"), DOCUMENTED_ERRORS, ids=ERROR_IDS)
    def test_error_inside_http_200(self, code: int, error_class: type[errors.ApiError]) -> None:
        with pytest.raises(error_class) as raised:
            envelope.parse_response(200, body(code, "crun says no"), {})
        assert type(raised.value) is error_class
        assert (raised.value.code, raised.value.message, raised.value.http_status) == (
            code,
            "crun says no",
            200,
        )

    def test_error_status_uses_the_body_code(self) -> None:
        with pytest.raises(errors.InsufficientCreditsError, match="no credits"):
            envelope.parse_response(400, body(402, "no credits"), {})

    def test_error_status_with_a_success_body_code_uses_the_status(self) -> None:
        with pytest.raises(errors.ServiceUnavailableError) as raised:
            envelope.parse_response(455, body(200, "ok"), {})
        assert raised.value.code == 455

    def test_error_without_message_names_the_status(self) -> None:
        with pytest.raises(errors.RateLimitError) as raised:
            envelope.parse_response(200, body(429, ""), {})
        assert raised.value.message == "HTTP 200"

    @pytest.mark.parametrize("status", [502, 503, 504, 599], ids=lambda s: f"http-{s}")
    def test_undocumented_5xx_without_envelope_is_a_server_error(self, status: int) -> None:
        with pytest.raises(errors.ServerError) as raised:
            envelope.parse_response(status, b"<html>Bad gateway</html>", {})
        assert raised.value.code == status
        assert "<html>Bad gateway</html>" in raised.value.message

    def test_documented_status_without_envelope_keeps_its_class(self) -> None:
        with pytest.raises(errors.RateLimitError) as raised:
            envelope.parse_response(429, b"Too Many Requests", {"Retry-After": "4"})
        assert raised.value.retry_after == 4.0

    @pytest.mark.parametrize(
        "raw",
        [
            b"not json at all",
            b"[1, 2]",
            b'{"message": "no code"}',
            b'{"code": "200"}',
            b'{"code": true}',
            b"",
        ],
        ids=["not-json", "json-list", "no-code", "string-code", "boolean-code", "empty"],
    )
    def test_not_an_envelope_is_malformed(self, raw: bytes) -> None:
        with pytest.raises(errors.MalformedResponseError) as raised:
            envelope.parse_response(200, raw, {})
        assert raised.value.http_status == 200
        assert "not a Crun envelope" in raised.value.message

    @pytest.mark.parametrize(
        "data", [[1, 2], "task_1", 7, True], ids=["data-a-list", "data-text", "data-a-number", "data-true"]
    )
    def test_data_that_is_not_an_object_is_malformed(self, data: object) -> None:
        with pytest.raises(errors.MalformedResponseError, match="data is not an object"):
            envelope.parse_response(200, body(data=data), {})

    def test_body_snippet_is_truncated(self) -> None:
        with pytest.raises(errors.ServerError) as raised:
            envelope.parse_response(500, b"x" * 10_000, {})
        assert len(raised.value.message) < 300
        assert raised.value.message.endswith("...'")

    def test_undecodable_body_is_malformed_not_a_crash(self) -> None:
        with pytest.raises(errors.MalformedResponseError):
            envelope.parse_response(200, b"\xff\xfe\x00garbage", {})

    @pytest.mark.parametrize("status", [301, 302, 307, 308], ids=lambda s: f"http-{s}")
    def test_redirect_is_refused_and_names_the_target_host(self, status: int) -> None:
        with pytest.raises(errors.RedirectError, match=r"evil\.example.*redirects are refused") as raised:
            envelope.parse_response(status, b"", {"location": "https://evil.example/steal?key=1"})
        assert raised.value.code == status
        assert "steal" not in raised.value.message

    def test_redirect_without_location(self) -> None:
        with pytest.raises(errors.RedirectError, match="an unknown location"):
            envelope.parse_response(302, body(), {})

    @pytest.mark.parametrize(
        ("header", "expected"),
        [("3", 3.0), ("0.5", 0.5), ("-4", 0.0), ("3600", envelope.RETRY_AFTER_CAP_SECONDS), ("soon", None)],
        ids=["seconds", "fractional", "negative-clamped", "capped", "garbage-ignored"],
    )
    def test_retry_after_is_read_from_any_header_case(self, header: str, expected: float | None) -> None:
        with pytest.raises(errors.RateLimitError) as raised:
            envelope.parse_response(429, body(429, "slow down"), {"rEtRy-AfTeR": header})
        assert raised.value.retry_after == expected


class TestErrorForCode:
    @pytest.mark.parametrize(
        ("code", "error_class"),
        [
            *DOCUMENTED_ERRORS,
            (400, errors.ClientError),
            (418, errors.ClientError),
            (503, errors.ServerError),
            (599, errors.ServerError),
            (302, errors.ApiError),
            (0, errors.ApiError),
            (600, errors.ApiError),
        ],
        ids=[*ERROR_IDS, "400", "418", "503", "599", "302", "0", "600"],
    )
    def test_maps_code_to_class(self, code: int, error_class: type[errors.ApiError]) -> None:
        error = envelope.error_for_code(code, "m", http_status=200, retry_after=1.5)
        assert type(error) is error_class
        assert (error.code, error.message, error.http_status, error.retry_after) == (code, "m", 200, 1.5)


class TestRetryAfter:
    NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (None, None),
            ("", None),
            ("12", 12.0),
            ("nan", None),
            ("inf", envelope.RETRY_AFTER_CAP_SECONDS),
            ("Thu, 01 Jan 2026 12:00:10 GMT", 10.0),
            ("Thu, 01 Jan 2026 13:00:10 +0100", 10.0),
            ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
            ("Fri, 01 Jan 2027 00:00:00 GMT", envelope.RETRY_AFTER_CAP_SECONDS),
            ("not a date", None),
        ],
        ids=[
            "absent",
            "empty",
            "seconds",
            "nan-ignored",
            "infinite-capped",
            "http-date",
            "http-date-with-offset",
            "http-date-in-the-past",
            "http-date-far-ahead-capped",
            "garbage",
        ],
    )
    def test_parses(self, value: str | None, expected: float | None) -> None:
        assert envelope.parse_retry_after(value, now=self.NOW) == expected

    def test_http_date_with_unknown_zone_reads_as_utc(self) -> None:
        # RFC 5322's "-0000" zone makes parsedate_to_datetime return a naive datetime.
        assert envelope.parse_retry_after("Thu, 01 Jan 2026 12:00:10 -0000", now=self.NOW) == 10.0


class TestRequiredFields:
    @pytest.mark.parametrize(
        ("data", "expected"),
        [({"task_id": "t_1"}, "t_1"), ({"task_id": 42}, "42"), ({"task_id": 0}, "0")],
        ids=["text", "integer", "zero"],
    )
    def test_require_id(self, data: dict[str, Any], expected: str) -> None:
        assert envelope.require_id(data, "task_id", "CreateTask") == expected

    @pytest.mark.parametrize(
        "data",
        [
            None,
            [],
            {},
            {"task_id": None},
            {"task_id": ""},
            {"task_id": "  "},
            {"task_id": True},
            {"task_id": 1.5},
        ],
        ids=["no-data", "a-list", "missing", "null", "empty", "blank", "boolean", "float"],
    )
    def test_require_id_refuses(self, data: object) -> None:
        with pytest.raises(
            errors.MalformedResponseError, match="CreateTask answered without a usable 'task_id'"
        ):
            envelope.require_id(data, "task_id", "CreateTask")

    @pytest.mark.parametrize(
        ("value", "expected"), [(12, 12.0), (0.25, 0.25), (-3, -3.0)], ids=["integer", "float", "negative"]
    )
    def test_require_number(self, value: float, expected: float) -> None:
        number = envelope.require_number({"balance": value}, "balance", "balance")
        assert (number, type(number)) == (expected, float)

    @pytest.mark.parametrize(
        "data",
        [None, {}, {"balance": "12"}, {"balance": True}, {"balance": None}, {"balance": [1]}],
        ids=["no-data", "missing", "text", "boolean", "null", "a-list"],
    )
    def test_require_number_refuses(self, data: object) -> None:
        with pytest.raises(
            errors.MalformedResponseError, match="balance answered without a numeric 'balance'"
        ):
            envelope.require_number(data, "balance", "balance")


def test_snippet() -> None:
    assert envelope.snippet(b"short") == "short"
    assert envelope.snippet({"a": 1}) == '{"a": 1}'
    assert envelope.snippet(b"y" * 500) == "y" * envelope.BODY_SNIPPET_CHARS + "..."


# ---------------------------------------------------------------------------------------------
# Fuzzing: whatever Crun (or a proxy in between) answers, only ApiError subclasses escape.

JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
JSON = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=12,
)
CODES = st.sampled_from([200, 302, 401, 402, 404, 418, 422, 429, 455, 500, 501, 503, 505]) | st.integers()
STATUSES = st.sampled_from([200, 201, 204, 301, 302, 400, 401, 404, 429, 455, 500, 502, 599]) | st.integers(
    min_value=100, max_value=599
)
ENVELOPES = st.builds(
    lambda code, message, data, extra: json.dumps(
        {"code": code, "message": message, "data": data, **extra}
    ).encode(),
    CODES | JSON,
    JSON,
    JSON | st.dictionaries(st.text(max_size=8), JSON, max_size=3),
    st.dictionaries(st.text(max_size=8), JSON, max_size=2),
)
HEADER_TEXT = st.text(max_size=40)
HEADERS = st.dictionaries(
    st.sampled_from(["Retry-After", "retry-after", "Location", "Content-Type"]) | st.text(max_size=10),
    HEADER_TEXT
    | st.sampled_from(
        [
            "0",
            "3",
            "-1",
            "1e9",
            "nan",
            "Thu, 01 Jan 2026 12:00:10 GMT",
            "Thu, 01 Jan 2026 12:00:10 -0000",
            "https://evil.example/",
            "http://[::1",
            "//[",
        ]
    ),
    max_size=3,
)


def assert_sane_api_error(error: errors.ApiError, status: int) -> None:
    assert error.http_status == status
    assert type(error.code) is int
    assert error.retry_after is None or 0.0 <= error.retry_after <= envelope.RETRY_AFTER_CAP_SECONDS


@FUZZ
@given(status=STATUSES, raw=st.binary(max_size=200) | ENVELOPES, headers=HEADERS)
def test_fuzz_parse_response(status: int, raw: bytes, headers: dict[str, str]) -> None:
    try:
        data = envelope.parse_response(status, raw, headers)
    except errors.ApiError as error:
        assert_sane_api_error(error, status)
        return
    assert status < 300
    assert json.loads(raw)["code"] == envelope.SUCCESS_CODE
    assert data is None or isinstance(data, dict)


@pytest.mark.parametrize(
    "location",
    ["http://[::1", "https://evil]example/", "//["],
    ids=["unclosed-ipv6", "stray-bracket", "bare"],
)
def test_redirect_to_an_unparsable_location_is_still_refused(location: str) -> None:
    with pytest.raises(errors.RedirectError, match="an unknown location"):
        envelope.parse_response(302, b"", {"Location": location})


def test_deeply_nested_body_is_malformed_not_a_recursion_error() -> None:
    with pytest.raises(errors.MalformedResponseError):
        envelope.parse_response(200, b"[" * 100_000, {})


# Naive datetimes format with the "-0000" zone.
HTTP_DATES = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.none() | st.timezones()
).map(format_datetime)


@FUZZ
@given(value=st.none() | st.text(max_size=40) | st.floats().map(str) | HTTP_DATES)
def test_fuzz_parse_retry_after(value: str | None) -> None:
    seconds = envelope.parse_retry_after(value)
    assert seconds is None or (type(seconds) is float and 0.0 <= seconds <= envelope.RETRY_AFTER_CAP_SECONDS)


def assert_names_the_call(error: errors.MalformedResponseError, call: str) -> None:
    assert type(error) is errors.MalformedResponseError
    assert error.message.startswith(f"{call} answered without a ")


@FUZZ
@given(
    data=JSON | st.dictionaries(st.sampled_from(["task_id", "balance", "other"]), JSON, max_size=3),
    name=st.sampled_from(["task_id", "balance"]),
)
def test_fuzz_require_id_and_require_number(data: object, name: str) -> None:
    for read in (envelope.require_id, envelope.require_number):
        try:
            value = read(data, name, "SomeCall")
        except errors.MalformedResponseError as error:
            assert_names_the_call(error, "SomeCall")
            continue
        assert isinstance(data, dict)
        if read is envelope.require_id:
            assert isinstance(value, str)
            assert value.strip()
        else:
            assert type(value) is float


@pytest.mark.parametrize(
    ("body", "fragment"),
    [(b'{"code": true}', "not a Crun envelope"), (b'{"code": 200, "data": [1]}', "data is not an object")],
    ids=["code-not-an-int", "data-a-list"],
)
def test_a_malformed_envelope_names_the_call_and_the_job(body: bytes, fragment: str) -> None:
    with pytest.raises(errors.MalformedResponseError) as caught:
        envelope.parse_response(200, body, {}, call="TaskInfo task_12345678")
    assert str(caught.value).startswith("Malformed Crun answer: TaskInfo task_12345678: ")
    assert fragment in str(caught.value)
    assert "Crun API error" not in str(caught.value)
