"""The sans-I/O protocol module: no sockets, no Airflow connections."""

from __future__ import annotations

import json
import random

import pytest

from airflow_provider_crun import __version__, protocol
from airflow_provider_crun.exceptions import (
    CrunApiError,
    CrunAuthError,
    CrunConfigError,
    CrunFeatureDisabledError,
    CrunGenerationFailedError,
    CrunInsufficientCreditsError,
    CrunMalformedResponseError,
    CrunNotFoundError,
    CrunRateLimitError,
    CrunRedirectError,
    CrunServerError,
    CrunServiceUnavailableError,
    CrunTransportError,
    CrunValidationError,
)

DOCUMENTED_ERRORS = [
    (401, CrunAuthError),
    (402, CrunInsufficientCreditsError),
    (404, CrunNotFoundError),
    (422, CrunValidationError),
    (429, CrunRateLimitError),
    (455, CrunServiceUnavailableError),
    (500, CrunServerError),
    (501, CrunGenerationFailedError),
    (505, CrunFeatureDisabledError),
]
ERROR_IDS = [str(code) for code, _ in DOCUMENTED_ERRORS]


def envelope(code: int = 200, message: str = "success", data: object = None) -> bytes:
    return json.dumps({"code": code, "message": message, "data": data}).encode()


class TestBaseUrl:
    @pytest.mark.parametrize(
        ("host", "port", "expected"),
        [
            (None, None, "https://api.crun.ai/api/v1"),
            ("", None, "https://api.crun.ai/api/v1"),
            ("https://api.crun.ai", None, "https://api.crun.ai/api/v1"),
            ("api.crun.ai", None, "https://api.crun.ai/api/v1"),
            ("https://api.crun.ai/api/v1", None, "https://api.crun.ai/api/v1"),
            ("https://api.crun.ai/api/v1/", None, "https://api.crun.ai/api/v1"),
            ("  https://api.crun.ai/  ", None, "https://api.crun.ai/api/v1"),
            ("https://proxy.example.com/crun", None, "https://proxy.example.com/crun/api/v1"),
            ("http://127.0.0.1:8089", None, "http://127.0.0.1:8089/api/v1"),
            ("http://127.5.6.7:8089/api/v1", None, "http://127.5.6.7:8089/api/v1"),
            ("http://localhost", 8089, "http://localhost:8089/api/v1"),
            ("http://[::1]:9000", None, "http://[::1]:9000/api/v1"),
            ("https://api.crun.ai:8443", 9999, "https://api.crun.ai:8443/api/v1"),
        ],
        ids=[
            "empty-host-means-public-api",
            "blank-host-means-public-api",
            "https-without-prefix",
            "bare-hostname-gets-https",
            "with-api-v1",
            "with-api-v1-trailing-slash",
            "surrounding-whitespace",
            "path-prefix-kept",
            "http-loopback-ipv4",
            "http-loopback-range",
            "http-localhost-with-port-field",
            "http-loopback-ipv6",
            "port-in-host-wins",
        ],
    )
    def test_normalizes(self, host: str | None, port: int | None, expected: str) -> None:
        assert protocol.normalize_base_url(host, port) == expected

    @pytest.mark.parametrize(
        ("host", "fragment"),
        [
            ("http://api.crun.ai", "unencrypted"),
            ("http://10.0.0.5:8089", "unencrypted"),
            ("http://127.0.0.1.evil.example", "unencrypted"),
            ("ftp://api.crun.ai", r"not an http\(s\) URL"),
            ("https://", r"not an http\(s\) URL"),
        ],
        ids=["http-public-host", "http-private-ip", "http-lookalike-host", "ftp-scheme", "no-hostname"],
    )
    def test_refuses(self, host: str, fragment: str) -> None:
        with pytest.raises(CrunConfigError, match=fragment):
            protocol.normalize_base_url(host)


class TestConnectionSettings:
    def test_missing_key_names_connection_and_field(self) -> None:
        with pytest.raises(CrunConfigError, match=r"'my_crun' has no API key.*password field"):
            protocol.connection_settings(conn_id="my_crun", host=None, port=None, password="", extra={})

    def test_extras_are_read(self) -> None:
        settings = protocol.connection_settings(
            conn_id="c", host=None, port=None, password="k", extra={"timeout": "12.5", "max_retries": 2}
        )
        assert (settings.timeout, settings.max_retries) == (12.5, 2)

    def test_defaults(self) -> None:
        settings = protocol.connection_settings(conn_id="c", host=None, port=None, password="k", extra={})
        assert (settings.timeout, settings.max_retries) == (
            protocol.DEFAULT_TIMEOUT,
            protocol.DEFAULT_MAX_RETRIES,
        )

    @pytest.mark.parametrize(
        ("extra", "fragment"),
        [
            ({"timeout": "soon"}, "'timeout' must be a number"),
            ({"max_retries": -1}, "'max_retries' must be >= 0"),
        ],
        ids=["timeout-not-a-number", "negative-retries"],
    )
    def test_bad_extras(self, extra: dict[str, object], fragment: str) -> None:
        with pytest.raises(CrunConfigError, match=fragment):
            protocol.connection_settings(conn_id="c", host=None, port=None, password="k", extra=extra)

    def test_repr_hides_key(self) -> None:
        settings = protocol.connection_settings(
            conn_id="c", host=None, port=None, password="sk-very-secret", extra={}
        )
        assert "sk-very-secret" not in repr(settings)


class TestRequests:
    def test_detect_faces(self) -> None:
        request = protocol.detect_faces_request("https://img.example/a.png")
        assert (request.method, request.path, request.body, request.creates_billable) == (
            "POST",
            "/client/job/detect-face-image",
            {"image_url": "https://img.example/a.png"},
            True,
        )

    def test_detection_result(self) -> None:
        request = protocol.detection_result_request("dit1")
        assert (request.method, request.path, request.params, request.creates_billable) == (
            "GET",
            "/client/job/detect-face-result",
            {"detect_task_id": "dit1"},
            False,
        )

    def test_create_task_omits_callback_when_none(self) -> None:
        request = protocol.create_task_request("m", {"a": 1})
        assert request.body == {"model": "m", "input": {"a": 1}}
        assert request.creates_billable

    def test_create_task_with_callback(self) -> None:
        request = protocol.create_task_request("m", {"a": 1}, "https://cb.example/hook")
        assert request.body == {"model": "m", "input": {"a": 1}, "callback_url": "https://cb.example/hook"}

    def test_task_info_and_balance(self) -> None:
        info, balance = protocol.task_info_request("t1"), protocol.balance_request()
        assert (info.method, info.path, info.params) == ("GET", "/client/job/TaskInfo", {"task_id": "t1"})
        assert (balance.method, balance.path, balance.params) == ("GET", "/client/account/balance", None)

    def test_headers(self) -> None:
        assert protocol.request_headers("k") == {
            "x-api-key": "k",
            "User-Agent": f"airflow-provider-crun/{__version__}",
            "Accept": "application/json",
        }


class TestParseResponse:
    def test_success_returns_data(self) -> None:
        assert protocol.parse_response(200, envelope(data={"task_id": "t"}), {}) == {"task_id": "t"}

    def test_unknown_extra_fields_are_kept(self) -> None:
        data = {"task_id": "t", "brand_new_field": [1, 2]}
        assert protocol.parse_response(200, envelope(data=data), {}) == data

    @pytest.mark.parametrize(("code", "error_class"), DOCUMENTED_ERRORS, ids=ERROR_IDS)
    def test_error_as_http_status(self, code: int, error_class: type[CrunApiError]) -> None:
        with pytest.raises(error_class) as raised:
            protocol.parse_response(code, envelope(code, "crun says no"), {})
        assert (raised.value.code, raised.value.message, raised.value.http_status) == (
            code,
            "crun says no",
            code,
        )

    @pytest.mark.parametrize(("code", "error_class"), DOCUMENTED_ERRORS, ids=ERROR_IDS)
    def test_error_as_body_code(self, code: int, error_class: type[CrunApiError]) -> None:
        with pytest.raises(error_class) as raised:
            protocol.parse_response(200, envelope(code, "crun says no"), {})
        assert (raised.value.code, raised.value.message, raised.value.http_status) == (
            code,
            "crun says no",
            200,
        )

    def test_error_status_uses_body_code(self) -> None:
        with pytest.raises(CrunInsufficientCreditsError, match="no credits"):
            protocol.parse_response(400, envelope(402, "no credits"), {})

    def test_error_status_with_success_body_code_uses_status(self) -> None:
        with pytest.raises(CrunServiceUnavailableError):
            protocol.parse_response(455, envelope(200, "ok"), {})

    @pytest.mark.parametrize("status", [502, 503, 504, 599], ids=lambda s: f"http-{s}")
    def test_undocumented_5xx_is_server_error(self, status: int) -> None:
        with pytest.raises(CrunServerError):
            protocol.parse_response(status, b"<html>Bad gateway</html>", {})

    def test_undocumented_4xx_is_generic(self) -> None:
        with pytest.raises(CrunApiError) as raised:
            protocol.parse_response(200, envelope(418, "teapot"), {})
        assert type(raised.value) is CrunApiError

    @pytest.mark.parametrize(
        "body",
        [b"not json at all", b"[1, 2]", b'{"message": "no code"}', b'{"code": "200"}', b""],
        ids=["not-json", "json-list", "no-code", "string-code", "empty"],
    )
    def test_malformed_body(self, body: bytes) -> None:
        with pytest.raises(CrunMalformedResponseError) as raised:
            protocol.parse_response(200, body, {})
        assert raised.value.http_status == 200
        assert "not a Crun envelope" in raised.value.message

    def test_malformed_body_snippet_is_truncated(self) -> None:
        with pytest.raises(CrunServerError) as raised:
            protocol.parse_response(500, b"x" * 10_000, {})
        assert len(raised.value.message) < 300
        assert raised.value.message.endswith("...'")

    @pytest.mark.parametrize("status", [301, 302, 307, 308], ids=lambda s: f"http-{s}")
    def test_redirect_is_refused(self, status: int) -> None:
        with pytest.raises(CrunRedirectError, match=r"evil\.example.*redirects are refused"):
            protocol.parse_response(status, b"", {"location": "https://evil.example/steal"})

    @pytest.mark.parametrize(
        ("header", "expected"),
        [("3", 3.0), ("0.5", 0.5), ("-4", 0.0), ("3600", protocol.RETRY_AFTER_CAP_SECONDS), ("soon", None)],
        ids=["seconds", "fractional", "negative-clamped", "capped", "garbage-ignored"],
    )
    def test_retry_after(self, header: str, expected: float | None) -> None:
        with pytest.raises(CrunRateLimitError) as raised:
            protocol.parse_response(429, envelope(429, "slow down"), {"Retry-After": header})
        assert raised.value.retry_after == expected

    def test_retry_after_http_date(self) -> None:
        assert protocol.parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


class TestRetryPolicy:
    TRANSPORT_NOT_SENT = CrunTransportError("refused", request_sent=False)
    TRANSPORT_SENT = CrunTransportError("read timeout", request_sent=True)

    @pytest.mark.parametrize(
        ("error", "on_read", "on_create"),
        [
            (CrunRateLimitError(429, "x"), True, True),
            (CrunServiceUnavailableError(455, "x"), True, True),
            (CrunServerError(500, "x"), True, False),
            (CrunServerError(502, "x"), True, False),
            (CrunServerError(503, "x"), True, False),
            (CrunServerError(504, "x"), True, False),
            (CrunMalformedResponseError(200, "x"), True, False),
            (TRANSPORT_NOT_SENT, True, True),
            (TRANSPORT_SENT, True, False),
            (CrunAuthError(401, "x"), False, False),
            (CrunInsufficientCreditsError(402, "x"), False, False),
            (CrunNotFoundError(404, "x"), False, False),
            (CrunValidationError(422, "x"), False, False),
            (CrunGenerationFailedError(501, "x"), False, False),
            (CrunFeatureDisabledError(505, "x"), False, False),
            (CrunRedirectError(302, "x"), False, False),
            (ValueError("bug"), False, False),
        ],
        ids=[
            "429-rate-limited",
            "455-maintenance",
            "500-server-error",
            "502-bad-gateway",
            "503-unavailable",
            "504-gateway-timeout",
            "malformed-body",
            "connection-refused",
            "timeout-after-send",
            "401-auth",
            "402-credits",
            "404-not-found",
            "422-validation",
            "501-generation-failed",
            "505-feature-disabled",
            "redirect",
            "programming-error",
        ],
    )
    def test_is_retryable(self, error: BaseException, on_read: bool, on_create: bool) -> None:
        assert protocol.is_retryable(error, creates_billable=False) is on_read
        assert protocol.is_retryable(error, creates_billable=True) is on_create

    def test_backoff_honours_retry_after(self) -> None:
        error = CrunRateLimitError(429, "x", retry_after=7.0)
        assert protocol.backoff_seconds(1, error) == 7.0

    @pytest.mark.parametrize(("attempt", "ceiling"), [(1, 1.0), (2, 2.0), (3, 4.0), (6, 30.0), (40, 30.0)])
    def test_backoff_is_bounded_exponential_with_jitter(self, attempt: int, ceiling: float) -> None:
        rng = random.Random(1)
        waits = [protocol.backoff_seconds(attempt, rng=rng) for _ in range(200)]
        assert all(ceiling / 2 <= wait <= ceiling for wait in waits)
        assert len(set(waits)) > 1


class TestStatus:
    @pytest.mark.parametrize(
        ("status", "phase"),
        [
            ("success", protocol.CrunJobPhase.SUCCEEDED),
            ("succeeded", protocol.CrunJobPhase.SUCCEEDED),
            ("succeed", protocol.CrunJobPhase.SUCCEEDED),
            ("SUCCESS", protocol.CrunJobPhase.SUCCEEDED),
            (" Succeeded ", protocol.CrunJobPhase.SUCCEEDED),
            ("failed", protocol.CrunJobPhase.FAILED),
            ("FAILED", protocol.CrunJobPhase.FAILED),
            ("starting", protocol.CrunJobPhase.RUNNING),
            ("processing", protocol.CrunJobPhase.RUNNING),
            ("pending", protocol.CrunJobPhase.RUNNING),
            ("Running", protocol.CrunJobPhase.RUNNING),
            ("queued-in-new-region", protocol.CrunJobPhase.UNKNOWN),
            (None, protocol.CrunJobPhase.UNKNOWN),
        ],
        ids=lambda value: str(value),
    )
    def test_job_phase(self, status: str | None, phase: protocol.CrunJobPhase) -> None:
        assert protocol.job_phase(status) is phase

    def test_terminal_groups(self) -> None:
        assert {p for p in protocol.CrunJobPhase if p.is_terminal} == {
            protocol.CrunJobPhase.SUCCEEDED,
            protocol.CrunJobPhase.FAILED,
        }

    @pytest.mark.parametrize(
        ("data", "detail"),
        [
            ({"status": "failed", "result": {"code": 501, "message": "no face"}}, "no face (code 501)"),
            ({"status": "failed", "error": "image unreachable"}, "image unreachable"),
            ({"status": "failed", "error": None, "result": {"error": "bad image"}}, "bad image"),
            ({"status": "failed", "result": None}, "no detail"),
            (None, "no detail"),
        ],
        ids=["result-code-message", "error-string", "result-error", "nothing", "no-data"],
    )
    def test_failure_detail(self, data: object, detail: str) -> None:
        assert protocol.failure_detail(data) == detail

    def test_media_urls(self) -> None:
        assert protocol.media_urls({"result": {"media_urls": ["https://a/1.png"]}}) == ["https://a/1.png"]
        assert protocol.media_urls({"result": None}) == []

    def test_detection_outcome_reads_documented_example(self) -> None:
        data = {
            "detect_task_id": "dit60yt8reqplt1c16",
            "status": "succeeded",
            "result": {
                "id": "m1oZzqYp9dN",
                "status": "succeed",
                "faces": [{"id": 0, "link": "https://x/0.jpg"}, {"id": 1, "link": "https://x/1.jpg"}],
            },
        }
        detect_id, faces = protocol.detection_outcome(data)
        assert detect_id == "m1oZzqYp9dN"
        assert [(face.id, face.link) for face in faces] == [(0, "https://x/0.jpg"), (1, "https://x/1.jpg")]

    def test_detection_outcome_without_id(self) -> None:
        with pytest.raises(CrunMalformedResponseError, match=r"no result\.id"):
            protocol.detection_outcome({"status": "succeeded", "result": None})


class TestJobWatch:
    def test_reports_changes_only(self) -> None:
        watch = protocol.JobWatch("task", "t1")
        first = watch.observe({"status": "pending"}, elapsed=0.0)
        again = watch.observe({"status": "PENDING"}, elapsed=1.0)
        moved = watch.observe({"status": "running"}, elapsed=2.5)
        assert first.change == "Crun task t1: (start) -> pending after 0.0 s"
        assert again.change is None
        assert moved.change == "Crun task t1: pending -> running after 2.5 s"
        assert [first.phase, moved.phase] == [protocol.CrunJobPhase.RUNNING] * 2

    def test_warns_once_per_unknown_status(self) -> None:
        watch = protocol.JobWatch("face detection", "d1")
        warnings = [
            watch.observe({"status": word}).warning for word in ("queued", "queued", "running", "queued")
        ]
        assert warnings == [
            "Crun face detection d1: unknown status 'queued', treating as not finished",
            None,
            None,
            None,
        ]

    def test_messages(self) -> None:
        watch = protocol.JobWatch("task", "t1")
        failed = {"status": "failed", "result": {"code": 501, "message": "no face"}}
        assert watch.observe(failed).phase is protocol.CrunJobPhase.FAILED
        assert watch.failure_message(failed) == "Crun task t1 failed: no face (code 501)"
        error = CrunGenerationFailedError(501, "generation failed")
        assert watch.generation_failed_message(error) == "Crun task t1 failed: generation failed (code 501)"
        assert watch.observe({"status": "Succeeded"}).phase is protocol.CrunJobPhase.SUCCEEDED
