"""
Deferrable triggers that wait for a Crun task or face detection to finish.

.. seealso:: :ref:`howto/operator:deferrable` and :ref:`durability`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_crun.events import failure_event, success_event
from airflow_provider_crun.hooks._clock import SYSTEM_CLOCK
from airflow_provider_crun.hooks.crun import CrunHook
from airflow_provider_crun.protocol import errors, jobs
from airflow_provider_crun.triggers._poll import watch_job

DEFAULT_POLL_INTERVAL = 10.0


class _CrunJobTrigger(BaseTrigger):
    """
    Poll one Crun job until it finishes or its deadline passes, then yield exactly one event.

    :param job_id: The Crun id.
    :param crun_conn_id: The ``crun`` connection to use.
    :param poll_interval: Seconds between polls.
    :param deadline: When to give up, as epoch seconds. Absolute, so a trigger rebuilt after a
        triggerer restart keeps it.
    :param limit: What set the deadline (``timeout`` or ``execution_timeout``), named in the
        timeout event.
    :param resume_state: A small JSON dict copied into the event for the resume method.
    """

    kind: ClassVar[jobs.JobKind]

    def __init__(
        self,
        job_id: str,
        *,
        deadline: float,
        crun_conn_id: str = CrunHook.default_conn_name,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        limit: str = "timeout",
        resume_state: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.job_id = job_id
        self.crun_conn_id = crun_conn_id
        self.poll_interval = float(poll_interval)
        self.deadline = float(deadline)
        self.limit = limit
        self.resume_state = resume_state

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """The class path and exactly the constructor's arguments."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                self.kind.id_key: self.job_id,
                "crun_conn_id": self.crun_conn_id,
                "poll_interval": self.poll_interval,
                "deadline": self.deadline,
                "limit": self.limit,
                "resume_state": self.resume_state,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll until the job finishes, fails or the deadline passes; yield one event."""
        hook = CrunHook(crun_conn_id=self.crun_conn_id)
        try:
            result = await watch_job(
                hook,
                self.kind,
                self.job_id,
                poll_interval=self.poll_interval,
                deadline=self.deadline,
                limit=self.limit,
                clock=SYSTEM_CLOCK,
                log=self.log,
            )
            event = success_event(self.kind, self.job_id, result, self.resume_state)
        except errors.CrunProtocolError as error:
            event = failure_event(self.kind, self.job_id, error, self.resume_state)
        except Exception as error:
            # A trigger that raises takes its task down with a traceback nobody can act on; an
            # event fails the task with a readable, retryable error instead.
            self.log.exception("Unexpected error while polling Crun %s %s", self.kind.label, self.job_id)
            unexpected = errors.CrunProtocolError(f"{type(error).__name__}: {error}")
            event = failure_event(self.kind, self.job_id, unexpected, self.resume_state)
        yield TriggerEvent(hook.redact(event))


class CrunTaskTrigger(_CrunJobTrigger):
    """
    Wait for a Crun task (any model, read through ``TaskInfo``) to finish.

    Yields one event. On success its ``result`` is ``{"status", "media_urls", "credits",
    "duration_s"}``; otherwise ``error`` holds the failure's fields, from which
    :func:`~airflow_provider_crun.events.result_from_event` raises the same exception the
    blocking path raises.

    :param crun_task_id: The Crun task id.
    :param crun_conn_id: The ``crun`` connection to use.
    :param poll_interval: Seconds between polls.
    :param deadline: When to give up, as epoch seconds.
    :param limit: What set the deadline: ``timeout`` or ``execution_timeout``.
    :param resume_state: A small JSON dict copied into the event.
    """

    kind = jobs.TASK

    def __init__(self, crun_task_id: str, **kwargs: Any) -> None:
        super().__init__(crun_task_id, **kwargs)


class CrunFaceDetectionTrigger(_CrunJobTrigger):
    """
    Wait for a Crun face detection to finish.

    Yields one event. On success its ``result`` is ``{"detect_id", "faces": [{"id", "link"}]}``.

    :param detect_task_id: The detection task id.
    :param crun_conn_id: The ``crun`` connection to use.
    :param poll_interval: Seconds between polls.
    :param deadline: When to give up, as epoch seconds.
    :param limit: What set the deadline: ``timeout`` or ``execution_timeout``.
    :param resume_state: A small JSON dict copied into the event.
    """

    kind = jobs.DETECTION

    def __init__(self, detect_task_id: str, **kwargs: Any) -> None:
        super().__init__(detect_task_id, **kwargs)


#: The trigger class for each kind of job, by its id key.
TRIGGERS: dict[str, Callable[..., BaseTrigger]] = {
    cls.kind.id_key: cls for cls in (CrunTaskTrigger, CrunFaceDetectionTrigger)
}
