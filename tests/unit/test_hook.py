"""CrunHook's sync transport, with requests-mock standing in for Crun."""

from __future__ import annotations

import json
import logging

import pytest
import requests
import requests_mock as requests_mock_module
from urllib3.exceptions import NewConnectionError, ProtocolError

from airflow_provider_crun import __version__
from airflow_provider_crun.exceptions import (
    CrunApiError,
    CrunConfigError,
    CrunRedirectError,
    CrunServerError,
    CrunTransportError,
)
from airflow_provider_crun.hooks.crun import CrunHook
from tests.conftest import TEST_API, TEST_API_KEY, crun_connection_json
from tests.unit.test_protocol import DOCUMENTED_ERRORS, ERROR_IDS

DETECT = f"{TEST_API}/client/job/detect-face-image"
DETECT_RESULT = f"{TEST_API}/client/job/detect-face-result"
CREATE = f"{TEST_API}/client/job/CreateTask"
TASK_INFO = f"{TEST_API}/client/job/TaskInfo"
BALANCE = f"{TEST_API}/client/account/balance"

DETECTION_EXAMPLE = {
    "detect_task_id": "dit60yt8reqplt1c16",
    "status": "succeeded",
    "error": None,
    "result": {
        "id": "m1oZzqYp9dN",
        "status": "succeed",
        "type": "face_detect",
        "hair_id": None,
        "faces": [
            {"id": 0, "link": "https://cdn.example/detected-face-0.jpg"},
            {"id": 1, "link": "https://cdn.example/detected-face-1.jpg"},
        ],
        "started_at": "2026-05-27 12:14:03",
        "finished_at": "2026-05-27 12:14:04",
        "error": None,
    },
}
TASK_EXAMPLE = {
    "task_id": "task_12345678",
    "provider": "crun",
    "model_version": "v1",
    "status": "success",
    "param": {"model": "image-face-swap-multi", "callback_url": None, "input": {}},
    "create_at": 1768900378,
    "result": {"media_urls": ["https://cdn.example/result.png"]},
    "duration_s": 4.2,
    "complete_at": 1768900382,
    "source": "api",
    "credits": 6,
}


def ok(data: object) -> dict[str, object]:
    return {"json": {"code": 200, "message": "success", "data": data}}


def fail(code: int, status: int = 200, headers: dict[str, str] | None = None) -> dict[str, object]:
    return {
        "status_code": status,
        "json": {"code": code, "message": f"crun error {code}"},
        "headers": headers or {},
    }


def refused() -> requests.ConnectionError:
    reason = NewConnectionError(None, "Connection refused")  # type: ignore[arg-type]
    return requests.ConnectionError(requests.packages.urllib3.exceptions.MaxRetryError(None, "/", reason))  # type: ignore[attr-defined]


def reset_after_send() -> requests.ConnectionError:
    return requests.ConnectionError(ProtocolError("Connection aborted.", ConnectionResetError(104, "reset")))


@pytest.fixture
def hook(crun_conn: str) -> CrunHook:
    return CrunHook(crun_conn)


class TestRequestShapes:
    def test_create_face_detection(self, hook: CrunHook, requests_mock: requests_mock_module.Mocker) -> None:
        requests_mock.post(DETECT, **ok({"detect_task_id": "dit1"}))
        assert hook.create_face_detection("https://img.example/a.png") == "dit1"
        sent = requests_mock.last_request
        assert sent.method == "POST"
        assert sent.json() == {"image_url": "https://img.example/a.png"}
        assert sent.headers["x-api-key"] == TEST_API_KEY
        assert sent.headers["User-Agent"] == f"airflow-provider-crun/{__version__}"
        assert sent.headers["Content-Type"] == "application/json"

    def test_get_face_detection_returns_data_unchanged(
        self, hook: CrunHook, requests_mock: requests_mock_module.Mocker
    ) -> None:
        requests_mock.get(DETECT_RESULT, **ok(DETECTION_EXAMPLE))
        assert hook.get_face_detection("dit60yt8reqplt1c16") == DETECTION_EXAMPLE
        assert requests_mock.last_request.qs == {"detect_task_id": ["dit60yt8reqplt1c16"]}

    def test_create_task_without_callback(
        self, hook: CrunHook, requests_mock: requests_mock_module.Mocker
    ) -> None:
        requests_mock.post(CREATE, **ok({"task_id": "task_1"}))
        assert hook.create_task("image-face-swap", {"image_url": "u", "new_face": "f"}) == "task_1"
        assert requests_mock.last_request.json() == {
            "model": "image-face-swap",
            "input": {"image_url": "u", "new_face": "f"},
        }

    def test_create_task_with_callback(
        self, hook: CrunHook, requests_mock: requests_mock_module.Mocker
    ) -> None:
        requests_mock.post(CREATE, **ok({"task_id": "task_1"}))
        hook.create_task("m", {}, callback_url="https://cb.example/hook")
        assert requests_mock.last_request.json()["callback_url"] == "https://cb.example/hook"

    def test_get_task_returns_data_unchanged(
        self, hook: CrunHook, requests_mock: requests_mock_module.Mocker
    ) -> None:
        requests_mock.get(TASK_INFO, **ok({**TASK_EXAMPLE, "field_added_later": {"x": 1}}))
        assert hook.get_task("task_12345678")["field_added_later"] == {"x": 1}
        assert requests_mock.last_request.qs == {"task_id": ["task_12345678"]}

    def test_get_balance(self, hook: CrunHook, requests_mock: requests_mock_module.Mocker) -> None:
        requests_mock.get(BALANCE, **ok({"balance": 1000}))
        assert hook.get_balance() == 1000.0
        assert requests_mock.last_request.method == "GET"

    def test_base_url_with_api_prefix(self, monkeypatch: pytest.MonkeyPatch, requests_mock) -> None:
        monkeypatch.setenv("AIRFLOW_CONN_CRUN_DEFAULT", crun_connection_json(host=TEST_API + "/"))
        requests_mock.get(BALANCE, **ok({"balance": 5}))
        assert CrunHook().get_balance() == 5.0

    def test_one_requests_session_per_hook(self, hook: CrunHook, requests_mock) -> None:
        requests_mock.get(BALANCE, **ok({"balance": 5}))
        hook.get_balance()
        session = hook.http
        hook.get_balance()
        assert hook.http is session
        assert CrunHook("crun_default").http is not session

    @pytest.mark.parametrize(
        ("method", "args", "url", "data", "field"),
        [
            ("create_face_detection", ("u",), DETECT, {"nothing": 1}, "detect_task_id"),
            ("create_task", ("m", {}), CREATE, {}, "task_id"),
            ("get_balance", (), BALANCE, None, "balance"),
        ],
        ids=["detect-without-id", "create-without-task-id", "balance-without-balance"],
    )
    def test_missing_field_is_malformed(
        self, hook: CrunHook, requests_mock, method, args, url, data, field
    ) -> None:
        getattr(requests_mock, "get" if method == "get_balance" else "post")(url, **ok(data))
        with pytest.raises(CrunApiError, match=f"without '{field}'"):
            getattr(hook, method)(*args)


class TestErrors:
    @pytest.mark.parametrize(("code", "error_class"), DOCUMENTED_ERRORS, ids=ERROR_IDS)
    def test_read_error_as_http_status(self, hook, requests_mock, retry_waits, code, error_class) -> None:
        requests_mock.get(TASK_INFO, **fail(code, status=code))
        with pytest.raises(error_class) as raised:
            hook.get_task("t")
        assert raised.value.code == code
        assert raised.value.message == f"crun error {code}"

    @pytest.mark.parametrize(("code", "error_class"), DOCUMENTED_ERRORS, ids=ERROR_IDS)
    def test_read_error_as_body_code(self, hook, requests_mock, retry_waits, code, error_class) -> None:
        requests_mock.get(TASK_INFO, **fail(code, status=200))
        with pytest.raises(error_class) as raised:
            hook.get_task("t")
        assert raised.value.code == code

    @pytest.mark.parametrize(("code", "error_class"), DOCUMENTED_ERRORS, ids=ERROR_IDS)
    def test_create_error_as_http_status(self, hook, requests_mock, retry_waits, code, error_class) -> None:
        requests_mock.post(CREATE, **fail(code, status=code))
        with pytest.raises(error_class):
            hook.create_task("m", {})

    @pytest.mark.parametrize(("code", "error_class"), DOCUMENTED_ERRORS, ids=ERROR_IDS)
    def test_create_error_as_body_code(self, hook, requests_mock, retry_waits, code, error_class) -> None:
        requests_mock.post(CREATE, **fail(code, status=200))
        with pytest.raises(error_class):
            hook.create_task("m", {})

    def test_non_json_body(self, hook, requests_mock, retry_waits) -> None:
        requests_mock.get(BALANCE, text="<html>" + "x" * 5000)
        with pytest.raises(
            CrunApiError, match=r"HTTP 200 with a body that is not a Crun envelope: '<html>x+\.\.\.'"
        ):
            hook.get_balance()

    def test_missing_api_key(self, monkeypatch: pytest.MonkeyPatch, requests_mock) -> None:
        monkeypatch.setenv("AIRFLOW_CONN_CRUN_DEFAULT", crun_connection_json(api_key=None))
        with pytest.raises(CrunConfigError, match="has no API key"):
            CrunHook().get_balance()
        assert requests_mock.call_count == 0

    def test_plain_http_to_remote_host_is_refused_before_sending(self, monkeypatch, requests_mock) -> None:
        monkeypatch.setenv("AIRFLOW_CONN_CRUN_DEFAULT", crun_connection_json(host="http://api.crun.ai"))
        with pytest.raises(CrunConfigError, match="unencrypted"):
            CrunHook().create_task("m", {})
        assert requests_mock.call_count == 0

    @pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
    def test_redirect_is_not_followed(self, hook, requests_mock, status: int) -> None:
        requests_mock.get(BALANCE, status_code=status, headers={"Location": "https://evil.example/x"})
        requests_mock.get("https://evil.example/x", **ok({"balance": 1}))
        with pytest.raises(CrunRedirectError):
            hook.get_balance()
        assert [r.url for r in requests_mock.request_history] == [BALANCE]


# (responses in order, expected number of requests, expected outcome)
READ_SCENARIOS = [
    ([fail(429, 429, {"Retry-After": "2"}), ok({"balance": 1})], 2, 1.0),
    ([fail(429, 200), fail(429, 200), ok({"balance": 1})], 3, 1.0),
    ([fail(455, 455), ok({"balance": 1})], 2, 1.0),
    ([fail(500, 500), fail(500, 500), ok({"balance": 1})], 3, 1.0),
    ([{"status_code": 502, "text": "bad gateway"}, ok({"balance": 1})], 2, 1.0),
    ([{"status_code": 503, "text": ""}, {"status_code": 504, "text": ""}, ok({"balance": 1})], 3, 1.0),
    ([{"text": "garbage"}, ok({"balance": 1})], 2, 1.0),
    ([{"exc": requests.ReadTimeout}, ok({"balance": 1})], 2, 1.0),
    ([{"exc": requests.ConnectTimeout}, ok({"balance": 1})], 2, 1.0),
    ([{"exc": reset_after_send()}, ok({"balance": 1})], 2, 1.0),
    ([fail(500, 500)] * 10, 4, CrunServerError),
    ([fail(401, 401), ok({"balance": 1})], 1, CrunApiError),
    ([fail(404, 200), ok({"balance": 1})], 1, CrunApiError),
    ([fail(501, 501), ok({"balance": 1})], 1, CrunApiError),
    ([fail(505, 200), ok({"balance": 1})], 1, CrunApiError),
]
READ_IDS = [
    "429-retry-after-then-ok",
    "429-body-twice-then-ok",
    "455-then-ok",
    "500-twice-then-ok",
    "502-html-then-ok",
    "503-504-then-ok",
    "malformed-then-ok",
    "read-timeout-then-ok",
    "connect-timeout-then-ok",
    "reset-then-ok",
    "500-forever-gives-up-after-max-retries",
    "401-not-retried",
    "404-not-retried",
    "501-not-retried",
    "505-not-retried",
]

CREATE_SCENARIOS = [
    ([fail(429, 429, {"Retry-After": "1"}), ok({"task_id": "t"})], 2, "t"),
    ([fail(455, 200), ok({"task_id": "t"})], 2, "t"),
    ([{"exc": refused()}, ok({"task_id": "t"})], 2, "t"),
    ([{"exc": requests.ConnectTimeout}, ok({"task_id": "t"})], 2, "t"),
    ([fail(500, 500), ok({"task_id": "t"})], 1, CrunServerError),
    ([fail(500, 200), ok({"task_id": "t"})], 1, CrunServerError),
    ([{"status_code": 502, "text": ""}, ok({"task_id": "t"})], 1, CrunServerError),
    ([{"status_code": 504, "text": ""}, ok({"task_id": "t"})], 1, CrunServerError),
    ([{"exc": requests.ReadTimeout}, ok({"task_id": "t"})], 1, CrunTransportError),
    ([{"exc": reset_after_send()}, ok({"task_id": "t"})], 1, CrunTransportError),
    ([{"text": "garbage"}, ok({"task_id": "t"})], 1, CrunApiError),
    ([fail(422, 422), ok({"task_id": "t"})], 1, CrunApiError),
    ([fail(429, 429)] * 10, 4, CrunApiError),
]
CREATE_IDS = [
    "429-is-a-rejection-retry",
    "455-is-a-rejection-retry",
    "refused-never-sent-retry",
    "connect-timeout-never-sent-retry",
    "500-may-have-created-no-retry",
    "500-in-body-no-retry",
    "502-no-retry",
    "504-no-retry",
    "read-timeout-no-retry",
    "reset-after-send-no-retry",
    "malformed-success-no-retry",
    "422-no-retry",
    "429-forever-gives-up-after-max-retries",
]


class TestRetries:
    @pytest.mark.parametrize(("responses", "requests_sent", "outcome"), READ_SCENARIOS, ids=READ_IDS)
    def test_read(self, hook, requests_mock, retry_waits, responses, requests_sent, outcome) -> None:
        requests_mock.get(BALANCE, responses)
        if isinstance(outcome, type):
            with pytest.raises(outcome):
                hook.get_balance()
        else:
            assert hook.get_balance() == outcome
        assert requests_mock.call_count == requests_sent
        assert len(retry_waits) == requests_sent - 1

    @pytest.mark.parametrize(("responses", "requests_sent", "outcome"), CREATE_SCENARIOS, ids=CREATE_IDS)
    def test_create_task(self, hook, requests_mock, retry_waits, responses, requests_sent, outcome) -> None:
        requests_mock.post(CREATE, responses)
        if isinstance(outcome, type):
            with pytest.raises(outcome):
                hook.create_task("m", {})
        else:
            assert hook.create_task("m", {}) == outcome
        assert requests_mock.call_count == requests_sent

    @pytest.mark.parametrize(
        "responses",
        [
            [fail(500, 500), ok({"detect_task_id": "d"})],
            [{"exc": requests.ReadTimeout}, ok({"detect_task_id": "d"})],
        ],
        ids=["500", "read-timeout"],
    )
    def test_detection_post_is_never_resent_after_reaching_server(
        self, hook, requests_mock, retry_waits, responses
    ) -> None:
        requests_mock.post(DETECT, responses)
        with pytest.raises((CrunServerError, CrunTransportError)):
            hook.create_face_detection("https://img.example/a.png")
        assert requests_mock.call_count == 1

    def test_retry_after_is_honoured(self, hook, requests_mock, retry_waits) -> None:
        requests_mock.get(BALANCE, [fail(429, 429, {"Retry-After": "7"}), ok({"balance": 1})])
        hook.get_balance()
        assert retry_waits == [7.0]

    def test_backoff_grows_and_is_bounded(self, hook, requests_mock, retry_waits) -> None:
        requests_mock.get(BALANCE, [fail(500, 500)] * 3 + [ok({"balance": 1})])
        hook.get_balance()
        assert [0.5 <= retry_waits[0] <= 1, 1 <= retry_waits[1] <= 2, 2 <= retry_waits[2] <= 4] == [True] * 3

    def test_each_retry_logs_reason_and_wait(self, hook, requests_mock, retry_waits, capsys) -> None:
        requests_mock.get(BALANCE, [fail(455, 455, {"Retry-After": "3"}), ok({"balance": 1})])
        hook.get_balance()
        logged = capsys.readouterr().out
        assert "warning" in logged
        assert (
            "Crun balance failed (attempt 1 of 4): Crun API error 455: crun error 455. Retrying in 3.0 s."
            in logged
        )

    def test_max_retries_zero(self, monkeypatch, requests_mock, retry_waits) -> None:
        monkeypatch.setenv("AIRFLOW_CONN_CRUN_DEFAULT", crun_connection_json(max_retries=0))
        requests_mock.get(BALANCE, [fail(500, 500), ok({"balance": 1})])
        with pytest.raises(CrunServerError):
            CrunHook().get_balance()
        assert requests_mock.call_count == 1


class TestSecrecy:
    def test_key_absent_from_logs_errors_and_repr(
        self, hook, requests_mock, retry_waits, caplog, capsys
    ) -> None:
        requests_mock.get(BALANCE, [fail(429, 429), {"exc": requests.ReadTimeout}, fail(401, 401)])
        requests_mock.post(CREATE, exc=reset_after_send())
        with caplog.at_level(logging.DEBUG):
            with pytest.raises(CrunApiError) as read_error:
                hook.get_balance()
            with pytest.raises(CrunTransportError) as create_error:
                hook.create_task("m", {})
            healthy, message = hook.test_connection()
        captured = capsys.readouterr()
        assert "Retrying in" in captured.out
        texts = [
            caplog.text,
            captured.out,
            captured.err,
            str(read_error.value),
            repr(read_error.value),
            str(create_error.value),
            message,
        ]
        texts += [repr(hook), repr(hook.settings), json.dumps(vars(read_error.value), default=str)]
        assert not healthy
        assert all(TEST_API_KEY not in text for text in texts)


class TestConnectionTest:
    def test_success(self, hook, requests_mock) -> None:
        requests_mock.get(BALANCE, **ok({"balance": 990}))
        assert hook.test_connection() == (
            True,
            "Connected to Crun at http://127.0.0.1:8089/api/v1; balance: 990 credits.",
        )

    @pytest.mark.parametrize(
        ("mock", "fragment"),
        [
            (fail(401, 401), "401"),
            ({"exc": refused()}, "ConnectionError"),
            ({"text": "nope"}, "not a Crun envelope"),
        ],
        ids=["bad-key", "unreachable", "not-crun"],
    )
    def test_failure_never_raises(self, hook, requests_mock, retry_waits, mock, fragment) -> None:
        requests_mock.get(BALANCE, **mock)
        healthy, message = hook.test_connection()
        assert not healthy
        assert fragment in message

    def test_missing_key_never_raises(self, monkeypatch) -> None:
        monkeypatch.setenv("AIRFLOW_CONN_CRUN_DEFAULT", crun_connection_json(api_key=None))
        assert CrunHook().test_connection()[0] is False
