"""
Invalid operator inputs fail before any request, with a message that names the field.

Each row builds an operator (some mistakes are caught right there) and runs ``execute`` against
an in-process emulator behind ``crun_default``. The row passes when the expected error names the
field AND the emulator saw no request and no TCP connection at all, so the mistake cost no credit.
The Crun errors are ``AirflowFailException`` subclasses: Airflow does not retry them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException, BaseOperator

from airflow_provider_crun.exceptions import CrunConfigError, CrunInputError
from airflow_provider_crun.operators.crun import (
    CrunCreateTaskOperator,
    CrunDetectFacesOperator,
    CrunFaceSwapOperator,
    CrunMultiFaceSwapOperator,
)
from airflow_provider_crun.testing.emulator import CrunEmulator

API_KEY = "bad-inputs-key-0c1d"
IMAGE = "http://127.0.0.1:9/media/input/group.png?faces=2"
NEW_FACE = "http://127.0.0.1:9/media/input/new-face.png?faces=1"
DETECT_ID = "m1oZzqYp9dN"


def detection(expires_in: float = 3000.0, **changes: Any) -> dict[str, Any]:
    """A CrunDetectFacesOperator result, as a swap receives it through XCom."""
    value: dict[str, Any] = {
        "detect_id": DETECT_ID,
        "detect_task_id": "dit60yt8reqplt1c16",
        "image_url": IMAGE,
        "faces": [{"id": 0, "link": f"{IMAGE}#0"}, {"id": 1, "link": f"{IMAGE}#1"}],
        "expires_at": (datetime.now(timezone.utc) + timedelta(seconds=expires_in)).isoformat(),
    }
    value.update(changes)
    return value


def swap(**kwargs: Any) -> CrunMultiFaceSwapOperator:
    """A multi-face swap fed by a valid detection unless ``kwargs`` say otherwise."""
    arguments: dict[str, Any] = {"task_id": "swap", "faces": {1: NEW_FACE}, "detection": detection()}
    arguments.update(kwargs)
    return CrunMultiFaceSwapOperator(**arguments)


def rendered(operator: BaseOperator, **values: Any) -> BaseOperator:
    """Set template fields as Airflow would after rendering, bypassing the parse-time checks."""
    for name, value in values.items():
        setattr(operator, name, value)
    return operator


@dataclass(frozen=True)
class Case:
    """
    One invalid input.

    :param build: Builds the operator (it may already raise).
    :param match: Regex the error message must contain; it names the field.
    :param error: The expected exception type.
    :param conn: Changes to the ``crun_default`` connection (``None`` removes a field).
    """

    build: Callable[[], BaseOperator]
    match: str
    error: type[BaseException] = CrunInputError
    conn: dict[str, Any] = field(default_factory=dict)


CASES: dict[str, Case] = {
    # -- URLs ---------------------------------------------------------------------------------
    "detect-image-url-not-a-url": Case(
        lambda: CrunDetectFacesOperator(task_id="detect", image_url="group photo.png"),
        r"image_url='group photo\.png' is not an http\(s\) URL",
    ),
    "detect-image-url-ftp": Case(
        lambda: CrunDetectFacesOperator(task_id="detect", image_url="ftp://127.0.0.1/group.png"),
        r"image_url='ftp://127\.0\.0\.1/group\.png' is not an http\(s\) URL",
    ),
    "detect-rendered-image-url-file": Case(
        lambda: rendered(
            CrunDetectFacesOperator(task_id="detect", image_url="{{ params.image }}"),
            image_url="file:///etc/passwd",
        ),
        r"image_url='file:///etc/passwd' is not an http\(s\) URL",
    ),
    "swap-target-not-a-url": Case(
        lambda: swap(faces={1: "new-face.png"}), r"the target of face 1='new-face\.png'"
    ),
    "swap-callback-url-ftp": Case(lambda: swap(callback_url="ftp://127.0.0.1/hook"), r"callback_url='ftp://"),
    "face-swap-new-face-not-a-url": Case(
        lambda: CrunFaceSwapOperator(task_id="swap1", image_url=IMAGE, new_face="face.jpg"),
        r"new_face='face\.jpg' is not an http\(s\) URL",
    ),
    # -- faces --------------------------------------------------------------------------------
    "swap-faces-empty-mapping": Case(lambda: swap(faces={}), r"faces=\{\} is empty"),
    "swap-faces-empty-list": Case(lambda: swap(faces=[]), r"faces=\[\] is empty"),
    "swap-faces-unknown-face-id": Case(
        lambda: swap(faces={7: NEW_FACE}), r"Face id 7 in faces was not detected .* found faces \[0, 1\]"
    ),
    "swap-faces-duplicate-face-id": Case(
        lambda: swap(faces=[{"face_id": 0, "target": NEW_FACE}, {"face_id": "0", "target": NEW_FACE}]),
        r"Face id 0 appears more than once in faces",
    ),
    "swap-faces-non-integer-face-id": Case(
        lambda: swap(faces={"left": NEW_FACE}), r"Face id 'left' in faces"
    ),
    "swap-faces-negative-face-id": Case(lambda: swap(faces={-1: NEW_FACE}), r"Face id -1 in faces"),
    "swap-faces-boolean-face-id": Case(
        lambda: swap(faces=[{"face_id": True, "target": NEW_FACE}]), r"Face id True in faces"
    ),
    "swap-faces-entry-without-target": Case(
        lambda: swap(faces=[{"face_id": 0}]), r"faces holds \{'face_id': 0\}"
    ),
    "swap-faces-rendered-text": Case(
        lambda: rendered(swap(faces="{{ params.faces }}"), faces="face 1 -> new-face.png"),
        r"faces='face 1 -> new-face\.png' is text that is not a list or mapping",
    ),
    # -- detection ----------------------------------------------------------------------------
    "swap-detection-expired": Case(
        lambda: swap(detection=detection(expires_in=-60)), r"detection 'm1oZzqYp9dN' expired at"
    ),
    "swap-detection-mismatched-image-url": Case(
        lambda: swap(image_url="http://127.0.0.1:9/media/input/other.png"),
        r"image_url='http://127\.0\.0\.1:9/media/input/other\.png' differs from the detected image",
    ),
    "swap-detection-mismatched-detect-id": Case(
        lambda: swap(detect_id="another-detect-id"), r"detect_id='another-detect-id' differs"
    ),
    "swap-detection-missing-keys": Case(
        lambda: swap(detection={"detect_id": DETECT_ID}), r"detection=.* lacks image_url, faces, expires_at"
    ),
    "swap-without-detection-no-detect-id": Case(
        lambda: swap(detection=None, image_url=IMAGE), r"detect_id=None must be a non-empty string"
    ),
    "swap-without-detection-no-image-url": Case(
        lambda: swap(detection=None, detect_id=DETECT_ID), r"image_url is missing"
    ),
    "swap-disable-safety-checker-not-bool": Case(
        lambda: swap(disable_safety_checker="yes"), r"disable_safety_checker='yes' must be True or False"
    ),
    # -- waiting ------------------------------------------------------------------------------
    "detect-negative-poll-interval": Case(
        lambda: CrunDetectFacesOperator(task_id="detect", image_url=IMAGE, poll_interval=-1),
        r"poll_interval=-1 must be a number of seconds greater than 0",
    ),
    "swap-zero-timeout": Case(
        lambda: swap(timeout=0), r"timeout=0 must be a number of seconds greater than 0"
    ),
    "swap-negative-timeout-rendered": Case(
        lambda: rendered(swap(deferrable=True), timeout=-30), r"timeout=-30 must be a number of seconds"
    ),
    # -- model and input ----------------------------------------------------------------------
    "create-empty-model": Case(
        lambda: CrunCreateTaskOperator(task_id="create", model="", input={"image_url": IMAGE}),
        r"model='' must be a non-empty string",
    ),
    "create-input-empty": Case(
        lambda: CrunCreateTaskOperator(task_id="create", model="image-face-swap", input={}),
        r"input=\{\} must be a non-empty mapping",
    ),
    "create-input-not-a-mapping": Case(
        lambda: CrunCreateTaskOperator(task_id="create", model="image-face-swap", input=[IMAGE]),
        r"input=\[.*\] must be a non-empty mapping",
    ),
    "create-unknown-model-with-swap-only-faces": Case(
        lambda: CrunCreateTaskOperator(
            task_id="create", model="image-face-swapp", input={"image_url": IMAGE}, faces={0: NEW_FACE}
        ),
        r"Invalid arguments were passed to CrunCreateTaskOperator .*\n\*\*kwargs: \{'faces'",
        error=TypeError,
    ),
    "swap-with-unknown-model": Case(
        lambda: CrunMultiFaceSwapOperator(
            task_id="swap", model="video-face-swap-multi", faces={0: NEW_FACE}, detection=detection()
        ),
        r"multiple values for keyword argument 'model'",
        error=TypeError,
    ),
    # -- connection ---------------------------------------------------------------------------
    "conn-missing-api-key": Case(
        lambda: swap(), r"connection 'crun_default' has no API key", CrunConfigError, {"password": None}
    ),
    "conn-plain-http-to-remote-host": Case(
        lambda: swap(),
        r"plain http:// to '192\.0\.2\.10', which would send the API key unencrypted",
        CrunConfigError,
        {"host": "http://192.0.2.10:8089"},
    ),
    "conn-ftp-host": Case(
        lambda: swap(),
        r"host 'ftp://127\.0\.0\.1' is not an http\(s\) URL",
        CrunConfigError,
        {"host": "ftp://127.0.0.1"},
    ),
    "conn-negative-request-timeout": Case(
        lambda: swap(), r"extra 'timeout' must be >= 0\.001", CrunConfigError, {"extra": {"timeout": -5}}
    ),
    "conn-max-retries-not-a-number": Case(
        lambda: swap(),
        r"extra 'max_retries' must be a number",
        CrunConfigError,
        {"extra": {"max_retries": "many"}},
    ),
}


class FakeTaskInstance:
    stats_tags: dict[str, str] = {}

    def __init__(self) -> None:
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value


class FakeTaskStateStore:
    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self.values[key] = value


@pytest.fixture(scope="module")
def emulator() -> Iterator[CrunEmulator]:
    with CrunEmulator(api_key=API_KEY) as emu:
        yield emu


@pytest.fixture
def connection(emulator: CrunEmulator, monkeypatch: pytest.MonkeyPatch) -> Callable[[dict[str, Any]], None]:
    """Point ``crun_default`` at the emulator, with a case's changes applied."""
    emulator.reset()

    def configure(changes: dict[str, Any]) -> None:
        conn: dict[str, Any] = {
            "conn_type": "crun",
            "host": emulator.url,
            "password": API_KEY,
            "extra": {"timeout": 2, "max_retries": 0},
        }
        conn.update(changes)
        monkeypatch.setenv(
            "AIRFLOW_CONN_CRUN_DEFAULT", json.dumps({k: v for k, v in conn.items() if v is not None})
        )

    return configure


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_invalid_input_fails_before_any_request(
    emulator: CrunEmulator, connection: Callable[[dict[str, Any]], None], case: Case
) -> None:
    connection(case.conn)
    ti, store = FakeTaskInstance(), FakeTaskStateStore()
    context = {"ti": ti, "task_state_store": store}

    with pytest.raises(case.error, match=case.match) as caught:
        case.build().execute(context)  # type: ignore[arg-type]

    if case.error is not TypeError:
        assert isinstance(caught.value, AirflowFailException), "a retry would fail the same way"
    assert not any(ti.xcoms.values()), ti.xcoms  # at most the extra link's empty placeholder
    assert store.values == {}, "nothing was created, so nothing may be remembered for a retry"
    assert sum(emulator.counts.values()) == 0, emulator.counts
    assert emulator.connections_accepted == 0
    assert emulator.tasks_created == emulator.detections_created == 0


def test_the_table_is_wide_enough() -> None:
    assert len(CASES) >= 20
