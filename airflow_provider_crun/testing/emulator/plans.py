"""
What a ``CreateTask`` request asks for: Crun's 422 checks and the picture the result will be.

The functions here are pure; the state passes in how to look detections up and how to turn a
target URL into a :class:`~airflow_provider_crun.testing.emulator.media.Target`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from airflow_provider_crun.testing.emulator import urls
from airflow_provider_crun.testing.emulator.media import Swaps, Target
from airflow_provider_crun.testing.emulator.model import ApiError, Detection, require_url

MODEL_MULTI = "image-face-swap-multi"
MODEL_SINGLE = "image-face-swap"


@dataclass(frozen=True)
class Plan:
    """The picture a task's result shows: ``swaps`` applied to the group picture ``image_name``."""

    image_name: str
    face_count: int
    swaps: Swaps


@dataclass(frozen=True)
class Lookups:
    """
    What planning needs from the state.

    :param faces_for: Faces found in an image URL.
    :param detection: The usable detection of a detect_id (raises 422 otherwise).
    :param target: The :class:`Target` a target URL stands for.
    :param default_faces: Faces of a picture drawn for a model without an input image.
    """

    faces_for: Callable[[str], int]
    detection: Callable[[str], Detection]
    target: Callable[[str], Target]
    default_faces: int


def plan_task(model: str, task_input: dict[str, Any], lookups: Lookups) -> Plan:
    """Validate ``task_input`` for ``model`` (422 on error) and say what the result shows."""
    if model == MODEL_MULTI:
        return _plan_multi(task_input, lookups)
    if model == MODEL_SINGLE:
        image_url = require_url(task_input, "image_url")
        new_face = require_url(task_input, "new_face")
        faces = lookups.faces_for(image_url)
        swaps = ((0, lookups.target(new_face)),) if faces else ()
        return Plan(urls.image_name_for_url(image_url), faces, swaps)
    # Any other model echoes its input image (or a picture named after the model).
    echoed = task_input.get("image_url")
    if isinstance(echoed, str) and echoed:
        return Plan(urls.image_name_for_url(echoed), lookups.faces_for(echoed), ())
    return Plan(f"model:{model}", lookups.default_faces, ())


def _targets(task_input: dict[str, Any]) -> dict[int, str]:
    faces = task_input.get("faces")
    if not isinstance(faces, list) or not faces:
        raise ApiError(422, "input.faces must be a non-empty list")
    targets: dict[int, str] = {}
    for entry in faces:
        if not isinstance(entry, dict):
            raise ApiError(422, "every entry of input.faces must be an object")
        face_id, target = entry.get("face_id"), entry.get("target")
        if not isinstance(face_id, int) or isinstance(face_id, bool):
            raise ApiError(422, "face_id must be an integer")
        if not isinstance(target, str) or not target:
            raise ApiError(422, f"target of face {face_id} must be a non-empty string")
        if face_id in targets:
            raise ApiError(422, f"face {face_id} listed twice")
        targets[face_id] = target
    return targets


def _plan_multi(task_input: dict[str, Any], lookups: Lookups) -> Plan:
    detect_id = task_input.get("detect_id")
    if not isinstance(detect_id, str) or not detect_id:
        raise ApiError(422, "input.detect_id is required")
    image_url = require_url(task_input, "image_url")
    targets = _targets(task_input)
    safety = task_input.get("disable_safety_checker")
    if safety is not None and not isinstance(safety, bool):
        raise ApiError(422, "input.disable_safety_checker must be a boolean")
    detection = lookups.detection(detect_id)
    if image_url != detection.image_url:
        raise ApiError(422, "image_url does not match the detected image")
    for face_id in targets:
        if not 0 <= face_id < detection.face_count:
            raise ApiError(422, f"face {face_id} not found in detection")
    for face_id in range(detection.face_count):
        if face_id not in targets:
            raise ApiError(422, f"face {face_id} missing")
    # A face whose target is its own detected link (on any host) stays as it is.
    swaps = tuple(
        (face_id, lookups.target(target))
        for face_id, target in sorted(targets.items())
        if not _is_own_link(target, detection.detect_id, face_id)
    )
    return Plan(detection.image_name, detection.face_count, swaps)


def _is_own_link(target: str, detect_id: str, face_id: int) -> bool:
    ref = urls.parse_media(target)
    return ref is not None and (ref.kind, ref.name, ref.index) == (urls.CROP, detect_id, face_id)
