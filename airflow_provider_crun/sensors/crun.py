"""
Sensors that wait for a Crun task or face detection to finish.

DAG files import this module at parse time, so it imports neither the HTTP stack nor the
triggers at module level: the hook and the trigger are imported when a sensor actually runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.common.compat.sdk import (
    AirflowSensorTimeout,
    BaseSensorOperator,
    PokeReturnValue,
    conf,
)

from airflow_provider_crun import protocol
from airflow_provider_crun.events import CrunTimeoutError, data_from_event
from airflow_provider_crun.exceptions import CrunGenerationFailedError, CrunJobFailedError

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_crun.hooks.crun import CrunHook
    from airflow_provider_crun.triggers.crun import _CrunPollingTrigger

DEFAULT_POKE_INTERVAL = 10.0
DEFAULT_TIMEOUT = 3 * 3600.0


class _CrunJobSensor(BaseSensorOperator):
    """
    Wait for one Crun job; subclasses name the id field, the hook call and the trigger.

    :param crun_conn_id: The ``crun`` connection to use.
    :param deferrable: Wait in the triggerer instead of occupying a worker slot.
    :param poke_interval: Seconds between polls (also the trigger's poll interval).
    :param timeout: Seconds to wait in total (also the trigger's deadline).
    """

    id_key: ClassVar[str]
    label: ClassVar[str]
    ui_color = "#f0e4ff"

    def __init__(
        self,
        *,
        crun_conn_id: str = "crun_default",
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poke_interval: timedelta | float = DEFAULT_POKE_INTERVAL,
        timeout: timedelta | float = DEFAULT_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        super().__init__(poke_interval=poke_interval, timeout=timeout, **kwargs)
        self.crun_conn_id = crun_conn_id
        self.deferrable = deferrable

    @property
    def job_id(self) -> str:
        """The (rendered) id of the job this sensor waits for."""
        return str(getattr(self, self.id_key))

    @cached_property
    def hook(self) -> CrunHook:
        """The Crun hook; built on first use so parsing a DAG never touches connections."""
        from airflow_provider_crun.hooks.crun import CrunHook

        return CrunHook(crun_conn_id=self.crun_conn_id)

    @cached_property
    def _watch(self) -> protocol.JobWatch:
        """What the pokes of this try have seen; built after templates are rendered."""
        return protocol.JobWatch(self.label, self.job_id)

    def _fetch(self) -> dict[str, Any]:
        raise NotImplementedError

    def _trigger(self) -> _CrunPollingTrigger:
        raise NotImplementedError

    def poke(self, context: Context) -> PokeReturnValue:
        """
        Read the job once.

        :returns: done with the job's ``data`` as XCom once it succeeded, else not done.
        :raises CrunJobFailedError: the job failed; retrying the sensor cannot change that.
        """
        try:
            data = self._fetch()
        except CrunGenerationFailedError as error:
            raise CrunJobFailedError(
                self._watch.generation_failed_message(error), job_id=self.job_id
            ) from error
        except Exception as error:
            # The hook already retried; a still-transient error is one missed poke, not a failure.
            if not protocol.is_retryable(error, creates_billable=False):
                raise
            self.log.warning("Crun %s %s: poll failed (%s); will poke again.", self.label, self.job_id, error)
            return PokeReturnValue(is_done=False)
        seen = self._watch.observe(data)
        if seen.change:
            self.log.info(seen.change)
        if seen.warning:
            self.log.warning(seen.warning)
        if seen.phase is protocol.CrunJobPhase.SUCCEEDED:
            return PokeReturnValue(is_done=True, xcom_value=data)
        if seen.phase is protocol.CrunJobPhase.FAILED:
            raise CrunJobFailedError(self._watch.failure_message(data), job_id=self.job_id)
        return PokeReturnValue(is_done=False)

    def execute(self, context: Context) -> Any:
        """Poke in a loop, or, when deferrable, poke once and then defer to the trigger."""
        if not self.deferrable:
            return super().execute(context)
        first = self.poke(context)
        if first.is_done:
            return first.xcom_value
        # The deadline lives in the trigger: defer(timeout=...) would fail the task without
        # calling execute_complete.
        self.defer(trigger=self._trigger(), method_name="execute_complete")

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """
        Resume after the trigger fired; return the finished job's ``data`` (pushed to XCom).

        :raises CrunJobFailedError: the job failed.
        :raises AirflowSensorTimeout: the deadline passed, as in poke mode.
        :raises CrunError: any other event, including ``None`` or an unknown status.
        """
        try:
            return data_from_event(event, id_key=self.id_key)
        except CrunTimeoutError as error:
            raise AirflowSensorTimeout(str(error)) from error


class CrunTaskSensor(_CrunJobSensor):
    """
    Wait until a Crun task (any model, read through ``TaskInfo``) finishes.

    Returns the finished task's ``data`` (with ``result.media_urls``) as its XCom; a failed task
    fails the sensor without retries.

    :param crun_task_id: The Crun task id (templated).
    :param crun_conn_id: The ``crun`` connection to use.
    :param deferrable: Wait in the triggerer instead of occupying a worker slot.
    :param poke_interval: Seconds between polls.
    :param timeout: Seconds to wait in total.
    """

    template_fields: Sequence[str] = ("crun_task_id",)
    id_key = "crun_task_id"
    label = "task"

    def __init__(self, *, crun_task_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.crun_task_id = crun_task_id

    def _fetch(self) -> dict[str, Any]:
        return self.hook.get_task(self.job_id)

    def _trigger(self) -> _CrunPollingTrigger:
        from airflow_provider_crun.triggers.crun import CrunTaskTrigger

        return CrunTaskTrigger(
            crun_task_id=self.job_id,
            crun_conn_id=self.crun_conn_id,
            poll_interval=self.poke_interval,
            timeout=self.timeout,
        )


class CrunFaceDetectionSensor(_CrunJobSensor):
    """
    Wait until a Crun face detection finishes.

    Returns the finished detection's ``data`` (``result.id`` is the ``detect_id``,
    ``result.faces`` the faces) as its XCom; a failed detection fails the sensor without retries.

    :param detect_task_id: The detection task id (templated).
    :param crun_conn_id: The ``crun`` connection to use.
    :param deferrable: Wait in the triggerer instead of occupying a worker slot.
    :param poke_interval: Seconds between polls.
    :param timeout: Seconds to wait in total.
    """

    template_fields: Sequence[str] = ("detect_task_id",)
    id_key = "detect_task_id"
    label = "face detection"

    def __init__(self, *, detect_task_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.detect_task_id = detect_task_id

    def _fetch(self) -> dict[str, Any]:
        return self.hook.get_face_detection(self.job_id)

    def _trigger(self) -> _CrunPollingTrigger:
        from airflow_provider_crun.triggers.crun import CrunFaceDetectionTrigger

        return CrunFaceDetectionTrigger(
            detect_task_id=self.job_id,
            crun_conn_id=self.crun_conn_id,
            poll_interval=self.poke_interval,
            timeout=self.timeout,
        )
