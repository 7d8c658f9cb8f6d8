"""
Operators for Crun: any model's task, face detection, and single- and multi-face swaps.

DAG files import this module at parse time, so it imports only light modules at the top; the
hook (``requests``, ``aiohttp``) and the triggers load when a task runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from airflow.providers.common.compat.sdk import BaseOperatorLink

from airflow_provider_crun import protocol
from airflow_provider_crun.exceptions import CrunInputError
from airflow_provider_crun.operators._job import LOCAL_STATUS_PREFIX, CrunJobOperator
from airflow_provider_crun.operators._validation import (
    check_detection_usable,
    check_faces_detected,
    coerce_structure,
    is_template,
    parse_detection,
    parse_face_targets,
    require_http_url,
    require_text,
)

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import BaseOperator, Context, TaskInstanceKey
    from airflow.triggers.base import BaseTrigger

__all__ = [
    "CrunCreateTaskOperator",
    "CrunDetectFacesOperator",
    "CrunDetectionResult",
    "CrunFaceSwapOperator",
    "CrunMultiFaceSwapOperator",
    "CrunResultLink",
    "CrunSubmittedTask",
    "CrunTaskResult",
]

#: XCom key of the first result URL, read by :class:`CrunResultLink`.
RESULT_URL_XCOM_KEY = "crun_result_url"
#: ``task_state_store`` key of the moment just before the detection was created (ISO-8601 UTC).
DETECT_SUBMITTED_AT_KEY = "detect_submitted_at"
# A stored detection that succeeded but whose detect_id is too old to use: detect again.
DETECTION_EXPIRED = f"{LOCAL_STATUS_PREFIX}detect-id-expired"


def _check_literal_url(field: str, value: Any) -> None:
    """Fail at parse time for a plain bad URL; templates and XComArgs wait for ``execute``."""
    if isinstance(value, str) and not is_template(value):
        require_http_url(field, value)


# --------------------------------------------------------------------------------------------
# XCom shapes


class CrunTaskResult(TypedDict):
    """What :class:`CrunCreateTaskOperator` (and the swap operators) return for a finished task."""

    crun_task_id: str
    model: str
    status: str
    media_urls: list[str]
    credits: float | None
    duration_s: float | None
    data: dict[str, Any]


class CrunSubmittedTask(TypedDict):
    """What :class:`CrunCreateTaskOperator` returns with ``wait_for_completion=False``."""

    crun_task_id: str
    model: str
    status: Literal["submitted"]


class CrunDetectedFace(TypedDict):
    """One detected face: Crun's face ``id`` and the ``link`` to its crop."""

    id: int
    link: str


class CrunDetectionResult(TypedDict):
    """What :class:`CrunDetectFacesOperator` returns; :class:`CrunMultiFaceSwapOperator` reads it."""

    detect_id: str
    detect_task_id: str
    image_url: str
    faces: list[CrunDetectedFace]
    expires_at: str


# --------------------------------------------------------------------------------------------
# Extra link


class CrunResultLink(BaseOperatorLink):
    """ "Crun result": the first result image of a swap, pushed as XCom by the operator."""

    name = "Crun result"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        """Return the first result URL of the task instance, or ``""`` before there is one."""
        from airflow.providers.common.compat.sdk import XCom

        url = XCom.get_value(ti_key=ti_key, key=RESULT_URL_XCOM_KEY)
        return str(url) if url else ""


# --------------------------------------------------------------------------------------------
# Any model


class CrunCreateTaskOperator(CrunJobOperator):
    """
    Create a Crun task of any model (``CreateTask``) and wait for its result.

    The swap operators specialise this class: they build and validate ``input`` themselves.

    .. seealso:: The README's "Operators" section, and ``TaskInfo`` in Crun's API reference.

    :param model: The Crun model, e.g. ``image-face-swap`` or ``video-face-swap-multi``.
    :param input: The model's ``input`` object. (templated)
    :param callback_url: URL Crun POSTs the outcome to when the task finishes. (templated)
    :param wait_for_completion: ``False`` returns ``{"crun_task_id", "model", "status":
        "submitted"}`` right after creation, for a later ``CrunTaskSensor``.
    :param deferrable: Wait in the triggerer instead of on a worker slot.
    :param poll_interval: Seconds between two status reads.
    :param timeout: Seconds to wait before failing the try; Crun keeps running the task and a
        retry reattaches to it.
    :param crun_conn_id: The ``crun`` connection to use.
    :param durable: Store the Crun task id in ``task_state_store`` so a retry never pays twice
        (Airflow 3.3+).
    """

    template_fields: Sequence[str] = ("model", "input", "callback_url")
    template_fields_renderers = {"input": "json"}
    ui_color = "#d6eaf8"
    external_id_key = "crun_task_id"
    job_label = "task"

    def __init__(
        self,
        *,
        model: str,
        input: Mapping[str, Any] | None,
        callback_url: str | None = None,
        wait_for_completion: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.input = input
        self.callback_url = callback_url
        self.wait_for_completion = wait_for_completion
        self._request_input: dict[str, Any] = {}
        _check_literal_url("callback_url", callback_url)

    def execute(self, context: Context) -> Any:
        """Validate, then create the task (or reattach to it) and wait, blocking or deferred."""
        # Airflow resolves extra links after every try, a deferral included. Without a placeholder,
        # CrunResultLink would read a missing XCom, which the task SDK logs as an error.
        context["ti"].xcom_push(key=RESULT_URL_XCOM_KEY, value="")
        return super().execute(context)

    def _build_input(self) -> dict[str, Any]:
        """The request's ``input``, validated; subclasses build theirs from their own arguments."""
        value = coerce_structure("input", self.input)
        if not isinstance(value, Mapping) or not value:
            raise CrunInputError(
                f"input={self.input!r} must be a non-empty mapping: the model's input object, e.g. "
                "{'image_url': 'https://...', 'new_face': 'https://...'} for image-face-swap."
            )
        return dict(value)

    def _prepare(self, context: Context) -> None:
        require_text("model", self.model, "name a Crun model, e.g. 'image-face-swap'")
        if self.callback_url is not None:
            require_http_url("callback_url", self.callback_url)
        self._request_input = self._build_input()

    def _run(self, context: Context) -> Any:
        if self.wait_for_completion:
            return super()._run(context)
        store = self._state_store(context)
        job_id, _ = self._reattach(context, store)
        if job_id is None:
            job_id = self._submit_and_remember(context, store)
        return CrunSubmittedTask(crun_task_id=job_id, model=self.model, status="submitted")

    def _create(self, context: Context) -> str:
        return self.hook.create_task(self.model, self._request_input, self.callback_url)

    def _fetch(self, job_id: str) -> dict[str, Any]:
        return self.hook.get_task(job_id)

    def _wait(self, job_id: str) -> dict[str, Any]:
        return self.hook.wait_for_task(job_id, poll_interval=self.poll_interval, timeout=self.timeout)

    def _trigger(self, job_id: str, resume_state: dict[str, Any]) -> BaseTrigger:
        from airflow_provider_crun.triggers.crun import CrunTaskTrigger

        return CrunTaskTrigger(
            crun_task_id=job_id,
            crun_conn_id=self.crun_conn_id,
            poll_interval=self.poll_interval,
            timeout=self.timeout,
            resume_state=resume_state,
        )

    def _resume_state(self, context: Context, job_id: str) -> dict[str, Any]:
        return {"model": self.model}

    def _finish(
        self, context: Context, job_id: str, data: dict[str, Any], state: dict[str, Any]
    ) -> CrunTaskResult:
        urls = protocol.media_urls(data)
        if urls:
            self.log.info("Crun task %s succeeded; result: %s", job_id, ", ".join(urls))
            context["ti"].xcom_push(key=RESULT_URL_XCOM_KEY, value=urls[0])
        else:
            self.log.warning("Crun task %s succeeded but returned no media_urls.", job_id)
        return CrunTaskResult(
            crun_task_id=job_id,
            model=str(state.get("model") or self.model),
            status=protocol.job_status(data),
            media_urls=urls,
            credits=data.get("credits"),
            duration_s=data.get("duration_s"),
            data=data,
        )


# --------------------------------------------------------------------------------------------
# Face swaps


class CrunFaceSwapOperator(CrunCreateTaskOperator):
    """
    Swap the one face of an image (model ``image-face-swap``); no detection needed.

    :param image_url: The image whose face is replaced. (templated)
    :param new_face: An image of the face to put in. (templated)
    :param callback_url: URL Crun POSTs the outcome to. (templated)
    :param kwargs: :class:`CrunCreateTaskOperator` arguments (``deferrable``, ``timeout``...).
    """

    template_fields: Sequence[str] = ("image_url", "new_face", "callback_url")
    template_fields_renderers = {}
    operator_extra_links = (CrunResultLink(),)

    def __init__(
        self, *, image_url: str, new_face: str, callback_url: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(model=protocol.MODEL_FACE_SWAP, input=None, callback_url=callback_url, **kwargs)
        self.image_url = image_url
        self.new_face = new_face
        _check_literal_url("image_url", image_url)
        _check_literal_url("new_face", new_face)

    def _build_input(self) -> dict[str, Any]:
        return {
            "image_url": require_http_url("image_url", self.image_url),
            "new_face": require_http_url("new_face", self.new_face),
        }


class CrunMultiFaceSwapOperator(CrunCreateTaskOperator):
    """
    Replace some faces of an image (model ``image-face-swap-multi``).

    Normally fed by a :class:`CrunDetectFacesOperator`: pass its output as ``detection``. Every
    detected face that ``faces`` does not mention keeps its own detected crop as target, which is
    how Crun leaves a face unchanged. Every argument is checked before any request, so a mistake
    costs no credit.

    :param faces: New targets, as the API's list ``[{"face_id": 0, "target": url}]`` or a mapping
        ``{0: url}``; ``"0"`` counts as ``0``. (templated)
    :param detection: The detect operator's result (usually its XComArg). (templated)
    :param image_url: Without ``detection``: the detected image. With it: optional, must be the
        detection's image. (templated)
    :param detect_id: Without ``detection``: the ``detect_id`` of a detection under an hour old.
        (templated)
    :param callback_url: URL Crun POSTs the outcome to. (templated)
    :param disable_safety_checker: Sent to Crun only when ``True``.
    :param kwargs: :class:`CrunCreateTaskOperator` arguments (``deferrable``, ``timeout``...).
    """

    template_fields: Sequence[str] = ("faces", "detection", "image_url", "detect_id", "callback_url")
    template_fields_renderers = {"faces": "json", "detection": "json"}
    operator_extra_links = (CrunResultLink(),)

    def __init__(
        self,
        *,
        faces: Sequence[Mapping[str, Any]] | Mapping[Any, str],
        detection: Mapping[str, Any] | None = None,
        image_url: str | None = None,
        detect_id: str | None = None,
        callback_url: str | None = None,
        disable_safety_checker: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            model=protocol.MODEL_MULTI_FACE_SWAP, input=None, callback_url=callback_url, **kwargs
        )
        self.faces = faces
        self.detection = detection
        self.image_url = image_url
        self.detect_id = detect_id
        self.disable_safety_checker = disable_safety_checker
        _check_literal_url("image_url", image_url)

    def _build_input(self) -> dict[str, Any]:
        if not isinstance(self.disable_safety_checker, bool):
            raise CrunInputError(
                f"disable_safety_checker={self.disable_safety_checker!r} must be True or False."
            )
        targets = parse_face_targets(self.faces)
        if self.detection is None:
            return self._input_without_detection(targets)
        detection = parse_detection(self.detection)
        check_detection_usable(
            detection, image_url=self.image_url, detect_id=self.detect_id, now=datetime.now(timezone.utc)
        )
        check_faces_detected(targets, detection)
        return protocol.multi_face_swap_input(
            detection.detect_id,
            detection.image_url,
            protocol.keep_unchanged_faces(targets, detection.faces),
            self.disable_safety_checker,
        )

    def _input_without_detection(self, targets: dict[int, str]) -> dict[str, Any]:
        fix = "pass detection=<CrunDetectFacesOperator>.output, or both detect_id and image_url"
        detect_id = require_text("detect_id", self.detect_id, fix)
        if self.image_url is None:
            raise CrunInputError(f"image_url is missing: {fix} (the image that was detected).")
        image_url = require_http_url("image_url", self.image_url)
        return protocol.multi_face_swap_input(detect_id, image_url, targets, self.disable_safety_checker)


# --------------------------------------------------------------------------------------------
# Face detection


class CrunDetectFacesOperator(CrunJobOperator):
    """
    Detect the faces of an image, for a :class:`CrunMultiFaceSwapOperator`.

    Returns ``{"detect_id", "detect_task_id", "image_url", "faces": [{"id", "link"}],
    "expires_at"}``. ``expires_at`` (ISO-8601 UTC) is the moment just before the detection was
    created plus Crun's one hour, so it is never later than the real expiry. No face found gives
    ``faces: []`` and a warning.

    :param image_url: The image to detect faces in; the swap must use this same URL. (templated)
    :param kwargs: ``deferrable``, ``poll_interval``, ``timeout``, ``crun_conn_id``, ``durable``
        and the :class:`~airflow.sdk.BaseOperator` arguments.
    """

    template_fields: Sequence[str] = ("image_url",)
    ui_color = "#d5f5e3"
    external_id_key = "detect_task_id"
    job_label = "face detection"

    def __init__(self, *, image_url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.image_url = image_url
        self._submitted_at: str | None = None
        _check_literal_url("image_url", image_url)

    def _prepare(self, context: Context) -> None:
        require_http_url("image_url", self.image_url)

    def _create(self, context: Context) -> str:
        # Taken before the request, so expires_at can only err on the early side.
        submitted_at = datetime.now(timezone.utc).isoformat()
        detect_task_id = self.hook.create_face_detection(self.image_url)
        self._submitted_at = submitted_at
        store = self._state_store(context)
        if store is not None:
            # Stored before the caller stores the id, so a stored id always has its time.
            store.set(DETECT_SUBMITTED_AT_KEY, submitted_at)
        return detect_task_id

    def _fetch(self, job_id: str) -> dict[str, Any]:
        return self.hook.get_face_detection(job_id)

    def _wait(self, job_id: str) -> dict[str, Any]:
        return self.hook.wait_for_face_detection(
            job_id, poll_interval=self.poll_interval, timeout=self.timeout
        )

    def _trigger(self, job_id: str, resume_state: dict[str, Any]) -> BaseTrigger:
        from airflow_provider_crun.triggers.crun import CrunFaceDetectionTrigger

        return CrunFaceDetectionTrigger(
            detect_task_id=job_id,
            crun_conn_id=self.crun_conn_id,
            poll_interval=self.poll_interval,
            timeout=self.timeout,
            resume_state=resume_state,
        )

    def get_job_status(self, external_id: Any, context: Context) -> str:
        """Like the base class, but a stored detection past its hour counts as unusable."""
        status = super().get_job_status(external_id, context)
        if self.is_job_succeeded(status) and self._expires_at(self._submitted_time(context)) <= _now():
            self.log.warning("Crun face detection %s succeeded, but its detect_id has expired.", external_id)
            return DETECTION_EXPIRED
        return status

    def _resume_state(self, context: Context, job_id: str) -> dict[str, Any]:
        return {"image_url": self.image_url, "submitted_at": self._submitted_time(context).isoformat()}

    def _submitted_time(self, context: Context) -> datetime:
        """When the detection was created: from this try, else from the store, else an earlier bound."""
        stored = self._submitted_at
        store = self._state_store(context)
        if stored is None and store is not None:
            stored = store.get(DETECT_SUBMITTED_AT_KEY)
        if stored:
            return _parse_utc(str(stored))
        dag_run = context.get("dag_run")
        start = getattr(dag_run, "start_date", None)
        self.log.warning(
            "The detection's creation time is unknown; expires_at counts from the DAG run start."
        )
        # The run started before the detection was created, so the expiry stays on the early side.
        return start.astimezone(timezone.utc) if isinstance(start, datetime) else _now() - _ttl()

    @staticmethod
    def _expires_at(submitted_at: datetime) -> datetime:
        return submitted_at + _ttl()

    def _finish(
        self, context: Context, job_id: str, data: dict[str, Any], state: dict[str, Any]
    ) -> CrunDetectionResult:
        detect_id, faces = protocol.detection_outcome(data)
        image_url = str(state.get("image_url") or self.image_url)
        submitted_raw = state.get("submitted_at")
        submitted_at = _parse_utc(str(submitted_raw)) if submitted_raw else self._submitted_time(context)
        if faces:
            self.log.info(
                "Crun face detection %s found %d face(s): %s",
                job_id,
                len(faces),
                ", ".join(f"{face.id}: {face.link}" for face in faces),
            )
        else:
            self.log.warning(
                "Crun found no face in %s (face detection %s); 'faces' is empty, so a multi-face swap "
                "has nothing to replace.",
                image_url,
                job_id,
            )
        return CrunDetectionResult(
            detect_id=detect_id,
            detect_task_id=job_id,
            image_url=image_url,
            faces=[CrunDetectedFace(id=face.id, link=face.link) for face in faces],
            expires_at=self._expires_at(submitted_at).isoformat(),
        )


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _ttl() -> timedelta:
    return timedelta(seconds=protocol.DETECT_ID_TTL_SECONDS)


def _parse_utc(value: str) -> datetime:
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
