"""
Deferrable triggers that wait for a Crun task or face detection to finish.

Hundreds of these run on one triggerer event loop, so the poll loop never blocks: every poll
goes through the hook's async transport and the process-wide pooled ``aiohttp`` session.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timezone
from typing import Any, ClassVar

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_crun import protocol
from airflow_provider_crun.events import EventStatus, make_event
from airflow_provider_crun.exceptions import CrunApiError, CrunConfigError, CrunGenerationFailedError
from airflow_provider_crun.hooks.crun import CrunHook

DEFAULT_POLL_INTERVAL = 10.0
DEFAULT_TIMEOUT = 3 * 3600.0


# A trigger rebuilt after its deadline still polls once, and gets this long for that poll.
LAST_POLL_GRACE_SECONDS = 30.0


async def _within(poll: Awaitable[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """Await ``poll`` for at most ``seconds``; raise ``TimeoutError`` after that."""
    if sys.version_info >= (3, 11):
        # asyncio.timeout costs half of wait_for, which wraps every poll in a new Task.
        async with asyncio.timeout(seconds):
            return await poll
    return await asyncio.wait_for(poll, timeout=seconds)


def _iso(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(epoch_seconds, tz=timezone.utc).isoformat(timespec="seconds")


class _CrunPollingTrigger(BaseTrigger):
    """
    Poll one Crun job until it finishes or its deadline passes, then yield exactly one event.

    Subclasses name the id key and the hook method; everything else is shared.

    :param job_id: The Crun id of the job to watch.
    :param crun_conn_id: The ``crun`` connection to use.
    :param poll_interval: Seconds between polls.
    :param timeout: Seconds to wait in total; only used to compute ``deadline`` when none is given.
    :param deadline: Absolute UTC deadline as epoch seconds. Passed back by :meth:`serialize`, so a
        trigger re-created after a triggerer restart keeps its original deadline.
    :param resume_state: Small JSON-like dict copied into the event, for the resume method.
    :param first_poll_jitter: Delay the first poll by a random fraction of ``poll_interval``, so a
        thousand triggers started (or restored after a restart) together do not poll together.
        Tests turn it off.
    """

    id_key: ClassVar[str]
    label: ClassVar[str]

    # Indirections so tests can fast-forward time instead of sleeping through it.
    _sleep: Callable[[float], Awaitable[Any]] = staticmethod(asyncio.sleep)
    _now: Callable[[], float] = staticmethod(time.time)

    def __init__(
        self,
        job_id: str,
        *,
        crun_conn_id: str,
        poll_interval: float,
        timeout: float,
        deadline: float | None,
        resume_state: dict[str, Any] | None,
        first_poll_jitter: bool,
    ) -> None:
        super().__init__()
        self.job_id = job_id
        self.crun_conn_id = crun_conn_id
        self.poll_interval = float(poll_interval)
        self.timeout = float(timeout)
        self.deadline = float(deadline) if deadline is not None else type(self)._now() + self.timeout
        self.resume_state = resume_state
        self.first_poll_jitter = first_poll_jitter

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Return the class path and the exact keyword arguments that rebuild this trigger."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                self.id_key: self.job_id,
                "crun_conn_id": self.crun_conn_id,
                "poll_interval": self.poll_interval,
                "timeout": self.timeout,
                "deadline": self.deadline,
                "resume_state": self.resume_state,
                "first_poll_jitter": self.first_poll_jitter,
            },
        )

    def _fetch(self, hook: CrunHook) -> Awaitable[dict[str, Any]]:
        raise NotImplementedError

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll until the job finishes, fails or the deadline passes; yield one event."""
        event = await self._outcome()
        yield TriggerEvent(event)

    async def cleanup(self) -> None:
        """
        Nothing to release: the shared session's lease is returned when :meth:`run` exits.

        This runs on every exit, a triggerer restart included, so it must not cancel anything.
        """

    # ----------------------------------------------------------------------------------------

    def _event(self, status: EventStatus, message: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
        return make_event(
            status,
            id_key=self.id_key,
            job_id=self.job_id,
            message=message,
            data=data,
            resume_state=self.resume_state,
        )

    def _remaining(self) -> float:
        return self.deadline - type(self)._now()

    async def _pause(self, seconds: float) -> None:
        """Sleep, but never past the deadline: the last poll should happen right at it."""
        seconds = min(seconds, self._remaining())
        if seconds > 0:
            await type(self)._sleep(seconds)

    async def _outcome(self) -> dict[str, Any]:
        hook = CrunHook(crun_conn_id=self.crun_conn_id)
        if self.first_poll_jitter:
            # Before the connection lookup too: its synchronous part, times a thousand triggers
            # restored at once, would otherwise stall the loop in one burst.
            await self._pause(random.uniform(0, self.poll_interval))
        api_key = ""
        try:
            api_key = (await hook.aget_settings()).api_key
            async with hook.async_session():
                event = await self._poll(hook)
        except CrunGenerationFailedError as error:
            event = self._event("failed", f"Crun {self.label} {self.job_id} failed: {error.message}")
        except (CrunApiError, CrunConfigError) as error:
            event = self._event("error", f"Crun {self.label} {self.job_id}: {error}")
        except Exception as error:
            # A trigger that raises takes its task down with a traceback the user cannot act on;
            # an error event fails the task with a readable message instead.
            self.log.exception("Unexpected error while polling Crun %s %s", self.label, self.job_id)
            event = self._event("error", f"Crun {self.label} {self.job_id}: {type(error).__name__}: {error}")
        # An exception's text is the one place the key could slip into the event (and the UI).
        if api_key:
            event["message"] = event["message"].replace(api_key, "***")
        return event

    async def _poll(self, hook: CrunHook) -> dict[str, Any]:
        self.log.info(
            "Polling Crun %s %s every %g s until %s.",
            self.label,
            self.job_id,
            self.poll_interval,
            _iso(self.deadline),
        )
        watch = protocol.JobWatch(self.label, self.job_id)
        started = time.monotonic()
        failures = 0
        data: dict[str, Any] | None = None
        last_error: BaseException | None = None
        while True:
            try:
                # The hook's own retries must not carry a poll past the deadline.
                data = await _within(self._fetch(hook), max(self._remaining(), LAST_POLL_GRACE_SECONDS))
            except asyncio.TimeoutError:
                return self._timeout_event(data, last_error)
            except Exception as error:
                if not protocol.is_retryable(error, creates_billable=False):
                    raise
                failures += 1
                last_error = error
                wait = protocol.backoff_seconds(failures, error)
                self.log.warning(
                    "Crun %s %s: poll failed (%s); polling again in %.1f s.",
                    self.label,
                    self.job_id,
                    error,
                    wait,
                )
            else:
                failures, last_error, wait = 0, None, self.poll_interval
                event = self._observe(data, watch, time.monotonic() - started)
                if event is not None:
                    return event
            if self._remaining() <= 0:
                return self._timeout_event(data, last_error)
            await self._pause(wait)

    def _observe(
        self, data: dict[str, Any], watch: protocol.JobWatch, elapsed: float
    ) -> dict[str, Any] | None:
        """Log what changed since the last poll; return the final event once the job finished."""
        seen = watch.observe(data, elapsed)
        if seen.change:
            self.log.info(seen.change)
        if seen.warning:
            self.log.warning(seen.warning)
        if seen.phase is protocol.CrunJobPhase.SUCCEEDED:
            return self._event("success", f"Crun {self.label} {self.job_id} succeeded.", data)
        if seen.phase is protocol.CrunJobPhase.FAILED:
            return self._event("failed", watch.failure_message(data), data)
        return None

    def _timeout_event(self, data: dict[str, Any] | None, last_error: BaseException | None) -> dict[str, Any]:
        message = (
            f"Crun {self.label} {self.job_id} did not finish by its deadline {_iso(self.deadline)} "
            f"({self.timeout:g} s timeout). Crun keeps running it; look it up by its id {self.job_id}."
        )
        if last_error is not None:
            message += f" Last poll failed: {last_error}"
        return self._event("timeout", message, data)


class CrunTaskTrigger(_CrunPollingTrigger):
    """
    Wait for a Crun task (any model, read through ``TaskInfo``) to finish.

    Yields one event: ``success`` (``data`` is the finished ``TaskInfo`` data, with
    ``result.media_urls``), ``failed``, ``timeout`` or ``error``.

    .. seealso:: :func:`airflow_provider_crun.events.data_from_event` for the resume side.

    :param crun_task_id: The Crun task id.
    :param crun_conn_id: The ``crun`` connection to use.
    :param poll_interval: Seconds between polls.
    :param timeout: Seconds to wait in total, from the moment the trigger is first created.
    :param deadline: Absolute UTC deadline as epoch seconds; computed from ``timeout`` when ``None``.
    :param resume_state: Small JSON-like dict copied into the event.
    :param first_poll_jitter: Delay the first poll by a random fraction of ``poll_interval``.
    """

    id_key = "crun_task_id"
    label = "task"

    def __init__(
        self,
        crun_task_id: str,
        crun_conn_id: str = CrunHook.default_conn_name,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        timeout: float = DEFAULT_TIMEOUT,
        deadline: float | None = None,
        resume_state: dict[str, Any] | None = None,
        first_poll_jitter: bool = True,
    ) -> None:
        super().__init__(
            crun_task_id,
            crun_conn_id=crun_conn_id,
            poll_interval=poll_interval,
            timeout=timeout,
            deadline=deadline,
            resume_state=resume_state,
            first_poll_jitter=first_poll_jitter,
        )

    @property
    def crun_task_id(self) -> str:
        """The Crun task id."""
        return self.job_id

    def _fetch(self, hook: CrunHook) -> Awaitable[dict[str, Any]]:
        return hook.aget_task(self.job_id)


class CrunFaceDetectionTrigger(_CrunPollingTrigger):
    """
    Wait for a Crun face detection to finish.

    Yields one event: ``success`` (``data`` is the finished detection, with ``result.id`` and
    ``result.faces``), ``failed``, ``timeout`` or ``error``.

    :param detect_task_id: The detection task id.
    :param crun_conn_id: The ``crun`` connection to use.
    :param poll_interval: Seconds between polls.
    :param timeout: Seconds to wait in total, from the moment the trigger is first created.
    :param deadline: Absolute UTC deadline as epoch seconds; computed from ``timeout`` when ``None``.
    :param resume_state: Small JSON-like dict copied into the event.
    :param first_poll_jitter: Delay the first poll by a random fraction of ``poll_interval``.
    """

    id_key = "detect_task_id"
    label = "face detection"

    def __init__(
        self,
        detect_task_id: str,
        crun_conn_id: str = CrunHook.default_conn_name,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        timeout: float = DEFAULT_TIMEOUT,
        deadline: float | None = None,
        resume_state: dict[str, Any] | None = None,
        first_poll_jitter: bool = True,
    ) -> None:
        super().__init__(
            detect_task_id,
            crun_conn_id=crun_conn_id,
            poll_interval=poll_interval,
            timeout=timeout,
            deadline=deadline,
            resume_state=resume_state,
            first_poll_jitter=first_poll_jitter,
        )

    @property
    def detect_task_id(self) -> str:
        """The detection task id."""
        return self.job_id

    def _fetch(self, hook: CrunHook) -> Awaitable[dict[str, Any]]:
        return hook.aget_face_detection(self.job_id)
