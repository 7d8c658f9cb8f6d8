"""Every bad operator argument fails before any request, naming the value and the fix."""

from __future__ import annotations

from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_crun.exceptions import CrunInputError
from airflow_provider_crun.operators.crun import (
    CrunCreateTaskOperator,
    CrunDetectFacesOperator,
    CrunFaceSwapOperator,
    CrunMultiFaceSwapOperator,
)
from tests.unit.test_operators import (
    DETECT_ID,
    FACE_0,
    IMAGE,
    NEW_FACE,
    _crun_env,  # noqa: F401  (autouse fixture: loopback connection, no sleeping)
    detection_xcom,
    make_context,
)

OTHER_IMAGE = "https://cdn.example/other-photo.png"


def test_input_errors_are_not_retried() -> None:
    assert issubclass(CrunInputError, AirflowFailException)


def _without(mapping: dict[str, Any], key: str) -> dict[str, Any]:
    return {name: value for name, value in mapping.items() if name != key}


MULTI_FACE_ERRORS = [
    # (operator arguments, fragments the message must hold: the offending value and the fix)
    (
        {"detection": detection_xcom(), "faces": {2: NEW_FACE}},
        ["Face id 2", "found faces [0, 1]", "Use one of those ids"],
    ),
    (
        {"faces": [{"face_id": 0, "target": NEW_FACE}, {"face_id": 0, "target": FACE_0}]},
        ["Face id 0 appears more than once", "one target"],
    ),
    ({"faces": {0: NEW_FACE, "0": FACE_0}}, ["Face id 0 appears more than once", "one target"]),
    ({"faces": {"left": NEW_FACE}}, ["Face id 'left'", "integers 0, 1"]),
    ({"faces": {1.5: NEW_FACE}}, ["Face id 1.5", "integers 0, 1"]),
    ({"faces": {True: NEW_FACE}}, ["Face id True", "integers 0, 1"]),
    ({"faces": {-1: NEW_FACE}}, ["Face id -1", "integers 0, 1"]),
    ({"faces": [{"face_id": None, "target": NEW_FACE}]}, ["Face id None", "integers 0, 1"]),
    ({"faces": {0: "new-face.jpg"}}, ["'new-face.jpg'", "not an http(s) URL", "https://example.com"]),
    ({"faces": {0: "ftp://cdn.example/x.jpg"}}, ["'ftp://cdn.example/x.jpg'", "not an http(s) URL"]),
    ({"faces": {0: "https://"}}, ["'https://'", "not an http(s) URL"]),
    ({"faces": {0: None}}, ["target of face 0=None", "not an http(s) URL"]),
    ({"faces": {}}, ["faces={}", "is empty", "at least one face"]),
    ({"faces": []}, ["faces=[]", "is empty", "at least one face"]),
    ({"faces": 42}, ["faces=42", "neither a list nor a mapping", '{0: "https://..."}']),
    ({"faces": "face 1 please"}, ["faces='face 1 please'", "render_template_as_native_obj"]),
    ({"faces": [{"face": 0}]}, ["{'face': 0}", "'face_id'"]),
    (
        {"detection": detection_xcom(), "image_url": OTHER_IMAGE},
        [repr(OTHER_IMAGE), "differs from the detected image", "Leave image_url out"],
    ),
    (
        {"detection": detection_xcom(), "detect_id": "other-id"},
        ["detect_id='other-id'", "Leave detect_id out"],
    ),
    (
        {"detection": detection_xcom(expires_in=-1)},
        [f"detection {DETECT_ID!r} expired", "Clear the face detection task"],
    ),
    ({"detection": None, "image_url": IMAGE}, ["detect_id=None", "pass detection="]),
    ({"detection": None, "detect_id": DETECT_ID}, ["image_url is missing", "pass detection="]),
    (
        {"detection": None, "detect_id": DETECT_ID, "image_url": "{{ params.image }}"},
        ["'{{ params.image }}'", "full URL"],
    ),
    ({"detection": [1, 2]}, ["detection=[1, 2]", "not a mapping", "detection=detect.output"]),
    (
        {"detection": _without(detection_xcom(), "expires_at")},
        ["lacks expires_at", "detection=detect.output"],
    ),
    ({"detection": detection_xcom(faces={0: FACE_0})}, ["'faces' is not a list", "detect.output"]),
    ({"detection": detection_xcom(faces=[{"id": 0}])}, ["face {'id': 0} has no 'link'", "detect.output"]),
    ({"detection": detection_xcom(faces=[{"link": FACE_0}])}, ["has no 'id'", "detect.output"]),
    ({"detection": detection_xcom(expires_at="soon")}, ["expires_at 'soon'", "ISO-8601"]),
    ({"detection": detection_xcom(detect_id="")}, ["'detect_id' is not a non-empty string", "detect.output"]),
    ({"detection": detection_xcom(image_url="photo.png")}, ["detection['image_url']='photo.png'"]),
    ({"detection": "{not really a dict"}, ["render_template_as_native_obj"]),
    ({"disable_safety_checker": "yes"}, ["disable_safety_checker='yes'", "True or False"]),
]
MULTI_FACE_ERROR_IDS = [
    "face-not-detected",
    "duplicate-face-id-in-list",
    "duplicate-face-id-int-and-str",
    "non-integer-face-id-word",
    "non-integer-face-id-float",
    "non-integer-face-id-bool",
    "negative-face-id",
    "missing-face-id",
    "target-not-a-url",
    "target-ftp-url",
    "target-url-without-host",
    "target-none",
    "empty-mapping",
    "empty-list",
    "faces-not-a-collection",
    "faces-unparsable-text",
    "faces-entry-without-face-id",
    "image-url-differs-from-detection",
    "detect-id-differs-from-detection",
    "detection-expired",
    "no-detection-no-detect-id",
    "no-detection-no-image-url",
    "no-detection-bad-image-url",
    "detection-not-a-mapping",
    "detection-missing-key",
    "detection-faces-not-a-list",
    "detection-face-without-link",
    "detection-face-without-id",
    "detection-bad-expires-at",
    "detection-empty-detect-id",
    "detection-bad-image-url",
    "detection-unparsable-text",
    "safety-checker-not-bool",
]


@pytest.mark.parametrize(("arguments", "fragments"), MULTI_FACE_ERRORS, ids=MULTI_FACE_ERROR_IDS)
def test_multi_face_swap_refuses_before_any_request(
    requests_mock: Any, arguments: dict[str, Any], fragments: list[str]
) -> None:
    arguments = {"faces": {0: NEW_FACE}, "detection": detection_xcom(), **arguments}
    operator = CrunMultiFaceSwapOperator(task_id="swap", **arguments)

    with pytest.raises(CrunInputError) as info:
        operator.execute(make_context())

    for fragment in fragments:
        assert fragment in str(info.value)
    assert requests_mock.call_count == 0


@pytest.mark.parametrize(
    ("build", "fragments"),
    [
        (
            lambda: CrunFaceSwapOperator(task_id="t", image_url="{{ params.image }}", new_face=NEW_FACE),
            ["image_url='{{ params.image }}'", "not an http(s) URL"],
        ),
        (
            lambda: CrunFaceSwapOperator(task_id="t", image_url=IMAGE, new_face="{{ params.face }}"),
            ["new_face='{{ params.face }}'", "https://example.com"],
        ),
        (
            lambda: CrunDetectFacesOperator(task_id="t", image_url="{{ params.image }}"),
            ["image_url='{{ params.image }}'", "not an http(s) URL"],
        ),
        (
            lambda: CrunCreateTaskOperator(task_id="t", model="image-face-swap", input={}),
            ["input={}", "non-empty mapping"],
        ),
        (
            lambda: CrunCreateTaskOperator(task_id="t", model="image-face-swap", input="[1, 2]"),
            ["input='[1, 2]'", "non-empty mapping"],
        ),
        (
            lambda: CrunCreateTaskOperator(task_id="t", model="", input={"image_url": IMAGE}),
            ["model=''", "name a Crun model"],
        ),
        (
            lambda: CrunCreateTaskOperator(
                task_id="t", model="image-face-swap", input={"image_url": IMAGE}, callback_url="{{ x }}"
            ),
            ["callback_url='{{ x }}'", "not an http(s) URL"],
        ),
    ],
    ids=[
        "face-swap-image-url",
        "face-swap-new-face",
        "detect-image-url",
        "create-task-empty-input",
        "create-task-input-not-a-mapping",
        "create-task-empty-model",
        "create-task-callback-url",
    ],
)
def test_templated_values_are_checked_in_execute(
    requests_mock: Any, build: Any, fragments: list[str]
) -> None:
    """Templates pass __init__ (their value is unknown then); an unrendered or bad value fails execute."""
    operator = build()

    with pytest.raises(CrunInputError) as info:
        operator.execute(make_context())

    for fragment in fragments:
        assert fragment in str(info.value)
    assert requests_mock.call_count == 0


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        ({"image_url": "photo.png"}, "image_url='photo.png'"),
        ({"new_face": "file:///etc/passwd"}, "new_face='file:///etc/passwd'"),
        ({"callback_url": "hooks.example/crun"}, "callback_url='hooks.example/crun'"),
        ({"poll_interval": 0}, "poll_interval=0"),
        ({"poll_interval": -5}, "poll_interval=-5"),
        ({"poll_interval": "10"}, "poll_interval='10'"),
        ({"timeout": 0}, "timeout=0"),
        ({"timeout": True}, "timeout=True"),
    ],
    ids=[
        "image-url",
        "new-face-file-url",
        "callback-url-without-scheme",
        "poll-interval-zero",
        "poll-interval-negative",
        "poll-interval-text",
        "timeout-zero",
        "timeout-bool",
    ],
)
def test_plain_bad_values_fail_when_the_dag_is_parsed(arguments: dict[str, Any], fragment: str) -> None:
    with pytest.raises(CrunInputError, match=r"must be a number of seconds|not an http") as info:
        CrunFaceSwapOperator(task_id="t", **{"image_url": IMAGE, "new_face": NEW_FACE, **arguments})
    assert fragment in str(info.value)


@pytest.mark.parametrize("field", ["poll_interval", "timeout"])
def test_timing_is_checked_again_in_execute(requests_mock: Any, field: str) -> None:
    operator = CrunDetectFacesOperator(task_id="t", image_url=IMAGE)
    setattr(operator, field, 0)

    with pytest.raises(CrunInputError, match=f"{field}=0 must be a number of seconds greater than 0"):
        operator.execute(make_context())
    assert requests_mock.call_count == 0


def test_xcomarg_and_templates_are_not_checked_at_parse_time() -> None:
    CrunMultiFaceSwapOperator(task_id="swap", faces={}, detection={}, image_url="{{ params.image }}")
    CrunFaceSwapOperator(task_id="t", image_url="{{ params.image }}", new_face="{{ params.face }}")
