"""Reading a task or a detection: its phase, and the strict, typed summary of a success."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_crun.protocol import calls, errors, jobs
from tests.support.crun_answers import (
    DETECT_ID,
    DETECT_TASK_ID,
    FACE_0,
    FACE_1,
    RESULT,
    TASK_ID,
    detection_data,
    task_data,
)

FUZZ = settings(max_examples=300, deadline=None)


def detection_with(**result_changes: Any) -> dict[str, Any]:
    """The documented detection answer, with fields of its ``result`` replaced."""
    data = detection_data()
    data["result"] = {**data["result"], **result_changes}
    return data


def detection_with_face(**face: Any) -> dict[str, Any]:
    return detection_with(faces=[{"id": 0, "link": FACE_0}, face])


class TestJobPhase:
    @pytest.mark.parametrize(
        ("status", "phase"),
        [
            ("success", jobs.JobPhase.SUCCEEDED),
            ("succeeded", jobs.JobPhase.SUCCEEDED),
            ("succeed", jobs.JobPhase.SUCCEEDED),
            ("SUCCESS", jobs.JobPhase.SUCCEEDED),
            (" Succeeded ", jobs.JobPhase.SUCCEEDED),
            ("failed", jobs.JobPhase.FAILED),
            ("FAILED", jobs.JobPhase.FAILED),
            ("starting", jobs.JobPhase.RUNNING),
            ("processing", jobs.JobPhase.RUNNING),
            ("pending", jobs.JobPhase.RUNNING),
            ("Running", jobs.JobPhase.RUNNING),
            ("queued-in-new-region", jobs.JobPhase.UNKNOWN),
            ("", jobs.JobPhase.UNKNOWN),
        ],
        ids=lambda value: repr(value) if isinstance(value, str) else str(value),
    )
    def test_job_phase(self, status: str, phase: jobs.JobPhase) -> None:
        assert jobs.job_phase(status) is phase

    def test_only_succeeded_and_failed_are_terminal(self) -> None:
        assert {phase for phase in jobs.JobPhase if phase.is_terminal} == {
            jobs.JobPhase.SUCCEEDED,
            jobs.JobPhase.FAILED,
        }


class TestFailureDetail:
    @pytest.mark.parametrize(
        ("data", "detail"),
        [
            ({"status": "failed", "result": {"code": 501, "message": "no face"}}, "no face (code 501)"),
            ({"status": "failed", "result": {"message": "no face"}}, "no face"),
            ({"status": "failed", "error": "image unreachable"}, "image unreachable"),
            ({"status": "failed", "error": {"code": 7, "error": "bad image"}}, "bad image (code 7)"),
            ({"status": "failed", "error": None, "result": {"error": "bad image"}}, "bad image"),
            ({"status": "failed", "error": {"code": 7}, "result": "model crashed"}, "model crashed"),
            ({"status": "failed", "result": None}, "no detail"),
            (None, "no detail"),
            (["failed"], "no detail"),
        ],
        ids=[
            "result-code-message",
            "result-message-without-code",
            "error-text",
            "error-code-error",
            "result-error",
            "error-without-message-falls-back-to-result",
            "nothing",
            "no-data",
            "not-an-object",
        ],
    )
    def test_failure_detail(self, data: object, detail: str) -> None:
        assert jobs.failure_detail(data) == detail


@pytest.mark.parametrize(
    ("url", "usable"),
    [
        ("https://cdn.example.com/a.png", True),
        ("HTTP://cdn.example.com", True),
        ("http://[::1]:8089/a.png", True),
        ("ftp://cdn.example.com/a.png", False),
        ("https:///a.png", False),
        ("cdn.example.com/a.png", False),
        ("javascript:alert(1)", False),
        ("", False),
        ("http://[::1/a.png", False),
        ("https://cdn]example/a.png", False),
    ],
    ids=[
        "https",
        "upper-case-scheme",
        "ipv6-host",
        "ftp",
        "no-host",
        "no-scheme",
        "javascript",
        "empty",
        "unclosed-ipv6",
        "stray-bracket",
    ],
)
def test_is_http_url(url: str, usable: bool) -> None:
    assert jobs.is_http_url(url) is usable


class TestReadTask:
    @pytest.mark.parametrize("status", ["pending", "processing", "starting"], ids=lambda s: s)
    def test_running(self, status: str) -> None:
        read = jobs.read_task(task_data(status), TASK_ID)
        assert read == jobs.JobRead(jobs.JobPhase.RUNNING, status, created_at=1_800_000_000.0)

    def test_undocumented_status_is_unknown_lower_cased(self) -> None:
        read = jobs.read_task(task_data("Queued-In-Region"), TASK_ID)
        assert (read.phase, read.status, read.result) == (jobs.JobPhase.UNKNOWN, "queued-in-region", None)

    def test_missing_status_is_unknown(self) -> None:
        assert jobs.read_task({"task_id": TASK_ID}, TASK_ID) == jobs.JobRead(jobs.JobPhase.UNKNOWN, "")

    def test_failed_carries_crun_explanation(self) -> None:
        read = jobs.read_task(task_data("failed"), TASK_ID)
        assert (read.phase, read.failure, read.result) == (
            jobs.JobPhase.FAILED,
            "the model crashed (code 500)",
            None,
        )

    def test_success_summary(self) -> None:
        read = jobs.read_task(task_data("success"), TASK_ID)
        assert read.phase is jobs.JobPhase.SUCCEEDED
        assert read.created_at == 1_800_000_000.0
        assert read.result == {"status": "success", "media_urls": [RESULT], "credits": 6.0, "duration_s": 4.2}
        assert type(read.result["credits"]) is float

    def test_success_summary_leaves_out_undocumented_fields(self) -> None:
        data = task_data("success", huge_blob="x" * 10_000, extra={"nested": True})
        read = jobs.read_task(data, TASK_ID)
        assert read.result is not None
        assert set(read.result) == {"status", "media_urls", "credits", "duration_s"}

    @pytest.mark.parametrize(
        ("changes", "expected"),
        [
            ({"result": None}, []),
            ({"result": {}}, []),
            ({"result": {"media_urls": []}}, []),
            (
                {"result": {"media_urls": [RESULT, "HTTP://cdn.example.com/b.png"]}},
                [RESULT, "HTTP://cdn.example.com/b.png"],
            ),
        ],
        ids=["result-null", "result-without-media-urls", "no-media", "two-media-any-scheme-case"],
    )
    def test_success_media_urls(self, changes: dict[str, Any], expected: list[str]) -> None:
        read = jobs.read_task(task_data("success", **changes), TASK_ID)
        assert read.result is not None
        assert read.result["media_urls"] == expected

    def test_success_without_credits_or_duration(self) -> None:
        read = jobs.read_task(task_data("success", credits=None, duration_s=None), TASK_ID)
        assert read.result is not None
        assert (read.result["credits"], read.result["duration_s"]) == (None, None)

    @pytest.mark.parametrize(
        ("data", "fragment"),
        [
            (task_data("success", result={"media_urls": RESULT}), "result.media_urls is not a list"),
            (
                task_data("success", result={"media_urls": [RESULT, "not a url"]}),
                "a media URL is not an http",
            ),
            (
                task_data("success", result={"media_urls": ["ftp://cdn.example.com/a"]}),
                "a media URL is not an http",
            ),
            (task_data("success", result={"media_urls": [7]}), "a media URL is not an http"),
            (task_data("success", result={"media_urls": ["https:///no-host"]}), "a media URL is not an http"),
            (task_data("success", result=[RESULT]), "result is not an object"),
            (task_data("success", credits="6"), "credits is not a number"),
            (task_data("success", credits=True), "credits is not a number"),
            (task_data("success", duration_s="4s"), "duration_s is not a number"),
            (task_data("pending", create_at="yesterday"), "create_at is not a number"),
            ({**task_data("pending"), "status": 3}, "status is not a word"),
            (["success"], "the answer is not an object"),
            (None, "the answer is not an object"),
        ],
        ids=[
            "media-urls-not-a-list",
            "media-entry-not-a-url",
            "media-entry-ftp",
            "media-entry-a-number",
            "media-entry-without-host",
            "result-a-list",
            "credits-text-6",
            "credits-boolean",
            "duration-text",
            "create-at-text",
            "status-a-number",
            "answer-a-list",
            "answer-null",
        ],
    )
    def test_rejects(self, data: object, fragment: str) -> None:
        with pytest.raises(errors.MalformedResponseError) as raised:
            jobs.read_task(data, TASK_ID)
        assert f"Crun task {TASK_ID}: " in raised.value.message
        assert fragment in raised.value.message

    @pytest.mark.parametrize(
        "url", ["http://[::1/a.png", "https://cdn]example/a.png"], ids=["unclosed-ipv6", "bracket"]
    )
    def test_unparsable_media_url_is_malformed(self, url: str) -> None:
        with pytest.raises(errors.MalformedResponseError, match=TASK_ID):
            jobs.read_task(task_data("success", result={"media_urls": [url]}), TASK_ID)


class TestReadDetection:
    def test_documented_example(self) -> None:
        read = jobs.read_detection(detection_data(), DETECT_TASK_ID)
        assert read == jobs.JobRead(
            jobs.JobPhase.SUCCEEDED,
            "succeeded",
            result={"detect_id": DETECT_ID, "faces": [{"id": 0, "link": FACE_0}, {"id": 1, "link": FACE_1}]},
        )

    @pytest.mark.parametrize(
        ("changes", "expected"),
        [
            ({"faces": []}, {"detect_id": DETECT_ID, "faces": []}),
            (
                {"id": 12345},
                {"detect_id": "12345", "faces": [{"id": 0, "link": FACE_0}, {"id": 1, "link": FACE_1}]},
            ),
            (
                {"faces": [{"id": 3, "link": FACE_1, "box": [1, 2, 3, 4]}, {"id": 0, "link": FACE_0}]},
                {"detect_id": DETECT_ID, "faces": [{"id": 3, "link": FACE_1}, {"id": 0, "link": FACE_0}]},
            ),
        ],
        ids=["no-faces", "numeric-detect-id", "extra-face-fields-dropped-order-kept"],
    )
    def test_success_summary(self, changes: dict[str, Any], expected: dict[str, Any]) -> None:
        read = jobs.read_detection(detection_with(**changes), DETECT_TASK_ID)
        assert read.result == expected

    @pytest.mark.parametrize(
        ("status", "phase"),
        [
            ("pending", jobs.JobPhase.RUNNING),
            ("failed", jobs.JobPhase.FAILED),
            ("weird", jobs.JobPhase.UNKNOWN),
        ],
        ids=["pending", "failed", "unknown"],
    )
    def test_unfinished_or_failed_has_no_result(self, status: str, phase: jobs.JobPhase) -> None:
        read = jobs.read_detection(detection_data(status), DETECT_TASK_ID)
        assert (read.phase, read.result, read.created_at) == (phase, None, None)

    @pytest.mark.parametrize(
        ("data", "fragment"),
        [
            (detection_with_face(id="abc", link=FACE_1), "a face id is not a non-negative integer"),
            (detection_with_face(id=[1], link=FACE_1), "a face id is not a non-negative integer"),
            (detection_with_face(id=1.5, link=FACE_1), "a face id is not a non-negative integer"),
            (detection_with_face(id=1.0, link=FACE_1), "a face id is not a non-negative integer"),
            (detection_with_face(id=True, link=FACE_1), "a face id is not a non-negative integer"),
            (detection_with_face(id=-1, link=FACE_1), "a face id is not a non-negative integer"),
            (detection_with_face(id=None, link=FACE_1), "a face id is not a non-negative integer"),
            (detection_with_face(link=FACE_1), "a face id is not a non-negative integer"),
            (detection_with(faces={"0": FACE_0}), "result.faces is not a list"),
            (detection_with(faces="face-0"), "result.faces is not a list"),
            (detection_with(faces=None), "result.faces is not a list"),
            (detection_with(faces=[FACE_0]), "a face is not an object"),
            (detection_with_face(id=1), "a face link is not an http(s) URL"),
            (detection_with_face(id=1, link=""), "a face link is not an http(s) URL"),
            (
                detection_with_face(id=1, link="ftp://cdn.example.com/f.jpg"),
                "a face link is not an http(s) URL",
            ),
            (detection_with_face(id=1, link="javascript:alert(1)"), "a face link is not an http(s) URL"),
            (
                detection_with_face(id=1, link=["https://cdn.example.com/f.jpg"]),
                "a face link is not an http(s) URL",
            ),
            (detection_with_face(id=0, link=FACE_1), "two faces share an id"),
            (detection_with(id=None), "result.id (the detect_id) is missing"),
            (detection_with(id=""), "result.id (the detect_id) is missing"),
            (detection_with(id=True), "result.id (the detect_id) is missing"),
            (detection_with(id=["m1"]), "result.id (the detect_id) is missing"),
            ({**detection_data(), "result": None}, "result is not an object"),
            ({**detection_data(), "result": "m1oZzqYp9dN"}, "result is not an object"),
            ({"status": 200}, "status is not a word"),
            ("succeeded", "the answer is not an object"),
        ],
        ids=[
            "face-id-abc",
            "face-id-list",
            "face-id-1.5",
            "face-id-1.0",
            "face-id-true",
            "face-id-negative",
            "face-id-null",
            "face-id-missing",
            "faces-an-object",
            "faces-text",
            "faces-null",
            "face-not-an-object",
            "face-without-link",
            "face-link-empty",
            "face-link-ftp",
            "face-link-javascript",
            "face-link-a-list",
            "duplicate-face-ids",
            "result-id-missing",
            "result-id-empty",
            "result-id-boolean",
            "result-id-a-list",
            "result-null",
            "result-text",
            "status-a-number",
            "answer-text",
        ],
    )
    def test_rejects(self, data: object, fragment: str) -> None:
        with pytest.raises(errors.MalformedResponseError) as raised:
            jobs.read_detection(data, DETECT_TASK_ID)
        assert f"Crun face detection {DETECT_TASK_ID}: " in raised.value.message
        assert fragment in raised.value.message

    def test_issue_7_face_ids_and_links_are_never_guessed(self) -> None:
        """#7: "abc" raised ValueError, [1] TypeError, 1.5 became face 1, a missing link became ''."""
        for face in (
            {"id": "abc", "link": FACE_1},
            {"id": [1], "link": FACE_1},
            {"id": 1.5, "link": FACE_1},
            {"id": 1},
        ):
            with pytest.raises(errors.MalformedResponseError, match=DETECT_TASK_ID):
                jobs.read_detection(detection_with(faces=[face]), DETECT_TASK_ID)

    def test_unparsable_face_link_is_malformed(self) -> None:
        with pytest.raises(errors.MalformedResponseError, match=DETECT_TASK_ID):
            jobs.read_detection(detection_with_face(id=1, link="http://[::1/f.jpg"), DETECT_TASK_ID)


class TestJobKinds:
    @pytest.mark.parametrize(
        ("kind", "label", "id_key", "status_call", "reader"),
        [
            (jobs.TASK, "task", "crun_task_id", calls.task_info_request("j1"), jobs.read_task),
            (
                jobs.DETECTION,
                "face detection",
                "detect_task_id",
                calls.detection_result_request("j1"),
                jobs.read_detection,
            ),
        ],
        ids=["task", "detection"],
    )
    def test_kind(
        self, kind: jobs.JobKind, label: str, id_key: str, status_call: calls.CrunRequest, reader: object
    ) -> None:
        assert (kind.label, kind.id_key, kind.status_request("j1"), kind.read) == (
            label,
            id_key,
            status_call,
            reader,
        )
        assert jobs.JOB_KINDS[id_key] is kind


# ---------------------------------------------------------------------------------------------
# Fuzzing the readers: arbitrary JSON, and answers shaped like Crun's with wrong parts.

JOB_ID = "job-under-fuzz-7"
JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
JSON = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=12,
)
URL_PART = st.text(alphabet=st.characters(exclude_characters="/?#"), max_size=12)
URL_LIKE = st.builds(
    lambda scheme, host, path: f"{scheme}{host}/{path}",
    st.sampled_from(
        ["http://", "https://", "HTTPS://", "ftp://", "file://", "javascript:", "", "//", "http:"]
    ),
    URL_PART,
    URL_PART,
)
GOOD_URLS = st.builds(
    lambda scheme, host, path: f"{scheme}://{host}.example/{path}",
    st.sampled_from(["http", "https"]),
    st.from_regex(r"[a-z0-9]{1,10}", fullmatch=True),
    st.from_regex(r"[a-z0-9._-]{0,12}", fullmatch=True),
)
NUMBERS = st.none() | st.integers() | st.floats()
STATUS_WORDS = st.sampled_from(
    [
        "success",
        "succeeded",
        "succeed",
        "SUCCESS",
        "failed",
        "pending",
        "processing",
        "starting",
        "queued",
        "",
    ]
)

TASK_ANSWERS = JSON | st.fixed_dictionaries(
    {"status": STATUS_WORDS | JSON},
    optional={
        "task_id": JSON,
        "result": JSON
        | st.fixed_dictionaries({}, optional={"media_urls": st.lists(URL_LIKE | JSON, max_size=3) | JSON}),
        "credits": NUMBERS | JSON,
        "duration_s": NUMBERS | JSON,
        "create_at": NUMBERS | JSON,
        "error": JSON,
    },
)
FACES = st.lists(
    st.fixed_dictionaries(
        {},
        optional={"id": st.integers(min_value=-2, max_value=5) | JSON, "link": URL_LIKE | JSON, "box": JSON},
    )
    | JSON,
    max_size=4,
)
DETECTION_ANSWERS = JSON | st.fixed_dictionaries(
    {"status": STATUS_WORDS | JSON},
    optional={
        "detect_task_id": JSON,
        "error": JSON,
        "result": JSON
        | st.fixed_dictionaries(
            {},
            optional={
                "id": st.text(max_size=8) | st.integers() | JSON,
                "status": JSON,
                "faces": FACES | JSON,
            },
        ),
    },
)


def is_http_url(value: object) -> bool:
    """An oracle independent of the package's own check."""
    if not isinstance(value, str):
        return False
    try:
        parts = urlsplit(value)
        return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
    except ValueError:
        return False


def assert_read_well_typed(read: object) -> jobs.JobRead:
    assert isinstance(read, jobs.JobRead)
    assert isinstance(read.phase, jobs.JobPhase)
    assert isinstance(read.status, str)
    assert read.phase is jobs.job_phase(read.status)
    assert read.created_at is None or type(read.created_at) is float
    assert (read.failure is not None) is (read.phase is jobs.JobPhase.FAILED)
    assert isinstance(read.failure, str | None)
    assert (read.result is not None) is (read.phase is jobs.JobPhase.SUCCEEDED)
    json.dumps(read.result)
    return read


def assert_names_the_job(error: errors.MalformedResponseError, label: str) -> None:
    assert type(error) is errors.MalformedResponseError
    assert error.message.startswith(f"Crun {label} {JOB_ID}: ")


@FUZZ
@given(data=TASK_ANSWERS)
def test_fuzz_read_task(data: object) -> None:
    try:
        read = assert_read_well_typed(jobs.read_task(data, JOB_ID))
    except errors.MalformedResponseError as error:
        assert_names_the_job(error, "task")
        return
    if read.result is not None:
        assert set(read.result) == {"status", "media_urls", "credits", "duration_s"}
        assert isinstance(read.result["media_urls"], list)
        assert all(is_http_url(url) for url in read.result["media_urls"])
        for number in (read.result["credits"], read.result["duration_s"]):
            assert number is None or type(number) is float


@FUZZ
@given(data=DETECTION_ANSWERS)
def test_fuzz_read_detection(data: object) -> None:
    try:
        read = assert_read_well_typed(jobs.read_detection(data, JOB_ID))
    except errors.MalformedResponseError as error:
        assert_names_the_job(error, "face detection")
        return
    assert read.created_at is None
    if read.result is not None:
        assert set(read.result) == {"detect_id", "faces"}
        assert isinstance(read.result["detect_id"], str)
        assert read.result["detect_id"]
        ids = [face["id"] for face in read.result["faces"]]
        assert all(type(face_id) is int and face_id >= 0 for face_id in ids)
        assert len(set(ids)) == len(ids)
        assert all(set(face) == {"id", "link"} and is_http_url(face["link"]) for face in read.result["faces"])


@FUZZ
@given(
    detect_id=st.text(min_size=1, max_size=12).filter(str.strip) | st.integers(),
    faces=st.dictionaries(st.integers(min_value=0, max_value=10_000), GOOD_URLS, max_size=5),
)
def test_fuzz_read_detection_accepts_every_well_formed_answer(
    detect_id: str | int, faces: dict[int, str]
) -> None:
    answer = detection_with(
        id=detect_id, faces=[{"id": face_id, "link": link} for face_id, link in faces.items()]
    )
    read = jobs.read_detection(answer, JOB_ID)
    assert read.result == {
        "detect_id": str(detect_id),
        "faces": [{"id": face_id, "link": link} for face_id, link in faces.items()],
    }


@FUZZ
@given(
    urls=st.lists(GOOD_URLS, max_size=4),
    credits=st.none() | st.integers(min_value=0, max_value=10**6) | st.floats(min_value=0, max_value=1e6),
)
def test_fuzz_read_task_accepts_every_well_formed_answer(urls: list[str], credits: float | None) -> None:
    read = jobs.read_task(task_data("success", result={"media_urls": urls}, credits=credits), JOB_ID)
    assert read.result is not None
    assert read.result["media_urls"] == urls
    assert read.result["credits"] == (None if credits is None else float(credits))


@FUZZ
@given(data=JSON | st.fixed_dictionaries({}, optional={"error": JSON, "result": JSON, "status": JSON}))
def test_fuzz_failure_detail(data: object) -> None:
    detail = jobs.failure_detail(data)
    assert isinstance(detail, str)
    assert detail


def test_a_blank_detect_id_is_malformed() -> None:
    data = {"status": "succeeded", "result": {"id": "  ", "faces": []}}
    with pytest.raises(errors.MalformedResponseError, match="dit_blank"):
        jobs.read_detection(data, "dit_blank")


def test_failure_detail_is_one_line() -> None:
    assert jobs.failure_detail({"error": {"message": "the model\ncrashed\r\n  badly", "code": 501}}) == (
        "the model crashed badly (code 501)"
    )
