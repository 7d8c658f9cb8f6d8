"""The five Crun calls as data, and the fingerprint that ties a stored job to its request."""

from __future__ import annotations

import hashlib
import re

import pytest

from airflow_provider_crun import __version__
from airflow_provider_crun.protocol import calls


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (
            calls.detect_faces_request("https://img.example/a.png"),
            ("POST", "/client/job/detect-face-image", None, {"image_url": "https://img.example/a.png"}, True),
        ),
        (
            calls.detection_result_request("dit1"),
            ("GET", "/client/job/detect-face-result", {"detect_task_id": "dit1"}, None, False),
        ),
        (
            calls.create_task_request("m", {"a": 1}),
            ("POST", "/client/job/CreateTask", None, {"model": "m", "input": {"a": 1}}, True),
        ),
        (
            calls.create_task_request("m", {"a": 1}, "https://cb.example/hook"),
            (
                "POST",
                "/client/job/CreateTask",
                None,
                {"model": "m", "input": {"a": 1}, "callback_url": "https://cb.example/hook"},
                True,
            ),
        ),
        (calls.task_info_request("t1"), ("GET", "/client/job/TaskInfo", {"task_id": "t1"}, None, False)),
        (calls.balance_request(), ("GET", "/client/account/balance", None, None, False)),
    ],
    ids=[
        "detect-faces-is-billed",
        "detection-result",
        "create-task-omits-callback-when-none",
        "create-task-with-callback",
        "task-info",
        "balance-is-free",
    ],
)
def test_request(request_: calls.CrunRequest, expected: tuple[object, ...]) -> None:
    assert (
        request_.method,
        request_.path,
        request_.params,
        request_.body,
        request_.creates_billable,
    ) == expected


@pytest.mark.parametrize(
    ("request_", "id_field"),
    [
        (calls.detect_faces_request("https://img.example/a.png"), "detect_task_id"),
        (calls.create_task_request("m", {}), "task_id"),
        (calls.task_info_request("t1"), None),
        (calls.detection_result_request("d1"), None),
        (calls.balance_request(), None),
    ],
    ids=["detect-faces", "create-task", "task-info", "detection-result", "balance"],
)
def test_only_creations_name_an_id_field(request_: calls.CrunRequest, id_field: str | None) -> None:
    assert request_.id_field == id_field


def test_create_task_copies_the_input() -> None:
    swap_input = {"image_url": "https://img.example/a.png"}
    request = calls.create_task_request("m", swap_input)
    swap_input["image_url"] = "changed"
    assert request.body == {"model": "m", "input": {"image_url": "https://img.example/a.png"}}


def test_headers_carry_the_key_only_in_x_api_key() -> None:
    assert calls.request_headers("k") == {
        "x-api-key": "k",
        "User-Agent": f"airflow-provider-crun/{__version__}",
        "Accept": "application/json",
    }


class TestFingerprint:
    def test_format(self) -> None:
        assert re.fullmatch(r"sha256:[0-9a-f]{32}", calls.create_task_request("m", {"a": 1}).fingerprint)

    def test_stable_whatever_the_key_order(self) -> None:
        first = calls.create_task_request("m", {"a": 1, "b": {"x": 1, "y": 2}})
        second = calls.create_task_request("m", {"b": {"y": 2, "x": 1}, "a": 1})
        assert first.fingerprint == second.fingerprint

    def test_known_value_survives_releases(self) -> None:
        # Stored next to job ids: a change here makes every retry after an upgrade re-create its job.
        request = calls.detect_faces_request("https://img.example/a.png")
        canonical = (
            b'{"body":{"image_url":"https://img.example/a.png"},"path":"/client/job/detect-face-image"}'
        )
        assert request.fingerprint == "sha256:" + hashlib.sha256(canonical).hexdigest()[:32]

    @pytest.mark.parametrize(
        ("first", "second"),
        [
            (calls.create_task_request("m", {"a": 1}), calls.create_task_request("m", {"a": 2})),
            (calls.create_task_request("m", {"a": 1}), calls.create_task_request("n", {"a": 1})),
            (
                calls.create_task_request("m", {"a": 1}),
                calls.create_task_request("m", {"a": 1}, "https://cb.example/hook"),
            ),
            (
                calls.detect_faces_request("https://img.example/a.png"),
                calls.detect_faces_request("https://img.example/b.png"),
            ),
            (
                calls.CrunRequest("x", "POST", "/client/job/one", body={"a": 1}),
                calls.CrunRequest("x", "POST", "/client/job/two", body={"a": 1}),
            ),
        ],
        ids=["input-differs", "model-differs", "callback-differs", "image-differs", "path-differs"],
    )
    def test_differs_when_the_request_does(self, first: calls.CrunRequest, second: calls.CrunRequest) -> None:
        assert first.fingerprint != second.fingerprint


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (calls.task_info_request("task_1"), "TaskInfo task_1"),
        (calls.detection_result_request("dit_1"), "detect-face-result dit_1"),
        (calls.balance_request(), "balance"),
    ],
    ids=["task-read-names-the-task", "detection-read-names-the-detection", "balance-names-nothing-else"],
)
def test_description_names_the_call_and_its_job(request_: calls.CrunRequest, expected: str) -> None:
    assert request_.description == expected
