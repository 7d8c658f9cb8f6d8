"""The multi-face swap input, and the faces a swap leaves unchanged."""

from __future__ import annotations

import pytest

from airflow_provider_crun.protocol import swap
from tests.support.crun_answers import DETECT_ID, FACE_0, FACE_1, IMAGE, NEW_FACE

DETECTED = [swap.DetectedFace(0, FACE_0), swap.DetectedFace(1, FACE_1)]


@pytest.mark.parametrize(
    ("targets", "expected"),
    [
        ({1: NEW_FACE}, {0: FACE_0, 1: NEW_FACE}),
        ({0: NEW_FACE, 1: NEW_FACE}, {0: NEW_FACE, 1: NEW_FACE}),
        ({}, {0: FACE_0, 1: FACE_1}),
    ],
    ids=["one-face-swapped-other-kept", "every-face-swapped", "nothing-swapped-keeps-all"],
)
def test_keep_unchanged_faces(targets: dict[int, str], expected: dict[int, str]) -> None:
    assert swap.keep_unchanged_faces(targets, DETECTED) == expected


def test_keep_unchanged_faces_leaves_the_targets_alone() -> None:
    targets = {1: NEW_FACE}
    swap.keep_unchanged_faces(targets, DETECTED)
    assert targets == {1: NEW_FACE}


def test_multi_face_swap_input_sends_faces_in_id_order() -> None:
    assert swap.multi_face_swap_input(DETECT_ID, IMAGE, {3: NEW_FACE, 0: FACE_0, 1: FACE_1}) == {
        "detect_id": DETECT_ID,
        "image_url": IMAGE,
        "faces": [
            {"face_id": 0, "target": FACE_0},
            {"face_id": 1, "target": FACE_1},
            {"face_id": 3, "target": NEW_FACE},
        ],
    }


@pytest.mark.parametrize(
    ("disable", "sent"),
    [(True, {"disable_safety_checker": True}), (False, {})],
    ids=["disabled-is-sent", "default-is-left-to-crun"],
)
def test_safety_checker_is_sent_only_when_disabled(disable: bool, sent: dict[str, bool]) -> None:
    swap_input = swap.multi_face_swap_input(DETECT_ID, IMAGE, {0: NEW_FACE}, disable_safety_checker=disable)
    assert {key: value for key, value in swap_input.items() if key == "disable_safety_checker"} == sent
