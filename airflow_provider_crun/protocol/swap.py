"""The input of a multi-face swap, and how long a detection stays usable."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# How long a detect_id stays usable after the detection was submitted (Crun's documented hour).
DETECT_ID_TTL_SECONDS = 3600


@dataclass(frozen=True)
class DetectedFace:
    """One face found by a detection: Crun's face ``id`` and the ``link`` to its crop."""

    id: int
    link: str


def keep_unchanged_faces(targets: Mapping[int, str], detected: Iterable[DetectedFace]) -> dict[int, str]:
    """
    Complete the requested targets with every detected face left out.

    Crun leaves a face as it is when its ``target`` is its own detected ``link``, so a face the
    user did not mention still appears in the request.

    :param targets: New target image URL by face id.
    :param detected: The faces of the detection the swap uses.
    """
    completed = {face.id: face.link for face in detected}
    completed.update(targets)
    return completed


def multi_face_swap_input(
    detect_id: str, image_url: str, faces: Mapping[int, str], disable_safety_checker: bool = False
) -> dict[str, Any]:
    """
    The ``input`` of an ``image-face-swap-multi`` task.

    :param detect_id: The ``result.id`` of a detection younger than :data:`DETECT_ID_TTL_SECONDS`.
    :param image_url: The very image URL that was detected.
    :param faces: Target image URL by face id; sent in face id order.
    :param disable_safety_checker: Sent only when ``True``, so the API default applies otherwise.
    """
    swap_input: dict[str, Any] = {
        "detect_id": detect_id,
        "image_url": image_url,
        "faces": [{"face_id": face_id, "target": faces[face_id]} for face_id in sorted(faces)],
    }
    if disable_safety_checker:
        swap_input["disable_safety_checker"] = True
    return swap_input
