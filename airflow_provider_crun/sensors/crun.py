"""
Sensors that wait for a Crun task or face detection created elsewhere.

DAG files import this module at parse time, so it imports neither the HTTP stack nor the
triggers at module level.

.. seealso:: :ref:`howto/sensor:CrunTaskSensor`
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.common.compat.sdk import (
    AirflowSensorTimeout,
    AirflowTaskTimeout,
    BaseSensorOperator,
    PokeReturnValue,
    conf,
)

from airflow_provider_crun.exceptions import CrunError, CrunTimeoutError, airflow_error
from airflow_provider_crun.protocol import errors, jobs, watch

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_crun.hooks.crun import CrunHook

DEFAULT_POKE_INTERVAL = 10.0
DEFAULT_TIMEOUT = 3 * 3600.0


class _CrunJobSensor(BaseSensorOperator):
    """
    Wait for one Crun job; subclasses name its kind.

    A failed read is retried by the hook (``max_retries``); if it still fails, the sensor fails
    with the same exception the operators raise, permanent errors without an Airflow retry.

    :param crun_conn_id: The ``crun`` connection to use. (templated)
    :param deferrable: Wait in the triggerer instead of occupying a worker slot.
    :param poke_interval: Seconds between polls (also the trigger's poll interval).
    :param timeout: Seconds to wait in total (also the trigger's deadline).
    """

    kind: ClassVar[jobs.JobKind]
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
        return str(getattr(self, self.kind.id_key))

    @cached_property
    def hook(self) -> CrunHook:
        """The Crun hook; built on first use so parsing a DAG never reads a connection."""
        from airflow_provider_crun.hooks.crun import CrunHook

        return CrunHook(crun_conn_id=self.crun_conn_id)

    @cached_property
    def _watch(self) -> watch.JobWatch:
        """What the pokes of this try have seen; built after templates are rendered."""
        return watch.JobWatch(self.kind, self.job_id)

    def poke(self, context: Context) -> PokeReturnValue:
        """
        Read the job once.

        :returns: done, with the finished job's summary as XCom, once it succeeded.
        :raises CrunJobFailedError: the job failed; retrying the sensor cannot change that.
        """
        try:
            try:
                data = self.hook.get_job(self.kind, self.job_id)
            except errors.CrunProtocolError as error:
                raise self._watch.read_error(error) from None
            seen = self._watch.observe(data, now=time.time())
            if seen.change:
                self.log.info(seen.change)
            if seen.warning:
                self.log.warning(seen.warning)
            if not seen.done:
                return PokeReturnValue(is_done=False)
            result = self._watch.outcome(seen)
        except errors.CrunProtocolError as error:
            raise airflow_error(error) from None
        return PokeReturnValue(is_done=True, xcom_value={self.kind.id_key: self.job_id, **result})

    def execute(self, context: Context) -> Any:
        """Poke in a loop, or, when deferrable, poke once and then defer to the trigger."""
        if not self.deferrable:
            return super().execute(context)
        first = self.poke(context)
        if first.is_done:
            return first.xcom_value
        from airflow_provider_crun.triggers.crun import TRIGGERS

        # The deadline lives in the trigger: defer(timeout=...) would skip execute_complete. A
        # shorter execution_timeout wins, as it would in poke mode.
        started = getattr(context.get("ti"), "start_date", None)
        deadline, limit = watch.wait_deadline(
            time.time(), float(self.timeout), watch.execution_deadline(started, self.execution_timeout)
        )
        self.defer(
            trigger=TRIGGERS[self.kind.id_key](
                self.job_id,
                crun_conn_id=self.crun_conn_id,
                poll_interval=float(self.poke_interval),
                deadline=deadline,
                limit=limit,
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """
        Resume after the trigger fired; return the finished job's summary.

        :raises AirflowSensorTimeout: the sensor's ``timeout`` passed, as in poke mode (no retry).
        :raises AirflowTaskTimeout: the try's ``execution_timeout`` passed first (Airflow may retry).
        :raises CrunError: the class poke mode raises for the same answer.
        """
        from airflow_provider_crun.events import result_from_event

        try:
            job_id, result, _ = result_from_event(event, self.kind)
        except CrunTimeoutError as error:
            if error.limit == "execution_timeout":
                raise AirflowTaskTimeout(str(error)) from error
            raise AirflowSensorTimeout(str(error)) from error
        return {self.kind.id_key: job_id, **result}


class CrunTaskSensor(_CrunJobSensor):
    """
    Wait until a Crun task (any model) finishes.

    Returns ``{"crun_task_id", "status", "media_urls", "credits", "duration_s"}``; a failed
    task fails the sensor without retries.

    .. seealso:: :ref:`howto/sensor:CrunTaskSensor`

    :param crun_task_id: The Crun task id. (templated)
    :param kwargs: ``crun_conn_id``, ``deferrable``, ``poke_interval``, ``timeout`` and the
        ``BaseSensorOperator`` arguments.
    """

    template_fields: Sequence[str] = ("crun_task_id", "crun_conn_id")
    kind = jobs.TASK

    def __init__(self, *, crun_task_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.crun_task_id = crun_task_id


class CrunFaceDetectionSensor(_CrunJobSensor):
    """
    Wait until a Crun face detection finishes.

    Returns ``{"detect_task_id", "detect_id", "faces": [{"id", "link"}]}``; a failed detection
    fails the sensor without retries.

    .. seealso:: :ref:`howto/sensor:CrunTaskSensor`

    :param detect_task_id: The detection task id. (templated)
    :param kwargs: ``crun_conn_id``, ``deferrable``, ``poke_interval``, ``timeout`` and the
        ``BaseSensorOperator`` arguments.
    """

    template_fields: Sequence[str] = ("detect_task_id", "crun_conn_id")
    kind = jobs.DETECTION

    def __init__(self, *, detect_task_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.detect_task_id = detect_task_id


__all__ = ["CrunError", "CrunFaceDetectionSensor", "CrunTaskSensor"]
