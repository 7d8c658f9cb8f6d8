"""
Checks of the Crun operators' arguments.

They run in ``execute``, after templates are rendered and before any request, so a bad value
fails the task with a message that names it and the fix, and never spends a credit. Every
failure is a :class:`~airflow_provider_crun.exceptions.CrunInputError`, which Airflow does not
retry: the same input would fail the same way.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_crun.exceptions import CrunInputError
from airflow_provider_crun.protocol.swap import DetectedFace

DETECTION_KEYS = ("detect_id", "image_url", "faces", "expires_at")
FACES_FORMS = 'a list like [{"face_id": 0, "target": "https://..."}] or a mapping like {0: "https://..."}'
DETECTION_FIX = (
    "pass the XComArg of a CrunDetectFacesOperator (e.g. detection=detect.output), or leave detection "
    "out and pass detect_id and image_url"
)


def is_template(value: Any) -> bool:
    """Whether a value may still be a Jinja template, unknown until ``execute``."""
    return isinstance(value, str) and "{{" in value


def require_http_url(field: str, value: Any) -> str:
    """
    Return ``value`` if it is an ``http(s)`` URL with a host.

    :param field: The argument's name, for the message.
    :raises CrunInputError: otherwise.
    """
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise CrunInputError(
            f"{field}={value!r} is not an http(s) URL. Crun fetches it over the internet: give a "
            "full URL such as 'https://example.com/photo.jpg'."
        )
    return value


def require_positive(field: str, value: Any, *, zero: bool = False) -> float:
    """
    Return ``value`` as a float if it is a number above zero (or at least zero, with ``zero``).

    :param field: The argument's name, for the message.
    :raises CrunInputError: otherwise.
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not (value >= 0 if zero else value > 0)
    ):
        bound = "0 or more" if zero else "greater than 0"
        raise CrunInputError(f"{field}={value!r} must be a number {bound}, e.g. {field}=10.")
    return float(value)


def require_text(field: str, value: Any, fix: str) -> str:
    """Return ``value`` if it is a non-empty string, or raise naming ``fix``."""
    if not isinstance(value, str) or not value.strip():
        raise CrunInputError(f"{field}={value!r} must be a non-empty string: {fix}.")
    return value


def coerce_structure(field: str, value: Any) -> Any:
    """
    Turn a rendered template back into a list or dict.

    Jinja renders a dict as text (JSON, or Python's repr with single quotes) unless the DAG sets
    ``render_template_as_native_obj=True``; both spellings are read back, nothing is evaluated.

    :raises CrunInputError: for text that is neither.
    """
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        pass
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        raise CrunInputError(
            f"{field}={value!r} is text that is not a list or mapping. Pass a Python value or an XComArg, "
            "or set render_template_as_native_obj=True on the DAG when it comes from a template."
        ) from None


def face_id(value: Any, where: str) -> int:
    """
    Read a face id: an int, or a string of digits (XCom and Jinja turn mapping keys into text).

    :param where: Where the id was found, for the message.
    :raises CrunInputError: for anything else, booleans and negative numbers included.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    raise CrunInputError(
        f"Face id {value!r} in {where} is not a face id. Face ids are the integers 0, 1, ... that "
        "CrunDetectFacesOperator returns in its 'faces'; use one of those."
    )


def _face_pairs(faces: Any) -> list[tuple[Any, Any]]:
    if isinstance(faces, Mapping):
        return list(faces.items())
    if isinstance(faces, (list, tuple)):
        pairs = []
        for item in faces:
            if not isinstance(item, Mapping) or "face_id" not in item or "target" not in item:
                raise CrunInputError(
                    f"faces holds {item!r}, which is not a {{'face_id': ..., 'target': ...}} entry. "
                    f"Give faces as {FACES_FORMS}."
                )
            pairs.append((item["face_id"], item["target"]))
        return pairs
    raise CrunInputError(f"faces={faces!r} is neither a list nor a mapping. Give faces as {FACES_FORMS}.")


def parse_face_targets(faces: Any) -> dict[int, str]:
    """
    Read ``faces`` in the API's list form or as a mapping of face id to target URL.

    :returns: Target URL by face id.
    :raises CrunInputError: for an empty value, a non-integer or duplicate id, or a target that is
        not an ``http(s)`` URL.
    """
    pairs = _face_pairs(coerce_structure("faces", faces))
    if not pairs:
        raise CrunInputError(
            f"faces={faces!r} is empty, so there is nothing to swap. "
            f"Name at least one face, as {FACES_FORMS}."
        )
    targets: dict[int, str] = {}
    for raw_id, target in pairs:
        number = face_id(raw_id, "faces")
        if number in targets:
            raise CrunInputError(
                f"Face id {number} appears more than once in faces (as {raw_id!r} among others). "
                "Give each face one target."
            )
        targets[number] = require_http_url(f"the target of face {number}", target)
    return targets


@dataclass(frozen=True)
class Detection:
    """The parts of a CrunDetectFacesOperator result that a swap needs."""

    detect_id: str
    image_url: str
    faces: tuple[DetectedFace, ...]
    expires_at: datetime


def _malformed(detection: Any, problem: str) -> CrunInputError:
    return CrunInputError(
        f"detection={detection!r} is not a CrunDetectFacesOperator result: {problem}. Fix: {DETECTION_FIX}."
    )


def _detected_face(detection: Any, face: Any) -> DetectedFace:
    if not isinstance(face, Mapping) or "id" not in face:
        raise _malformed(detection, f"face {face!r} has no 'id'")
    link = face.get("link")
    if not isinstance(link, str) or not link:
        raise _malformed(detection, f"face {face!r} has no 'link'")
    return DetectedFace(id=face_id(face["id"], "detection['faces']"), link=link)


def _expiry(detection: Any, value: Any) -> datetime:
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise _malformed(detection, f"expires_at {value!r} is not an ISO-8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_detection(detection: Any) -> Detection:
    """
    Read the dict a :class:`CrunDetectFacesOperator` returns.

    :raises CrunInputError: when it lacks a key or a value has the wrong shape.
    """
    value = coerce_structure("detection", detection)
    if not isinstance(value, Mapping):
        raise _malformed(detection, "it is not a mapping")
    missing = [key for key in DETECTION_KEYS if key not in value]
    if missing:
        raise _malformed(detection, f"it lacks {', '.join(missing)}")
    if not isinstance(value["faces"], list):
        raise _malformed(detection, "'faces' is not a list")
    if not isinstance(value["detect_id"], str) or not value["detect_id"]:
        raise _malformed(detection, "'detect_id' is not a non-empty string")
    return Detection(
        detect_id=value["detect_id"],
        image_url=require_http_url("detection['image_url']", value["image_url"]),
        faces=tuple(_detected_face(detection, face) for face in value["faces"]),
        expires_at=_expiry(detection, value["expires_at"]),
    )


def check_detection_matches(detection: Detection, *, image_url: Any, detect_id: Any) -> None:
    """
    Refuse a swap that Crun would run against another picture or another detection.

    :param image_url: The operator's ``image_url`` (``None`` means "the detected one").
    :param detect_id: The operator's ``detect_id`` (``None`` means "the detected one").
    :raises CrunInputError: for another image or another detect_id.
    """
    if image_url is not None and image_url != detection.image_url:
        raise CrunInputError(
            f"image_url={image_url!r} differs from the detected image {detection.image_url!r}; Crun swaps "
            "faces only on the image it detected. Leave image_url out, or detect faces on that image."
        )
    if detect_id is not None and detect_id != detection.detect_id:
        raise CrunInputError(
            f"detect_id={detect_id!r} differs from the detection's detect_id {detection.detect_id!r}. "
            "Leave detect_id out when you pass detection."
        )


def check_detection_fresh(detection: Detection, *, now: datetime) -> None:
    """
    Refuse to create a swap on a detection past its hour. Only creating needs this check: a
    retry that reattaches to a swap created in time keeps it, however old the detection is.

    :raises CrunInputError: naming the expiry and the fix.
    """
    if now >= detection.expires_at:
        raise CrunInputError(
            f"The detection {detection.detect_id!r} expired at {detection.expires_at.isoformat()} "
            "(a detect_id is valid for one hour). Clear the face detection task so it runs again, "
            "then this one."
        )


def check_faces_detected(targets: Mapping[int, str], detection: Detection) -> None:
    """
    Refuse a face id the detection did not find.

    :raises CrunInputError: naming the unknown id and the detected ones.
    """
    known = sorted(face.id for face in detection.faces)
    for number in targets:
        if number not in known:
            raise CrunInputError(
                f"Face id {number} in faces was not detected in {detection.image_url!r}; the detection "
                f"found faces {known}. Use one of those ids."
            )
