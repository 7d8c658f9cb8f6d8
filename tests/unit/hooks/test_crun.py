"""CrunHook's public API, with requests-mock (sync) or the scripted loopback server (async) as Crun."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
import requests_mock as requests_mock_module
from airflow.providers.common.compat.sdk import AirflowFailException
from structlog.testing import capture_logs
from urllib3.exceptions import ProtocolError

from airflow_provider_crun import __version__
from airflow_provider_crun.exceptions import (
    CrunAuthError,
    CrunClientError,
    CrunConfigError,
    CrunCreationUnknownError,
    CrunError,
    CrunFeatureDisabledError,
    CrunGenerationFailedError,
    CrunInsufficientCreditsError,
    CrunJobFailedError,
    CrunMalformedResponseError,
    CrunNotFoundError,
    CrunRateLimitError,
    CrunRedirectError,
    CrunServerError,
    CrunServiceUnavailableError,
    CrunTimeoutError,
    CrunValidationError,
)
from airflow_provider_crun.hooks.crun import CrunHook
from airflow_provider_crun.protocol import calls, jobs
from tests.support.connections import TEST_API_KEY, crun_connection_json
from tests.support.crun_answers import (
    API,
    BALANCE,
    CREATE,
    DETECT,
    DETECT_ID,
    DETECT_RESULT,
    DETECT_TASK_ID,
    FACE_0,
    FACE_1,
    IMAGE,
    RESULT,
    TASK_ID,
    TASK_INFO,
    api_error,
    detection_data,
    ok,
    task_data,
)
from tests.support.fakes import FakeClock

Mocker = requests_mock_module.Mocker

TASK_SUMMARY = {"status": "success", "media_urls": [RESULT], "credits": 6.0, "duration_s": 4.2}
DETECTION_SUMMARY = {"detect_id": DETECT_ID, "faces": [{"id": 0, "link": FACE_0}, {"id": 1, "link": FACE_1}]}


@pytest.fixture
def hook(crun_conn: str) -> CrunHook:
    return CrunHook(crun_conn)


def reset_after_send() -> requests.ConnectionError:
    """What ``requests`` raises when the server drops the connection after the request was written."""
    return requests.ConnectionError(ProtocolError("Connection aborted.", ConnectionResetError(104, "reset")))


def within(waits: list[float], ranges: list[tuple[float, float]]) -> bool:
    return len(waits) == len(ranges) and all(
        low <= wait <= high for wait, (low, high) in zip(waits, ranges, strict=True)
    )


def change_lines(entries: list[dict[str, Any]]) -> list[str]:
    return [entry["event"] for entry in entries if " -> " in str(entry["event"])]


# --------------------------------------------------------------------------------------------
# Calls: what is sent, what comes back


class TestCalls:
    def test_create_task_posts_model_and_input_with_the_key_header(
        self, hook: CrunHook, requests_mock: Mocker
    ) -> None:
        requests_mock.post(CREATE, **ok({"task_id": TASK_ID}))

        assert hook.create_task("image-face-swap", {"image_url": IMAGE}) == TASK_ID

        sent = requests_mock.last_request
        assert sent.json() == {"model": "image-face-swap", "input": {"image_url": IMAGE}}
        assert sent.headers["x-api-key"] == TEST_API_KEY
        assert sent.headers["User-Agent"] == f"airflow-provider-crun/{__version__}"

    def test_create_task_sends_the_callback_url_when_given(
        self, hook: CrunHook, requests_mock: Mocker
    ) -> None:
        requests_mock.post(CREATE, **ok({"task_id": TASK_ID}))

        hook.create_task("m", {"a": 1}, callback_url="https://cb.example.com/crun")

        assert requests_mock.last_request.json()["callback_url"] == "https://cb.example.com/crun"

    def test_create_face_detection_posts_the_image_and_returns_the_detect_task_id(
        self, hook: CrunHook, requests_mock: Mocker
    ) -> None:
        requests_mock.post(DETECT, **ok({"detect_task_id": DETECT_TASK_ID}))

        assert hook.create_face_detection(IMAGE) == DETECT_TASK_ID
        assert requests_mock.last_request.json() == {"image_url": IMAGE}

    def test_submit_returns_a_numeric_id_as_text(self, hook: CrunHook, requests_mock: Mocker) -> None:
        requests_mock.post(CREATE, **ok({"task_id": 42}))

        assert hook.submit(calls.create_task_request("m", {"a": 1})) == "42"

    @pytest.mark.parametrize(
        ("method", "url", "query"),
        [
            ("get_task", TASK_INFO, {"task_id": ["job-1"]}),
            ("get_face_detection", DETECT_RESULT, {"detect_task_id": ["job-1"]}),
        ],
        ids=["get_task-reads-TaskInfo", "get_face_detection-reads-detect-face-result"],
    )
    def test_reads_return_the_data_unchanged(
        self, hook: CrunHook, requests_mock: Mocker, method: str, url: str, query: dict[str, list[str]]
    ) -> None:
        data = {"status": "running", "field_added_later": {"x": [1, 2]}}
        requests_mock.get(url, **ok(data))

        assert getattr(hook, method)("job-1") == data
        assert requests_mock.last_request.qs == query

    @pytest.mark.parametrize(
        ("kind", "url"), [(jobs.TASK, TASK_INFO), (jobs.DETECTION, DETECT_RESULT)], ids=["task", "detection"]
    )
    def test_get_job_reads_the_kinds_endpoint_and_turns_null_data_into_a_dict(
        self, hook: CrunHook, requests_mock: Mocker, kind: jobs.JobKind, url: str
    ) -> None:
        requests_mock.get(url, **ok(None))

        assert hook.get_job(kind, "job-1") == {}
        assert requests_mock.call_count == 1

    def test_get_balance(self, hook: CrunHook, requests_mock: Mocker) -> None:
        requests_mock.get(BALANCE, **ok({"balance": 990}))

        assert hook.get_balance() == 990.0

    def test_get_balance_without_a_number_is_malformed(
        self, hook: CrunHook, requests_mock: Mocker, no_backoff: list[float]
    ) -> None:
        requests_mock.get(BALANCE, **ok({"balance": "lots"}))

        with pytest.raises(CrunMalformedResponseError, match="balance"):
            hook.get_balance()

    def test_one_requests_session_per_hook(self, hook: CrunHook, requests_mock: Mocker) -> None:
        requests_mock.get(BALANCE, **ok({"balance": 1}))
        hook.get_balance()
        session = hook.http

        hook.get_balance()

        assert hook.http is session
        assert CrunHook("crun_default").http is not session

    def test_base_url_given_with_the_api_prefix(
        self, monkeypatch: pytest.MonkeyPatch, requests_mock: Mocker
    ) -> None:
        monkeypatch.setenv("AIRFLOW_CONN_CRUN_DEFAULT", crun_connection_json(host=API + "/"))
        requests_mock.get(BALANCE, **ok({"balance": 5}))

        assert CrunHook().get_balance() == 5.0


# --------------------------------------------------------------------------------------------
# Errors: every Crun answer raises its Airflow twin

PERMANENT_ERRORS = [
    (401, CrunAuthError),
    (402, CrunInsufficientCreditsError),
    (404, CrunNotFoundError),
    (418, CrunClientError),
    (422, CrunValidationError),
    (501, CrunGenerationFailedError),
    (505, CrunFeatureDisabledError),
]
PERMANENT_IDS = [
    "401-auth",
    "402-credits",
    "404-not-found",
    "418-client",
    "422-validation",
    "501-gen",
    "505-off",
]
TRANSIENT_ERRORS = [
    (429, CrunRateLimitError),
    (455, CrunServiceUnavailableError),
    (500, CrunServerError),
    (503, CrunServerError),
]
TRANSIENT_IDS = ["429-rate-limit", "455-maintenance", "500-server", "503-server"]
WHERE = pytest.mark.parametrize("in_body", [False, True], ids=["as-http-status", "in-http-200-body"])


class TestErrors:
    @WHERE
    @pytest.mark.parametrize(("code", "twin"), PERMANENT_ERRORS, ids=PERMANENT_IDS)
    def test_permanent_error_is_an_airflow_fail_exception_sent_once(
        self, hook: CrunHook, requests_mock: Mocker, code: int, twin: type[CrunError], in_body: bool
    ) -> None:
        requests_mock.get(TASK_INFO, **api_error(code, in_body=in_body))

        with pytest.raises(twin) as raised:
            hook.get_task(TASK_ID)

        assert type(raised.value) is twin
        assert isinstance(raised.value, AirflowFailException)
        assert (raised.value.code, raised.value.message) == (code, f"crun error {code}")
        assert str(raised.value) == f"Crun API error {code}: crun error {code}"
        assert requests_mock.call_count == 1

    @WHERE
    @pytest.mark.parametrize(("code", "twin"), TRANSIENT_ERRORS, ids=TRANSIENT_IDS)
    def test_transient_error_is_retried_then_raised_as_a_retryable_twin(
        self,
        hook: CrunHook,
        requests_mock: Mocker,
        no_backoff: list[float],
        code: int,
        twin: type[CrunError],
        in_body: bool,
    ) -> None:
        requests_mock.get(TASK_INFO, **api_error(code, in_body=in_body))

        with pytest.raises(twin) as raised:
            hook.get_task(TASK_ID)

        assert type(raised.value) is twin
        assert not isinstance(raised.value, AirflowFailException)
        assert raised.value.code == code
        # max_retries=3: the first attempt and three retries.
        assert requests_mock.call_count == 4
        assert len(no_backoff) == 3

    @pytest.mark.parametrize("status", [301, 302, 307, 308], ids=["301", "302", "307", "308"])
    def test_redirect_is_refused_not_followed(
        self, hook: CrunHook, requests_mock: Mocker, status: int
    ) -> None:
        requests_mock.get(BALANCE, status_code=status, headers={"Location": "https://evil.example.com/x"})
        requests_mock.get("https://evil.example.com/x", **ok({"balance": 1}))

        with pytest.raises(CrunRedirectError, match=r"evil\.example\.com") as raised:
            hook.get_balance()

        assert isinstance(raised.value, AirflowFailException)
        assert [request.url for request in requests_mock.request_history] == [BALANCE]

    def test_non_envelope_answer_is_malformed_with_a_short_snippet(
        self, hook: CrunHook, requests_mock: Mocker, no_backoff: list[float]
    ) -> None:
        requests_mock.get(BALANCE, text="<html>" + "x" * 5000)

        with pytest.raises(
            CrunMalformedResponseError, match=r"not a Crun envelope: '<html>x+\.\.\.'"
        ) as raised:
            hook.get_balance()

        assert len(str(raised.value)) < 400


# --------------------------------------------------------------------------------------------
# Retries of reads


READS = [
    ([api_error(429, headers={"Retry-After": "7"}), ok(task_data("running"))], [(7.0, 7.0)]),
    ([api_error(455, in_body=True, headers={"Retry-After": "3"}), ok(task_data("running"))], [(3.0, 3.0)]),
    ([api_error(500), api_error(502), ok(task_data("running"))], [(0.5, 1.0), (1.0, 2.0)]),
    ([{"text": "<html>proxy</html>"}, ok(task_data("running"))], [(0.5, 1.0)]),
    ([{"exc": requests.ReadTimeout}, ok(task_data("running"))], [(0.5, 1.0)]),
    ([{"exc": requests.ConnectTimeout}, ok(task_data("running"))], [(0.5, 1.0)]),
    ([{"exc": reset_after_send()}, ok(task_data("running"))], [(0.5, 1.0)]),
    (
        [
            api_error(500),
            api_error(500),
            api_error(429, headers={"Retry-After": "9"}),
            ok(task_data("running")),
        ],
        [(0.5, 1.0), (1.0, 2.0), (9.0, 9.0)],
    ),
]
READ_IDS = [
    "429-waits-its-retry-after",
    "455-in-body-waits-its-retry-after",
    "500-502-back-off-exponentially",
    "malformed-retried",
    "read-timeout-retried",
    "connect-timeout-retried",
    "reset-retried",
    "retry-after-wins-over-backoff",
]


class TestReadRetries:
    @pytest.mark.parametrize(("answers", "waits"), READS, ids=READ_IDS)
    def test_read_recovers_with_the_expected_waits(
        self,
        hook: CrunHook,
        requests_mock: Mocker,
        no_backoff: list[float],
        answers: list[dict[str, Any]],
        waits: list[tuple[float, float]],
    ) -> None:
        requests_mock.get(TASK_INFO, answers)

        assert hook.get_task(TASK_ID)["status"] == "running"

        assert requests_mock.call_count == len(answers)
        assert within(no_backoff, waits), no_backoff

    def test_gives_up_after_max_retries_with_growing_waits(
        self, hook: CrunHook, requests_mock: Mocker, no_backoff: list[float]
    ) -> None:
        requests_mock.get(TASK_INFO, [api_error(500)] * 10)

        with pytest.raises(CrunServerError):
            hook.get_task(TASK_ID)

        assert requests_mock.call_count == 4
        assert within(no_backoff, [(0.5, 1.0), (1.0, 2.0), (2.0, 4.0)]), no_backoff

    def test_max_retries_zero_sends_once(
        self, monkeypatch: pytest.MonkeyPatch, requests_mock: Mocker, no_backoff: list[float]
    ) -> None:
        monkeypatch.setenv("AIRFLOW_CONN_CRUN_DEFAULT", crun_connection_json(max_retries=0))
        requests_mock.get(TASK_INFO, [api_error(500), ok(task_data("running"))])

        with pytest.raises(CrunServerError):
            CrunHook().get_task(TASK_ID)

        assert requests_mock.call_count == 1
        assert no_backoff == []

    def test_each_retry_is_logged_with_its_reason_and_wait(
        self, hook: CrunHook, requests_mock: Mocker, no_backoff: list[float]
    ) -> None:
        requests_mock.get(BALANCE, [api_error(455, headers={"Retry-After": "3"}), ok({"balance": 1})])

        with capture_logs() as entries:
            hook.get_balance()

        warnings = [
            e["event"] % tuple(e.get("positional_args", ())) for e in entries if e["log_level"] == "warning"
        ]
        assert warnings == [
            "Crun balance failed (attempt 1 of 4): Crun API error 455: crun error 455. Retrying in 3.0 s."
        ]


# --------------------------------------------------------------------------------------------
# Creation calls: never sent twice once they may have reached Crun

CREATIONS = pytest.mark.parametrize(
    ("method", "args", "url", "id_field"),
    [
        ("create_task", ("image-face-swap", {"image_url": IMAGE}), CREATE, "task_id"),
        ("create_face_detection", (IMAGE,), DETECT, "detect_task_id"),
    ],
    ids=["create_task", "create_face_detection"],
)

RESENT = [
    ([api_error(429, headers={"Retry-After": "2"}), "created"], [(2.0, 2.0)]),
    ([api_error(429, in_body=True), "created"], [(0.5, 1.0)]),
    ([api_error(455), "created"], [(0.5, 1.0)]),
    ([{"exc": requests.ConnectTimeout}, "created"], [(0.5, 1.0)]),
]
RESENT_IDS = ["429-rejected", "429-in-body-rejected", "455-rejected", "connect-timeout-never-sent"]

MAY_HAVE_CREATED = [
    api_error(500),
    api_error(500, in_body=True),
    {"status_code": 502, "text": "<html>bad gateway</html>"},
    {"status_code": 504, "text": ""},
    {"text": "<html>not an envelope</html>"},
    {"exc": requests.ReadTimeout},
    {"exc": reset_after_send()},
]
MAY_HAVE_CREATED_IDS = [
    "500",
    "500-in-body",
    "502-html",
    "504-empty",
    "malformed-200",
    "read-timeout",
    "reset-after-send",
]


class TestCreationSafety:
    @CREATIONS
    @pytest.mark.parametrize(("answers", "waits"), RESENT, ids=RESENT_IDS)
    def test_resent_only_after_a_rejection_or_an_unsent_request(
        self,
        hook: CrunHook,
        requests_mock: Mocker,
        no_backoff: list[float],
        method: str,
        args: tuple[Any, ...],
        url: str,
        id_field: str,
        answers: list[Any],
        waits: list[tuple[float, float]],
    ) -> None:
        requests_mock.post(url, [ok({id_field: "new-1"}) if a == "created" else a for a in answers])

        assert getattr(hook, method)(*args) == "new-1"

        assert requests_mock.call_count == 2
        assert within(no_backoff, waits), no_backoff

    @CREATIONS
    @pytest.mark.parametrize("answer", MAY_HAVE_CREATED, ids=MAY_HAVE_CREATED_IDS)
    def test_never_resent_after_it_may_have_reached_crun(
        self,
        hook: CrunHook,
        requests_mock: Mocker,
        no_backoff: list[float],
        method: str,
        args: tuple[Any, ...],
        url: str,
        id_field: str,
        answer: dict[str, Any],
    ) -> None:
        requests_mock.post(url, [answer, ok({id_field: "second-job"})])

        with pytest.raises(CrunCreationUnknownError) as raised:
            getattr(hook, method)(*args)

        assert requests_mock.call_count == 1
        assert no_backoff == []
        assert isinstance(raised.value, AirflowFailException)
        assert "may have created and billed the job" in str(raised.value)
        assert TEST_API_KEY not in str(raised.value)

    @CREATIONS
    def test_a_success_answer_without_the_id_is_creation_unknown(
        self,
        hook: CrunHook,
        requests_mock: Mocker,
        no_backoff: list[float],
        method: str,
        args: tuple[Any, ...],
        url: str,
        id_field: str,
    ) -> None:
        # Code 200: Crun created (and billed) the job, but the answer does not say which.
        requests_mock.post(url, [ok({"unexpected": "shape"}), ok({id_field: "second-job"})])

        with pytest.raises(CrunCreationUnknownError):
            getattr(hook, method)(*args)

        assert requests_mock.call_count == 1

    @CREATIONS
    @pytest.mark.parametrize(
        ("code", "twin"),
        [(401, CrunAuthError), (402, CrunInsufficientCreditsError), (422, CrunValidationError)],
        ids=["401", "402", "422"],
    )
    def test_a_rejection_keeps_its_own_class(
        self,
        hook: CrunHook,
        requests_mock: Mocker,
        method: str,
        args: tuple[Any, ...],
        url: str,
        id_field: str,
        code: int,
        twin: type[CrunError],
    ) -> None:
        requests_mock.post(url, **api_error(code))

        with pytest.raises(twin):
            getattr(hook, method)(*args)

        assert requests_mock.call_count == 1

    def test_rate_limited_forever_gives_up_after_max_retries(
        self, hook: CrunHook, requests_mock: Mocker, no_backoff: list[float]
    ) -> None:
        requests_mock.post(CREATE, **api_error(429))

        with pytest.raises(CrunRateLimitError):
            hook.create_task("m", {"a": 1})

        assert requests_mock.call_count == 4


# --------------------------------------------------------------------------------------------
# Blocking waits, on a fake clock


class TestWaitForJob:
    def test_polls_until_success_and_logs_each_change_dated_from_creation(
        self, crun_conn: str, requests_mock: Mocker
    ) -> None:
        requests_mock.get(
            TASK_INFO, [ok(task_data("pending")), ok(task_data("running")), ok(task_data("success"))]
        )
        clock = FakeClock(start=1_800_000_010.0)  # ten seconds after task_data's create_at

        with capture_logs() as entries:
            result = CrunHook(crun_conn, clock=clock).wait_for_job(
                jobs.TASK, TASK_ID, poll_interval=5, deadline=clock.time() + 600
            )

        assert result == TASK_SUMMARY
        assert clock.sleeps == [5, 5]
        assert change_lines(entries) == [
            f"Crun task {TASK_ID}: (start) -> pending, 10.0 s after it was created",
            f"Crun task {TASK_ID}: pending -> running, 15.0 s after it was created",
            f"Crun task {TASK_ID}: running -> success, 20.0 s after it was created",
        ]

    def test_unchanged_status_is_not_logged_again(self, crun_conn: str, requests_mock: Mocker) -> None:
        requests_mock.get(TASK_INFO, [ok(task_data("running"))] * 3 + [ok(task_data("success"))])
        clock = FakeClock()

        with capture_logs() as entries:
            CrunHook(crun_conn, clock=clock).wait_for_job(
                jobs.TASK, TASK_ID, poll_interval=5, deadline=clock.time() + 600
            )

        assert [line.split(",")[0] for line in change_lines(entries)] == [
            f"Crun task {TASK_ID}: (start) -> running",
            f"Crun task {TASK_ID}: running -> success",
        ]

    @pytest.mark.parametrize("limit", ["timeout", "execution_timeout"], ids=["timeout", "execution-timeout"])
    def test_deadline_raises_a_timeout_naming_the_limit_with_a_last_poll_at_the_deadline(
        self, crun_conn: str, requests_mock: Mocker, limit: str
    ) -> None:
        requests_mock.get(TASK_INFO, **ok(task_data("running")))
        clock = FakeClock()
        deadline = clock.time() + 12

        with pytest.raises(CrunTimeoutError) as raised:
            CrunHook(crun_conn, clock=clock).wait_for_job(
                jobs.TASK, TASK_ID, poll_interval=5, deadline=deadline, limit=limit
            )

        assert raised.value.limit == limit
        assert f"(its {limit})" in str(raised.value)
        assert TASK_ID in str(raised.value)
        assert "Last status: 'running'" in str(raised.value)
        assert not isinstance(raised.value, AirflowFailException)
        # Polls at 0, 5 and 10, a shortened sleep, and a last poll right at the deadline.
        assert clock.sleeps == [5, 5, 2]
        assert requests_mock.call_count == 4
        assert clock.time() == deadline

    @pytest.mark.parametrize(
        ("deadline_in", "sleeps", "reads", "raised"),
        [
            (90, [60, 30], 3, CrunTimeoutError),
            (150, [60, 60, 30], 4, CrunRateLimitError),
        ],
        ids=["deadline-cuts-the-retries-short -> timeout", "retries-used-up-at-the-deadline -> the-error"],
    )
    def test_retry_after_waits_end_at_the_deadline(
        self,
        crun_conn: str,
        requests_mock: Mocker,
        deadline_in: float,
        sleeps: list[float],
        reads: int,
        raised: type[CrunError],
    ) -> None:
        """
        As the trigger decides (tests/unit/triggers/test_poll.py, the same table): no wait runs
        past the deadline, the last read is right at it, and only retries cut short by it end
        the wait as a timeout; retries used up (4 reads with max_retries 3) raise the error.
        """
        requests_mock.get(TASK_INFO, **api_error(429, headers={"Retry-After": "60"}))
        clock = FakeClock()
        deadline = clock.time() + deadline_in

        with pytest.raises(CrunError) as caught:
            CrunHook(crun_conn, clock=clock).wait_for_job(
                jobs.TASK, TASK_ID, poll_interval=5, deadline=deadline
            )

        assert type(caught.value) is raised
        assert clock.sleeps == sleeps
        assert clock.time() == deadline
        assert requests_mock.call_count == reads
        assert "Crun API error 429" in str(caught.value)
        assert not isinstance(caught.value, AirflowFailException)

    def test_failed_job_raises_with_crun_explanation(self, crun_conn: str, requests_mock: Mocker) -> None:
        requests_mock.get(TASK_INFO, [ok(task_data("running")), ok(task_data("failed"))])
        clock = FakeClock()

        with pytest.raises(CrunJobFailedError) as raised:
            CrunHook(crun_conn, clock=clock).wait_for_job(
                jobs.TASK, TASK_ID, poll_interval=5, deadline=clock.time() + 600
            )

        assert str(raised.value) == f"Crun task {TASK_ID} failed: the model crashed (code 500)"
        assert raised.value.job_id == TASK_ID
        assert isinstance(raised.value, AirflowFailException)

    def test_501_on_a_read_is_the_jobs_failure(self, crun_conn: str, requests_mock: Mocker) -> None:
        requests_mock.get(TASK_INFO, [ok(task_data("running")), api_error(501, in_body=True)])
        clock = FakeClock()

        with pytest.raises(CrunJobFailedError) as raised:
            CrunHook(crun_conn, clock=clock).wait_for_job(
                jobs.TASK, TASK_ID, poll_interval=5, deadline=clock.time() + 600
            )

        assert type(raised.value) is CrunJobFailedError
        assert str(raised.value) == f"Crun task {TASK_ID} failed: crun error 501 (code 501)"
        assert raised.value.job_id == TASK_ID
        assert requests_mock.call_count == 2

    def test_permanent_read_error_ends_the_wait_at_once(self, crun_conn: str, requests_mock: Mocker) -> None:
        requests_mock.get(TASK_INFO, [ok(task_data("running")), api_error(404), ok(task_data("success"))])
        clock = FakeClock()

        with pytest.raises(CrunNotFoundError):
            CrunHook(crun_conn, clock=clock).wait_for_job(
                jobs.TASK, TASK_ID, poll_interval=5, deadline=clock.time() + 600
            )

        assert requests_mock.call_count == 2

    def test_read_retries_sleep_on_the_hooks_clock(self, crun_conn: str, requests_mock: Mocker) -> None:
        requests_mock.get(
            TASK_INFO,
            [
                api_error(429, headers={"Retry-After": "4"}),
                ok(task_data("running")),
                ok(task_data("success")),
            ],
        )
        clock = FakeClock()

        CrunHook(crun_conn, clock=clock).wait_for_job(
            jobs.TASK, TASK_ID, poll_interval=5, deadline=clock.time() + 600
        )

        assert clock.sleeps == [4.0, 5]

    def test_malformed_summary_raises_instead_of_guessing(
        self, crun_conn: str, requests_mock: Mocker, no_backoff: list[float]
    ) -> None:
        requests_mock.get(TASK_INFO, **ok(task_data("success", result={"media_urls": ["ftp://x"]})))
        clock = FakeClock()

        with pytest.raises(CrunMalformedResponseError, match="not an http"):
            CrunHook(crun_conn, clock=clock).wait_for_job(
                jobs.TASK, TASK_ID, poll_interval=5, deadline=clock.time() + 600
            )

    def test_wait_for_task_sets_its_deadline_from_timeout(
        self, crun_conn: str, requests_mock: Mocker
    ) -> None:
        requests_mock.get(TASK_INFO, **ok(task_data("running")))
        clock = FakeClock()
        start = clock.time()

        with pytest.raises(CrunTimeoutError) as raised:
            CrunHook(crun_conn, clock=clock).wait_for_task(TASK_ID, poll_interval=10, timeout=25)

        assert clock.time() == start + 25
        assert raised.value.limit == "timeout"

    def test_wait_for_face_detection_returns_the_detection_summary(
        self, crun_conn: str, requests_mock: Mocker
    ) -> None:
        requests_mock.get(DETECT_RESULT, [ok(detection_data("processing")), ok(detection_data())])
        clock = FakeClock()

        result = CrunHook(crun_conn, clock=clock).wait_for_face_detection(DETECT_TASK_ID, poll_interval=3)

        assert result == DETECTION_SUMMARY
        assert clock.sleeps == [3]
        assert requests_mock.last_request.qs == {"detect_task_id": [DETECT_TASK_ID.lower()]}


# --------------------------------------------------------------------------------------------
# Connection settings


class TestConnection:
    def test_missing_key_names_the_connection_and_sends_nothing(
        self, monkeypatch: pytest.MonkeyPatch, requests_mock: Mocker
    ) -> None:
        monkeypatch.setenv("AIRFLOW_CONN_CRUN_OTHER", crun_connection_json(api_key=None))

        with pytest.raises(CrunConfigError, match="'crun_other' has no API key") as raised:
            CrunHook("crun_other").get_balance()

        assert isinstance(raised.value, AirflowFailException)
        assert requests_mock.call_count == 0

    @pytest.mark.parametrize(
        "host",
        ["http://api.crun.ai", "http://10.0.0.5:8089", "http://localhost.evil.example"],
        ids=["public-host", "private-ip", "localhost-lookalike"],
    )
    def test_plain_http_to_a_non_loopback_host_is_refused_before_sending(
        self, monkeypatch: pytest.MonkeyPatch, requests_mock: Mocker, host: str
    ) -> None:
        monkeypatch.setenv("AIRFLOW_CONN_CRUN_DEFAULT", crun_connection_json(host=host))

        with pytest.raises(CrunConfigError, match="unencrypted"):
            CrunHook().create_task("m", {"a": 1})

        assert requests_mock.call_count == 0

    @pytest.mark.parametrize(
        ("host", "base_url"),
        [
            ("http://localhost:8089", "http://localhost:8089/api/v1"),
            ("http://[::1]:8089/api/v1/", "http://[::1]:8089/api/v1"),
            ("api.crun.ai", "https://api.crun.ai/api/v1"),
            (None, "https://api.crun.ai/api/v1"),
        ],
        ids=["http-localhost", "http-ipv6-loopback-with-prefix", "bare-host-gets-https", "default"],
    )
    def test_accepted_hosts_and_their_base_url(
        self, monkeypatch: pytest.MonkeyPatch, host: str | None, base_url: str
    ) -> None:
        conn: dict[str, Any] = {"conn_type": "crun", "password": TEST_API_KEY}
        if host is not None:
            conn["host"] = host
        monkeypatch.setenv("AIRFLOW_CONN_CRUN_DEFAULT", json.dumps(conn))

        assert CrunHook().settings.base_url == base_url

    @pytest.mark.parametrize("timeout", [0.5, 0, -1, "soon"], ids=["half-second", "zero", "negative", "text"])
    def test_timeout_extra_below_one_second_is_refused(
        self, monkeypatch: pytest.MonkeyPatch, requests_mock: Mocker, timeout: object
    ) -> None:
        monkeypatch.setenv("AIRFLOW_CONN_CRUN_DEFAULT", crun_connection_json(timeout=timeout))

        with pytest.raises(CrunConfigError, match="'timeout'"):
            CrunHook().get_balance()

        assert requests_mock.call_count == 0

    def test_extras_reach_the_settings(self, monkeypatch: pytest.MonkeyPatch) -> None:
        proxy = "http://user:pw@proxy.example.com:3128"
        monkeypatch.setenv(
            "AIRFLOW_CONN_CRUN_DEFAULT", crun_connection_json(timeout=12, max_retries=0, proxy=proxy)
        )

        settings = CrunHook().settings

        assert (settings.timeout, settings.max_retries, settings.proxy) == (12.0, 0, proxy)
        assert "pw@" not in repr(settings)

    @pytest.mark.parametrize(
        "proxy",
        [
            "socks5://user:Pr0xyPa55@proxy.example.com:1080",
            "user:Pr0xyPa55@proxy.example.com",
            "http://:3128",
        ],
        ids=["socks-scheme", "no-scheme", "no-host"],
    )
    def test_bad_proxy_extra_is_refused_without_echoing_it(
        self, monkeypatch: pytest.MonkeyPatch, requests_mock: Mocker, proxy: str
    ) -> None:
        monkeypatch.setenv("AIRFLOW_CONN_CRUN_DEFAULT", crun_connection_json(proxy=proxy))

        with pytest.raises(CrunConfigError, match="'proxy' must be an http") as raised:
            CrunHook().get_balance()

        assert proxy not in str(raised.value)
        assert "Pr0xyPa55" not in str(raised.value)
        assert requests_mock.call_count == 0

    def test_the_connection_is_read_once_per_hook(
        self, hook: CrunHook, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        first = hook.settings
        monkeypatch.setenv("AIRFLOW_CONN_CRUN_DEFAULT", crun_connection_json(api_key=None))

        assert hook.settings is first


# --------------------------------------------------------------------------------------------
# Secrecy


class TestSecrecy:
    def test_the_key_is_in_no_error_text_repr_or_log(
        self, hook: CrunHook, requests_mock: Mocker, no_backoff: list[float]
    ) -> None:
        requests_mock.get(BALANCE, [api_error(429), {"exc": requests.ReadTimeout}, api_error(401)])
        requests_mock.post(CREATE, exc=reset_after_send())
        requests_mock.get(TASK_INFO, text="<html>oops</html>")

        with capture_logs() as entries:
            raised: list[BaseException] = []
            for call in (
                hook.get_balance,
                lambda: hook.create_task("m", {"a": 1}),
                lambda: hook.get_task("t"),
            ):
                with pytest.raises(CrunError) as caught:
                    call()
                raised.append(caught.value)
            healthy, message = hook.test_connection()

        texts = [repr(hook), repr(hook.settings), message, json.dumps(entries, default=str)]
        for error in raised:
            texts += [str(error), repr(error), json.dumps(error.fields(), default=str)]  # type: ignore[attr-defined]
        assert [type(error) for error in raised] == [
            CrunAuthError,
            CrunCreationUnknownError,
            CrunMalformedResponseError,
        ]
        assert not healthy
        assert [text for text in texts if TEST_API_KEY in text] == []

    def test_a_key_echoed_by_crun_is_masked_in_the_error(self, hook: CrunHook, requests_mock: Mocker) -> None:
        body = {"code": 401, "message": f"invalid api key {TEST_API_KEY}", "data": None}
        requests_mock.get(BALANCE, status_code=401, json=body)

        with pytest.raises(CrunAuthError) as raised:
            hook.get_balance()

        assert TEST_API_KEY not in str(raised.value)
        assert TEST_API_KEY not in repr(raised.value)

    def test_redact_masks_the_key_in_text_and_nested_data(self, hook: CrunHook) -> None:
        hook.settings  # noqa: B018 (loads the key)
        value = {"message": f"key={TEST_API_KEY}", "nested": [f"{TEST_API_KEY}!", 3, None], "n": 1.5}

        assert hook.redact(value) == {"message": "key=***", "nested": ["***!", 3, None], "n": 1.5}
        assert hook.redact(TEST_API_KEY) == "***"

    def test_redact_before_the_connection_is_read_changes_nothing(self, hook: CrunHook) -> None:
        assert hook.redact({"message": TEST_API_KEY}) == {"message": TEST_API_KEY}
