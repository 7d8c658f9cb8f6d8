"""
Face detection, the first step of a multi-face swap.

.. seealso:: :ref:`howto/operator:CrunDetectFacesOperator`
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypedDict

from airflow_provider_crun.exceptions import CrunJobFailedError
from airflow_provider_crun.operators import _outputs
from airflow_provider_crun.operators._base import CrunJobOperator
from airflow_provider_crun.operators._validation import require_http_url
from airflow_provider_crun.operators.task import check_literal_url
from airflow_provider_crun.protocol import calls, jobs, swap

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

#: ``task_state_store`` key of the moment just before the detection was created (ISO-8601 UTC).
DETECT_SUBMITTED_AT_KEY = "detect_submitted_at"
#: Half of the detect_id's hour, so a detection that finishes in time leaves the swap half an hour.
DEFAULT_DETECTION_TIMEOUT = swap.DETECT_ID_TTL_SECONDS / 2


class CrunDetectedFace(TypedDict):
    """One detected face: Crun's face ``id`` and the ``link`` to its crop."""

    id: int
    link: str


class CrunDetectionResult(TypedDict):
    """What :class:`CrunDetectFacesOperator` returns; the multi-face swap reads it."""

    detect_id: str
    detect_task_id: str
    image_url: str
    faces: list[CrunDetectedFace]
    expires_at: str


class CrunDetectFacesOperator(CrunJobOperator):
    """
    Detect the faces of an image, for a multi-face swap.

    Returns ``{"detect_id", "detect_task_id", "image_url", "faces": [{"id", "link"}],
    "expires_at"}``. ``expires_at`` (ISO-8601 UTC) is the moment just before the detection was
    created plus Crun's hour, so it is never later than the real expiry. No face found gives
    ``faces: []`` and a warning.

    .. seealso:: :ref:`howto/operator:CrunDetectFacesOperator`

    :param image_url: The image to detect faces in; the swap must use this same URL. (templated)
    :param timeout: Seconds to wait; by default half the detect_id's hour.
    :param kwargs: ``deferrable``, ``poll_interval``, ``crun_conn_id``, ``durable``,
        ``min_balance`` and the ``BaseOperator`` arguments.
    """

    kind = jobs.DETECTION
    template_fields: Sequence[str] = ("image_url", "crun_conn_id")
    ui_color = "#d5f5e3"

    def __init__(self, *, image_url: str, timeout: float = DEFAULT_DETECTION_TIMEOUT, **kwargs: Any) -> None:
        super().__init__(timeout=timeout, **kwargs)
        self.image_url = image_url
        self._submitted_at: datetime | None = None
        self._detection_seen: CrunDetectionResult | None = None
        check_literal_url("image_url", image_url)

    def _creation_request(self, context: Context) -> calls.CrunRequest:
        return calls.detect_faces_request(require_http_url("image_url", self.image_url))

    def _check_before_create(self, context: Context) -> None:
        super()._check_before_create(context)
        # Taken before the request, so expires_at can only err on the early side.
        self._submitted_at = datetime.now(UTC)

    def _state_to_store(self) -> dict[str, Any]:
        assert self._submitted_at is not None
        return {DETECT_SUBMITTED_AT_KEY: self._submitted_at.isoformat()}

    def _stored_result_usable(self, context: Context, result: dict[str, Any]) -> bool:
        expires_at = _expiry(self._submitted_time(context))
        if expires_at <= datetime.now(UTC):
            self.log.warning("The stored detection's detect_id expired at %s.", expires_at.isoformat())
            return False
        return True

    def _resume_state(self, context: Context) -> dict[str, Any]:
        return {"image_url": self.image_url, "submitted_at": self._submitted_time(context).isoformat()}

    def _submitted_time(self, context: Context) -> datetime:
        """When the detection was created: this try, else the store, else an earlier bound."""
        if self._submitted_at is not None:
            return self._submitted_at
        store = context.get("task_state_store") if self.durable else None
        stored = store.get(DETECT_SUBMITTED_AT_KEY) if store is not None else None
        if stored:
            return _parse_utc(str(stored))
        start = getattr(context.get("dag_run"), "start_date", None)
        self.log.warning(
            "The detection's creation time is unknown; expires_at counts from the DAG run start."
        )
        # The run started before the detection was created, so the expiry stays on the early side.
        return start.astimezone(UTC) if isinstance(start, datetime) else datetime.now(UTC) - _ttl()

    def _finish(
        self, context: Context, job_id: str, result: dict[str, Any], state: dict[str, Any]
    ) -> CrunDetectionResult:
        image_url = str(state.get("image_url") or self.image_url)
        submitted = state.get("submitted_at")
        expires_at = _expiry(_parse_utc(str(submitted)) if submitted else self._submitted_time(context))
        if expires_at <= datetime.now(UTC):
            raise CrunJobFailedError(
                f"Crun face detection {job_id} finished after its detect_id expired at "
                f"{expires_at.isoformat()}, so no swap can use it. Clear this task to detect again, and "
                f"keep timeout (now {self.timeout:g} s) well under an hour.",
                job_id=job_id,
            )
        faces = [
            CrunDetectedFace(id=int(face["id"]), link=str(face["link"])) for face in result.get("faces", [])
        ]
        if faces:
            self.log.info(
                "Crun face detection %s found %d face(s): %s",
                job_id,
                len(faces),
                ", ".join(f"{face['id']}: {face['link']}" for face in faces),
            )
        else:
            self.log.warning(
                "Crun found no face in %s (face detection %s); 'faces' is empty, so a multi-face swap "
                "has nothing to replace.",
                image_url,
                job_id,
            )
        self._detection_seen = CrunDetectionResult(
            detect_id=str(result["detect_id"]),
            detect_task_id=job_id,
            image_url=image_url,
            faces=faces,
            expires_at=expires_at.isoformat(),
        )
        return self._detection_seen

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """The image in, the detected faces' crops out, and the detection as a run facet."""
        from airflow_provider_crun.openlineage.facets import detection_lineage

        seen = self._detection_seen
        if seen is None:
            return self.get_openlineage_facets_on_failure(task_instance)
        return detection_lineage(
            image_url=seen["image_url"],
            face_links=[face["link"] for face in seen["faces"]],
            detect_task_id=seen["detect_task_id"],
            detect_id=seen["detect_id"],
            face_count=len(seen["faces"]),
        )

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        """The image, and the detection when one was created or reattached."""
        from airflow_provider_crun.openlineage.facets import detection_lineage

        sources = _outputs.urls_in(self.image_url)
        return detection_lineage(
            image_url=sources[0] if sources else None,
            face_links=[],
            detect_task_id=self._job_id,
            detect_id=None,
            face_count=None,
        )


def _ttl() -> timedelta:
    return timedelta(seconds=swap.DETECT_ID_TTL_SECONDS)


def _expiry(submitted_at: datetime) -> datetime:
    return submitted_at + _ttl()


def _parse_utc(value: str) -> datetime:
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
