"""
Every bad argument fails before any request, with a message that names it and says the fix.

One table: each row builds an operator (a plain bad value fails right there, at DAG parse time)
and runs ``execute``. A row passes when the expected error names the field AND the fix, Airflow
will not retry it (``AirflowFailException``), nothing was remembered for a retry, and
requests-mock saw no request at all, so the mistake cost no credit.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException, BaseOperator

from airflow_provider_crun.exceptions import CrunConfigError, CrunInputError
from airflow_provider_crun.operators.detect import CrunDetectFacesOperator
from airflow_provider_crun.operators.swap import CrunFaceSwapOperator, CrunMultiFaceSwapOperator
from airflow_provider_crun.operators.task import CrunCreateTaskOperator
from tests.support.crun_answers import BASE, DETECT_ID, FACE_0, IMAGE, NEW_FACE, detection_xcom
from tests.support.fakes import FakeTaskStateStore, make_context

OTHER_IMAGE = "https://cdn.example.com/other-photo.png"
URL_FIX = "give a full URL such as 'https://example.com/photo.jpg'"
FACE_ID_FIX = "Face ids are the integers 0, 1, ..."
DETECTION_FIX = "detection=detect.output"
NO_DETECTION_FIX = "pass detection=<CrunDetectFacesOperator>.output, or both detect_id and image_url"


def swap(**changes: Any) -> CrunMultiFaceSwapOperator:
    """A multi-face swap fed by a valid detection unless ``changes`` say otherwise."""
    arguments: dict[str, Any] = {"task_id": "swap", "faces": {1: NEW_FACE}, "detection": detection_xcom()}
    arguments.update(changes)
    return CrunMultiFaceSwapOperator(**arguments)


def face_swap(**changes: Any) -> CrunFaceSwapOperator:
    arguments: dict[str, Any] = {"task_id": "swap1", "image_url": IMAGE, "new_face": NEW_FACE}
    arguments.update(changes)
    return CrunFaceSwapOperator(**arguments)


def create(**changes: Any) -> CrunCreateTaskOperator:
    arguments: dict[str, Any] = {
        "task_id": "create",
        "model": "image-face-swap",
        "input": {"image_url": IMAGE},
    }
    arguments.update(changes)
    return CrunCreateTaskOperator(**arguments)


def detect(**changes: Any) -> CrunDetectFacesOperator:
    return CrunDetectFacesOperator(**{"task_id": "detect", "image_url": IMAGE, **changes})


def rendered(operator: BaseOperator, **values: Any) -> BaseOperator:
    """Set template fields as Airflow does after rendering: past the parse-time checks."""
    for name, value in values.items():
        setattr(operator, name, value)
    return operator


def without(mapping: dict[str, Any], key: str) -> dict[str, Any]:
    return {name: value for name, value in mapping.items() if name != key}


@dataclass(frozen=True)
class Case:
    """
    One invalid input.

    :param build: Builds the operator (a parse-time check raises right there).
    :param names: Text naming the offending field (and usually its value).
    :param fix: Text of the fix the message proposes.
    :param error: The expected class.
    :param conn: Changes to the ``crun_default`` connection; ``None`` removes a field.
    :param stored: What an earlier try left in ``task_state_store``.
    """

    build: Callable[[], BaseOperator]
    names: str
    fix: str
    error: type[Exception] = CrunInputError
    conn: dict[str, Any] = field(default_factory=dict)
    stored: dict[str, Any] = field(default_factory=dict)


CASES: dict[str, Case] = {
    # -- URLs, plain (refused when the DAG is parsed) ----------------------------------------------
    "detect: image_url not a URL": Case(
        lambda: detect(image_url="group photo.png"),
        "image_url='group photo.png' is not an http(s) URL",
        URL_FIX,
    ),
    "detect: image_url ftp://": Case(
        lambda: detect(image_url="ftp://127.0.0.1/group.png"),
        "image_url='ftp://127.0.0.1/group.png'",
        URL_FIX,
    ),
    "face swap: image_url without scheme": Case(
        lambda: face_swap(image_url="photo.png"), "image_url='photo.png'", URL_FIX
    ),
    "face swap: new_face not a URL": Case(
        lambda: face_swap(new_face="face.jpg"), "new_face='face.jpg'", URL_FIX
    ),
    "face swap: new_face file://": Case(
        lambda: face_swap(new_face="file:///etc/passwd"), "new_face='file:///etc/passwd'", URL_FIX
    ),
    "face swap: callback_url without scheme": Case(
        lambda: face_swap(callback_url="hooks.example/crun"), "callback_url='hooks.example/crun'", URL_FIX
    ),
    "multi swap: callback_url ftp://": Case(
        lambda: swap(callback_url="ftp://127.0.0.1/hook"), "callback_url='ftp://127.0.0.1/hook'", URL_FIX
    ),
    "multi swap: image_url not a URL": Case(
        lambda: swap(image_url="photo.png"), "image_url='photo.png'", URL_FIX
    ),
    # -- URLs, rendered (refused in execute) -----------------------------------------------------
    "detect: rendered image_url file://": Case(
        lambda: rendered(detect(image_url="{{ params.image }}"), image_url="file:///etc/passwd"),
        "image_url='file:///etc/passwd'",
        URL_FIX,
    ),
    "detect: unrendered image_url template": Case(
        lambda: detect(image_url="{{ params.image }}"), "image_url='{{ params.image }}'", URL_FIX
    ),
    "face swap: unrendered image_url template": Case(
        lambda: face_swap(image_url="{{ params.image }}"), "image_url='{{ params.image }}'", URL_FIX
    ),
    "face swap: unrendered new_face template": Case(
        lambda: face_swap(new_face="{{ params.face }}"), "new_face='{{ params.face }}'", URL_FIX
    ),
    "create: unrendered callback_url template": Case(
        lambda: create(callback_url="{{ x }}"), "callback_url='{{ x }}'", URL_FIX
    ),
    "multi swap: rendered callback_url ftp://": Case(
        lambda: rendered(swap(callback_url="{{ x }}"), callback_url="ftp://hooks.example/crun"),
        "callback_url='ftp://hooks.example/crun'",
        URL_FIX,
    ),
    # -- faces ---------------------------------------------------------------------------------
    "faces: target not a URL": Case(
        lambda: swap(faces={1: "new-face.png"}), "the target of face 1='new-face.png'", URL_FIX
    ),
    "faces: target ftp://": Case(
        lambda: swap(faces={0: "ftp://cdn.example/x.jpg"}),
        "the target of face 0='ftp://cdn.example/x.jpg'",
        URL_FIX,
    ),
    "faces: target without host": Case(
        lambda: swap(faces={0: "https://"}), "the target of face 0='https://'", URL_FIX
    ),
    "faces: target None": Case(lambda: swap(faces={0: None}), "the target of face 0=None", URL_FIX),
    "faces: empty mapping": Case(lambda: swap(faces={}), "faces={} is empty", "Name at least one face"),
    "faces: empty list": Case(lambda: swap(faces=[]), "faces=[] is empty", "Name at least one face"),
    "faces: neither list nor mapping": Case(
        lambda: swap(faces=42),
        "faces=42 is neither a list nor a mapping",
        'Give faces as a list like [{"face_id"',
    ),
    "faces: face id not detected": Case(
        lambda: swap(faces={7: NEW_FACE}),
        "Face id 7 in faces was not detected",
        "found faces [0, 1]. Use one of those",
    ),
    "faces: duplicate face id in the list": Case(
        lambda: swap(faces=[{"face_id": 0, "target": NEW_FACE}, {"face_id": 0, "target": FACE_0}]),
        "Face id 0 appears more than once in faces",
        "Give each face one target",
    ),
    "faces: duplicate face id as int and text": Case(
        lambda: swap(faces={0: NEW_FACE, "0": FACE_0}),
        "Face id 0 appears more than once in faces",
        "Give each face one target",
    ),
    "faces: face id a word": Case(
        lambda: swap(faces={"left": NEW_FACE}), "Face id 'left' in faces", FACE_ID_FIX
    ),
    "faces: face id a float": Case(lambda: swap(faces={1.5: NEW_FACE}), "Face id 1.5 in faces", FACE_ID_FIX),
    "faces: face id a bool": Case(
        lambda: swap(faces=[{"face_id": True, "target": NEW_FACE}]), "Face id True in faces", FACE_ID_FIX
    ),
    "faces: face id negative": Case(lambda: swap(faces={-1: NEW_FACE}), "Face id -1 in faces", FACE_ID_FIX),
    "faces: face id None": Case(
        lambda: swap(faces=[{"face_id": None, "target": NEW_FACE}]), "Face id None in faces", FACE_ID_FIX
    ),
    "faces: entry without target": Case(
        lambda: swap(faces=[{"face_id": 0}]), "faces holds {'face_id': 0}", "Give faces as a list like"
    ),
    "faces: entry without face_id": Case(
        lambda: swap(faces=[{"face": 0}]), "faces holds {'face': 0}", "Give faces as a list like"
    ),
    "faces: rendered text that is no structure": Case(
        lambda: rendered(swap(faces="{{ params.faces }}"), faces="face 1 -> new-face.png"),
        "faces='face 1 -> new-face.png' is text that is not a list or mapping",
        "render_template_as_native_obj=True",
    ),
    # -- detection -----------------------------------------------------------------------------
    "detection: expired (fresh try)": Case(
        lambda: swap(detection=detection_xcom(expires_in=-60)),
        f"The detection {DETECT_ID!r} expired at",
        "Clear the face detection task so it runs again",
    ),
    "detection: image_url differs": Case(
        lambda: swap(image_url=OTHER_IMAGE),
        f"image_url={OTHER_IMAGE!r} differs from the detected image",
        "Leave image_url out, or detect faces on that image",
    ),
    "detection: detect_id differs": Case(
        lambda: swap(detect_id="another-detect-id"),
        "detect_id='another-detect-id' differs",
        "Leave detect_id out when you pass detection",
    ),
    "detection: missing keys": Case(
        lambda: swap(detection={"detect_id": DETECT_ID}), "lacks image_url, faces, expires_at", DETECTION_FIX
    ),
    "detection: missing expires_at": Case(
        lambda: swap(detection=without(detection_xcom(), "expires_at")), "lacks expires_at", DETECTION_FIX
    ),
    "detection: not a mapping": Case(lambda: swap(detection=[1, 2]), "detection=[1, 2]", DETECTION_FIX),
    "detection: faces not a list": Case(
        lambda: swap(detection=detection_xcom(faces={0: FACE_0})), "'faces' is not a list", DETECTION_FIX
    ),
    "detection: face without link": Case(
        lambda: swap(detection=detection_xcom(faces=[{"id": 0}])),
        "face {'id': 0} has no 'link'",
        DETECTION_FIX,
    ),
    "detection: face without id": Case(
        lambda: swap(detection=detection_xcom(faces=[{"link": FACE_0}])), "has no 'id'", DETECTION_FIX
    ),
    "detection: face id a word": Case(
        lambda: swap(detection=detection_xcom(faces=[{"id": "left", "link": FACE_0}])),
        "Face id 'left' in detection['faces']",
        FACE_ID_FIX,
    ),
    "detection: expires_at not a time": Case(
        lambda: swap(detection=detection_xcom(expires_at="soon")),
        "expires_at 'soon' is not an ISO-8601",
        DETECTION_FIX,
    ),
    "detection: empty detect_id": Case(
        lambda: swap(detection=detection_xcom(detect_id="")),
        "'detect_id' is not a non-empty string",
        DETECTION_FIX,
    ),
    "detection: image_url not a URL": Case(
        lambda: swap(detection=detection_xcom(image_url="photo.png")),
        "detection['image_url']='photo.png'",
        URL_FIX,
    ),
    "detection: rendered text that is no structure": Case(
        lambda: rendered(swap(detection="{{ ti.xcom_pull('detect') }}"), detection="{not really a dict"),
        "detection='{not really a dict'",
        "render_template_as_native_obj=True",
    ),
    "no detection: no detect_id": Case(
        lambda: swap(detection=None, image_url=IMAGE),
        "detect_id=None must be a non-empty string",
        NO_DETECTION_FIX,
    ),
    "no detection: no image_url": Case(
        lambda: swap(detection=None, detect_id=DETECT_ID), "image_url is missing", NO_DETECTION_FIX
    ),
    "no detection: unrendered image_url": Case(
        lambda: swap(detection=None, detect_id=DETECT_ID, image_url="{{ params.image }}"),
        "image_url='{{ params.image }}'",
        URL_FIX,
    ),
    "multi swap: disable_safety_checker not a bool": Case(
        lambda: swap(disable_safety_checker="yes"), "disable_safety_checker='yes'", "must be True or False"
    ),
    # -- waiting -------------------------------------------------------------------------------
    "poll_interval zero": Case(
        lambda: face_swap(poll_interval=0),
        "poll_interval=0 must be a number greater than 0",
        "e.g. poll_interval=10",
    ),
    "poll_interval negative": Case(
        lambda: detect(poll_interval=-1),
        "poll_interval=-1 must be a number greater than 0",
        "e.g. poll_interval=10",
    ),
    "poll_interval text": Case(
        lambda: face_swap(poll_interval="10"),
        "poll_interval='10' must be a number greater than 0",
        "e.g. poll_interval=10",
    ),
    "timeout zero": Case(
        lambda: swap(timeout=0), "timeout=0 must be a number greater than 0", "e.g. timeout=10"
    ),
    "timeout a bool": Case(
        lambda: face_swap(timeout=True), "timeout=True must be a number greater than 0", "e.g. timeout=10"
    ),
    "detect timeout negative": Case(
        lambda: detect(timeout=-30), "timeout=-30 must be a number greater than 0", "e.g. timeout=10"
    ),
    # -- model and input -----------------------------------------------------------------------
    "create: empty model": Case(
        lambda: create(model=""), "model='' must be a non-empty string", "name a Crun model"
    ),
    "create: model None": Case(
        lambda: create(model=None), "model=None must be a non-empty string", "name a Crun model"
    ),
    "create: empty input": Case(
        lambda: create(input={}), "input={} must be a non-empty mapping", "the model's input object, e.g."
    ),
    "create: input a list": Case(
        lambda: create(input=[IMAGE]), "must be a non-empty mapping", "the model's input object, e.g."
    ),
    "create: input text of a list": Case(
        lambda: create(input="[1, 2]"),
        "input='[1, 2]' must be a non-empty mapping",
        "the model's input object, e.g.",
    ),
    "create: input text that is no structure": Case(
        lambda: create(input="image please"),
        "input='image please' is text",
        "render_template_as_native_obj=True",
    ),
    # -- connection ----------------------------------------------------------------------------
    "conn: no API key": Case(
        lambda: swap(),
        "connection 'crun_default' has no API key",
        "put your Crun API key in its password field",
        CrunConfigError,
        {"password": None},
    ),
    "conn: no API key, on a retry with a stored id": Case(
        lambda: swap(),
        "connection 'crun_default' has no API key",
        "put your Crun API key in its password field",
        CrunConfigError,
        {"password": None},
        {"crun_task_id": "task_old"},
    ),
    "conn: plain http to a remote host": Case(
        lambda: swap(),
        "plain http:// to '192.0.2.10'",
        "Use https://",
        CrunConfigError,
        {"host": "http://192.0.2.10:8089"},
    ),
    "conn: ftp host": Case(
        lambda: face_swap(),
        "host 'ftp://127.0.0.1' is not an http(s) URL",
        "set it to e.g. https://api.crun.ai",
        CrunConfigError,
        {"host": "ftp://127.0.0.1"},
    ),
    "conn: request timeout below a second": Case(
        lambda: detect(), "extra 'timeout'", "must be >= 1", CrunConfigError, {"extra": {"timeout": -5}}
    ),
    "conn: max_retries not a number": Case(
        lambda: create(),
        "extra 'max_retries'",
        "must be a number",
        CrunConfigError,
        {"extra": {"max_retries": "many"}},
    ),
    "conn: proxy not a URL": Case(
        lambda: create(),
        "extra 'proxy'",
        "such as 'http://proxy.example.com:3128'",
        CrunConfigError,
        {"extra": {"proxy": "proxy:3128"}},
    ),
}


@pytest.fixture
def connection(monkeypatch: pytest.MonkeyPatch) -> Callable[[dict[str, Any]], None]:
    """Point ``crun_default`` at the loopback base URL, with a case's changes applied."""

    def configure(changes: dict[str, Any]) -> None:
        conn: dict[str, Any] = {
            "conn_type": "crun",
            "host": BASE,
            "password": "validation-key-0c1d",
            "extra": {"timeout": 2, "max_retries": 0},
        }
        conn.update(changes)
        monkeypatch.setenv(
            "AIRFLOW_CONN_CRUN_DEFAULT",
            json.dumps({key: value for key, value in conn.items() if value is not None}),
        )

    return configure


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_bad_input_fails_before_any_request_naming_the_field_and_the_fix(
    requests_mock: Any, connection: Callable[[dict[str, Any]], None], case: Case
) -> None:
    connection(case.conn)
    store = FakeTaskStateStore(**case.stored)
    context = make_context(store)

    with pytest.raises(case.error) as caught:
        case.build().execute(context)  # type: ignore[arg-type]

    message = str(caught.value)
    assert case.names in message
    assert case.fix in message
    assert isinstance(caught.value, AirflowFailException), "a retry would fail the same way"
    assert requests_mock.request_history == []
    assert store.writes == [], "nothing was created, so nothing may be remembered for a retry"
    assert not any(context["ti"].xcoms.values()), context["ti"].xcoms  # at most the link's placeholder


def test_templates_and_xcomargs_are_left_for_execute() -> None:
    """A value unknown at parse time (a template) passes __init__; execute checks it once rendered."""
    swap(faces={}, detection={}, image_url="{{ params.image }}")
    face_swap(image_url="{{ params.image }}", new_face="{{ params.face }}", callback_url="{{ params.hook }}")
    detect(image_url="{{ params.image }}")
