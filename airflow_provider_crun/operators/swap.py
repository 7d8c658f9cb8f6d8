"""
Face swaps: one face with ``image-face-swap``, several with ``image-face-swap-multi``.

.. seealso:: :ref:`howto/operator:CrunMultiFaceSwapOperator`
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow_provider_crun.exceptions import CrunInputError
from airflow_provider_crun.operators._validation import (
    check_detection_fresh,
    check_detection_matches,
    check_faces_detected,
    parse_detection,
    parse_face_targets,
    require_http_url,
    require_text,
)
from airflow_provider_crun.operators.task import TASK_TEMPLATE_FIELDS, CrunTaskOperatorBase, check_literal_url
from airflow_provider_crun.protocol import calls, swap

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context


def _text_keys(faces: Any) -> Any:
    """
    A ``faces`` mapping with its face-id keys as text (``{1: url}`` becomes ``{"1": url}``).

    Airflow 3.1 cannot serialize a rendered template field whose mapping has int keys, and XCom
    and Jinja turn keys into text anyway; :func:`parse_face_targets` reads both. Anything else
    (a list, an XComArg, a template string) and a mapping whose keys would collide as text (left
    for ``parse_face_targets`` to reject) are returned as given.
    """
    if not isinstance(faces, Mapping):
        return faces
    text_keys = {_face_key(key): target for key, target in faces.items()}
    return text_keys if len(text_keys) == len(faces) else faces


def _face_key(key: Any) -> Any:
    # Only a valid face id becomes text, so an invalid key keeps its own spelling in the error.
    return str(key) if isinstance(key, int) and not isinstance(key, bool) and key >= 0 else key


class CrunFaceSwapOperator(CrunTaskOperatorBase):
    """
    Swap the one face of an image (model ``image-face-swap``); no detection needed.

    .. seealso:: :ref:`howto/operator:CrunFaceSwapOperator`

    :param image_url: The image whose face is replaced. (templated)
    :param new_face: An image of the face to put in. (templated)
    :param kwargs: ``callback_url``, ``wait_for_completion``, ``output_path``, ``output_conn_id``,
        ``max_output_bytes``, ``deferrable``, ``poll_interval``, ``timeout``, ``crun_conn_id``,
        ``durable``, ``min_balance`` and the ``BaseOperator`` arguments.
    """

    template_fields: Sequence[str] = ("image_url", "new_face", *TASK_TEMPLATE_FIELDS)

    def __init__(self, *, image_url: str, new_face: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.image_url = image_url
        self.new_face = new_face
        check_literal_url("image_url", image_url)
        check_literal_url("new_face", new_face)

    def _model(self) -> str:
        return calls.MODEL_FACE_SWAP

    def _input(self) -> dict[str, Any]:
        return {
            "image_url": require_http_url("image_url", self.image_url),
            "new_face": require_http_url("new_face", self.new_face),
        }


class CrunMultiFaceSwapOperator(CrunTaskOperatorBase):
    """
    Replace some faces of an image (model ``image-face-swap-multi``).

    Normally fed by a :class:`~airflow_provider_crun.operators.detect.CrunDetectFacesOperator`:
    pass its output as ``detection``. Every detected face that ``faces`` does not mention keeps
    its own detected crop as target, which is how Crun leaves a face unchanged. Every argument is
    checked before any request, so a mistake costs no credit.

    .. seealso:: :ref:`howto/operator:CrunMultiFaceSwapOperator`

    :param faces: New targets, as the API's list ``[{"face_id": 0, "target": url}]`` or a mapping
        ``{0: url}`` whose keys are the detection's face ids; ``"0"`` counts as ``0``. (templated)
    :param detection: The detect operator's result (usually its XComArg). (templated)
    :param image_url: Without ``detection``: the detected image. With it: optional, must be the
        detection's image. (templated)
    :param detect_id: Without ``detection``: the ``detect_id`` of a detection under an hour old.
        (templated)
    :param disable_safety_checker: Sent to Crun only when ``True``.
    :param kwargs: ``callback_url``, ``wait_for_completion``, ``output_path``, ``output_conn_id``,
        ``max_output_bytes``, ``deferrable``, ``poll_interval``, ``timeout``, ``crun_conn_id``,
        ``durable``, ``min_balance`` and the ``BaseOperator`` arguments.
    """

    template_fields: Sequence[str] = ("faces", "detection", "image_url", "detect_id", *TASK_TEMPLATE_FIELDS)
    template_fields_renderers = {"faces": "json", "detection": "json"}

    def __init__(
        self,
        *,
        faces: Sequence[Mapping[str, Any]] | Mapping[Any, str],
        detection: Mapping[str, Any] | None = None,
        image_url: str | None = None,
        detect_id: str | None = None,
        disable_safety_checker: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.faces = _text_keys(faces)
        self.detection = detection
        self.image_url = image_url
        self.detect_id = detect_id
        self.disable_safety_checker = disable_safety_checker
        check_literal_url("image_url", image_url)

    def _model(self) -> str:
        return calls.MODEL_MULTI_FACE_SWAP

    def _input(self) -> dict[str, Any]:
        if not isinstance(self.disable_safety_checker, bool):
            raise CrunInputError(
                f"disable_safety_checker={self.disable_safety_checker!r} must be True or False."
            )
        targets = parse_face_targets(self.faces)
        if self.detection is None:
            fix = "pass detection=<CrunDetectFacesOperator>.output, or both detect_id and image_url"
            detect_id = require_text("detect_id", self.detect_id, fix)
            if self.image_url is None:
                raise CrunInputError(f"image_url is missing: {fix} (the image that was detected).")
            image_url = require_http_url("image_url", self.image_url)
            return swap.multi_face_swap_input(detect_id, image_url, targets, self.disable_safety_checker)
        detection = parse_detection(self.detection)
        check_detection_matches(detection, image_url=self.image_url, detect_id=self.detect_id)
        check_faces_detected(targets, detection)
        return swap.multi_face_swap_input(
            detection.detect_id,
            detection.image_url,
            swap.keep_unchanged_faces(targets, detection.faces),
            self.disable_safety_checker,
        )

    def _swapped_face_ids(self) -> list[int]:
        try:
            return sorted(parse_face_targets(self.faces))
        except Exception:
            return []

    def _check_before_create(self, context: Context) -> None:
        super()._check_before_create(context)
        if self.detection is not None:
            check_detection_fresh(parse_detection(self.detection), now=datetime.now(UTC))
