"""
Operators that create a Crun task (``CreateTask``) and return its result.

.. seealso:: :ref:`howto/operator:CrunCreateTaskOperator`
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypedDict

from airflow.providers.common.compat.sdk import BaseOperatorLink

from airflow_provider_crun.exceptions import CrunInputError
from airflow_provider_crun.operators import _outputs
from airflow_provider_crun.operators._base import CrunJobOperator
from airflow_provider_crun.operators._validation import (
    coerce_structure,
    is_template,
    require_http_url,
    require_text,
)
from airflow_provider_crun.protocol import calls, jobs

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import BaseOperator, Context, TaskInstanceKey

#: XCom key of the first result URL, read by :class:`CrunResultLink`.
RESULT_URL_XCOM_KEY = "crun_result_url"
#: Template fields every task operator has, after its own.
TASK_TEMPLATE_FIELDS = ("callback_url", "output_path", "output_conn_id", "crun_conn_id")
DEFAULT_MAX_OUTPUT_BYTES = 200 * 1024 * 1024


class CrunTaskResult(TypedDict):
    """What the task operators return for a finished task."""

    crun_task_id: str
    model: str
    status: str
    media_urls: list[str]
    credits: float | None
    duration_s: float | None
    stored_paths: list[str]


class CrunSubmittedTask(TypedDict):
    """What a task operator returns with ``wait_for_completion=False``."""

    crun_task_id: str
    model: str
    status: str


class CrunResultLink(BaseOperatorLink):
    """ "Crun result": the first result file of a task, pushed as XCom by the operator."""

    name = "Crun result"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        """The first result URL of the task instance, or ``""`` before there is one."""
        from airflow.providers.common.compat.sdk import XCom

        url = XCom.get_value(ti_key=ti_key, key=RESULT_URL_XCOM_KEY)
        return str(url) if url else ""


def check_literal_url(field: str, value: Any) -> None:
    """Fail at parse time for a plain bad URL; templates and XComArgs wait for ``execute``."""
    if isinstance(value, str) and not is_template(value):
        require_http_url(field, value)


class CrunTaskOperatorBase(CrunJobOperator):
    """
    Create one Crun task, then wait for it, defer, or return at once.

    Subclasses say which model and build its ``input`` (:meth:`_model`, :meth:`_input`).

    :param callback_url: URL Crun POSTs the outcome to when the task finishes. (templated)
    :param wait_for_completion: ``False`` returns ``{"crun_task_id", "model", "status"}`` right
        after creation (or reattachment), for a later ``CrunTaskSensor``.
    :param output_path: A folder (``ObjectStoragePath`` or URI such as
        ``s3://aws_default@bucket/crun/{{ ds }}/`` or ``file:///data/out/``) that every result file
        is streamed into, as ``<crun_task_id>_<n>.<ext>``. In deferrable mode the copy runs in the
        resume method, never in the triggerer. (templated)
    :param output_conn_id: The storage connection, when ``output_path`` does not name one. (templated)
    :param max_output_bytes: The largest result file accepted (default 200 MiB).
    :param kwargs: :class:`~airflow_provider_crun.operators._base.CrunJobOperator` arguments.
    """

    kind = jobs.TASK
    ui_color = "#d6eaf8"
    operator_extra_links = (CrunResultLink(),)

    def __init__(
        self,
        *,
        callback_url: str | None = None,
        wait_for_completion: bool = True,
        output_path: Any = None,
        output_conn_id: str | None = None,
        max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.callback_url = callback_url
        self.wait_for_completion = wait_for_completion
        self.output_path = output_path
        self.output_conn_id = output_conn_id
        self.max_output_bytes = max_output_bytes
        self._outcome_seen: dict[str, Any] = {}
        check_literal_url("callback_url", callback_url)

    def _model(self) -> str:
        raise NotImplementedError

    def _input(self) -> dict[str, Any]:
        """The model's ``input``, validated; no I/O and no clock."""
        raise NotImplementedError

    def execute(self, context: Context) -> Any:
        """Resume or create the task, then wait, defer, or return at once."""
        # Airflow resolves extra links after every try, a deferral included. Without a placeholder,
        # CrunResultLink would read a missing XCom, which the task SDK logs as an error.
        context["ti"].xcom_push(key=RESULT_URL_XCOM_KEY, value="")
        return super().execute(context)

    def _creation_request(self, context: Context) -> calls.CrunRequest:
        if self.callback_url is not None:
            require_http_url("callback_url", self.callback_url)
        if self.output_path:
            _outputs.check_output_path(self.output_path, self.output_conn_id)
        return calls.create_task_request(self._model(), self._input(), self.callback_url)

    def _waits_for_completion(self) -> bool:
        return self.wait_for_completion

    def _submitted(self, job_id: str, read: jobs.JobRead | None) -> CrunSubmittedTask:
        return CrunSubmittedTask(
            crun_task_id=job_id, model=self._model(), status=read.status if read else "submitted"
        )

    def _resume_state(self, context: Context) -> dict[str, Any]:
        return {"model": self._model()}

    def _finish(
        self, context: Context, job_id: str, result: dict[str, Any], state: dict[str, Any]
    ) -> CrunTaskResult:
        urls = list(result.get("media_urls") or [])
        if urls:
            self.log.info("Crun task %s succeeded; result: %s", job_id, ", ".join(urls))
            context["ti"].xcom_push(key=RESULT_URL_XCOM_KEY, value=urls[0])
        else:
            self.log.warning("Crun task %s succeeded but returned no media_urls.", job_id)
        stored: list[str] = []
        if self.output_path:
            stored = _outputs.store_media(
                urls,
                crun_task_id=job_id,
                output_path=self.output_path,
                output_conn_id=self.output_conn_id,
                max_bytes=self.max_output_bytes,
            )
            self.log.info("Stored the result of Crun task %s: %s", job_id, ", ".join(stored))
        task_result = CrunTaskResult(
            crun_task_id=job_id,
            model=str(state.get("model") or self._model()),
            status=str(result.get("status") or "success"),
            media_urls=urls,
            credits=result.get("credits"),
            duration_s=result.get("duration_s"),
            stored_paths=stored,
        )
        self._outcome_seen = dict(task_result)
        sources = self._lineage_sources()
        extra = {
            "crun_task_id": job_id,
            "model": task_result["model"],
            "credits": task_result["credits"],
            "image_url": sources[0] if sources else None,
            "face_ids": self._swapped_face_ids(),
            # Stored paths carry no connection id; a reader needs it to open them.
            "conn_id": _outputs.storage_conn_id(self.output_path, self.output_conn_id) if stored else None,
        }
        _outputs.emit_asset_events(context, self.outlets or (), stored, extra)
        return task_result

    def _swapped_face_ids(self) -> list[int]:
        """The faces given a new target; a single-face swap has none to name."""
        return []

    def _lineage_sources(self) -> list[str]:
        """The URLs the task read: the source image first, then the face targets."""
        try:
            return _outputs.urls_in(self._input())
        except Exception:
            return []

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """Source image and face targets in, stored files out, and the Crun task as a run facet."""
        from airflow_provider_crun.openlineage.facets import task_lineage

        seen = self._outcome_seen
        return task_lineage(
            inputs=self._lineage_sources(),
            outputs=seen.get("stored_paths") or [],
            crun_task_id=seen.get("crun_task_id") or self._job_id,
            model=self._model(),
            credits=seen.get("credits"),
        )

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        """The inputs, and the Crun task when one was created or reattached."""
        from airflow_provider_crun.openlineage.facets import task_lineage

        return task_lineage(
            inputs=self._lineage_sources(),
            outputs=[],
            crun_task_id=self._job_id,
            model=self._model(),
            credits=None,
        )


class CrunCreateTaskOperator(CrunTaskOperatorBase):
    """
    Create a Crun task of any model and wait for its result.

    .. seealso:: :ref:`howto/operator:CrunCreateTaskOperator`

    :param model: The Crun model, e.g. ``image-face-swap`` or ``video-face-swap-multi``. (templated)
    :param input: The model's ``input`` object. (templated)
    :param callback_url: URL Crun POSTs the outcome to when the task finishes. (templated)
    :param wait_for_completion: ``False`` returns right after creation.
    :param deferrable: Wait in the triggerer instead of on a worker slot.
    :param poll_interval: Seconds between two status reads.
    :param timeout: Seconds to wait; Crun keeps running the task and a retry reattaches to it.
    :param crun_conn_id: The ``crun`` connection to use. (templated)
    :param durable: Store the task id in ``task_state_store`` so a retry never pays twice.
    :param min_balance: Fail without creating anything while the balance is below this.
    :param output_path: A folder every result file is streamed into. (templated)
    :param output_conn_id: The storage connection, when ``output_path`` names none. (templated)
    :param max_output_bytes: The largest result file accepted.
    """

    template_fields: Sequence[str] = ("model", "input", *TASK_TEMPLATE_FIELDS)
    template_fields_renderers = {"input": "json"}

    def __init__(self, *, model: str, input: Mapping[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.input = input

    def _model(self) -> str:
        return require_text("model", self.model, "name a Crun model, e.g. 'image-face-swap'")

    def _input(self) -> dict[str, Any]:
        value = coerce_structure("input", self.input)
        if not isinstance(value, Mapping) or not value:
            raise CrunInputError(
                f"input={self.input!r} must be a non-empty mapping: the model's input object, e.g. "
                "{'image_url': 'https://...', 'new_face': 'https://...'} for image-face-swap."
            )
        return dict(value)
