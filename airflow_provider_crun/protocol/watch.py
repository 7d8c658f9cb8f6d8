"""
What every waiter decides the same way: the trigger, the blocking wait and the sensors.

No I/O: the caller reads, passes the answer in, and logs what comes back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow_provider_crun.protocol import errors
from airflow_provider_crun.protocol.jobs import JobKind, JobPhase, JobRead

# A waiter rebuilt after its deadline still polls once, and gets this long for that poll.
LAST_POLL_GRACE_SECONDS = 30.0


@dataclass(frozen=True)
class Observation:
    """
    One read of a job, judged.

    :param read: The classified answer.
    :param change: A log line when the status differs from the previous read, else ``None``.
    :param warning: A log line the first time an undocumented status is seen, else ``None``.
    """

    read: JobRead
    change: str | None
    warning: str | None

    @property
    def done(self) -> bool:
        """Whether the job finished: succeeded or failed."""
        return self.read.phase.is_terminal


@dataclass
class JobWatch:
    """
    What one waiter has seen of one job.

    :param kind: Task or face detection.
    :param job_id: The Crun id.
    """

    kind: JobKind
    job_id: str
    last_status: str | None = None
    # Immutable, so the usual empty one is shared: a thousand waiters keep no thousand sets alive.
    unknown_seen: frozenset[str] = frozenset()

    def observe(self, data: Any, *, now: float | None = None) -> Observation:
        """
        Classify one answer; ``now`` (epoch seconds) dates the change line from the job's creation.

        :raises errors.MalformedResponseError: for an answer Crun does not document.
        """
        read = self.kind.read(data, self.job_id)
        change = warning = None
        if read.status != self.last_status:
            change = f"Crun {self.kind.label} {self.job_id}: {self.last_status or '(start)'} -> "
            change += read.status or "(empty)"
            if now is not None and read.created_at is not None:
                change += f", {max(0.0, now - read.created_at):.1f} s after it was created"
            self.last_status = read.status
        if read.phase is JobPhase.UNKNOWN and read.status not in self.unknown_seen:
            self.unknown_seen |= {read.status}
            warning = (
                f"Crun {self.kind.label} {self.job_id}: unknown status {read.status!r}, treating it as "
                "not finished"
            )
        return Observation(read, change, warning)

    def outcome(self, seen: Observation) -> dict[str, Any]:
        """
        The summary of a finished job, or the error that ends the wait.

        :raises errors.JobFailedError: the job failed, with Crun's explanation.
        """
        if seen.read.phase is JobPhase.FAILED:
            raise errors.JobFailedError(
                f"Crun {self.kind.label} {self.job_id} failed: {seen.read.failure}", job_id=self.job_id
            )
        assert seen.read.result is not None
        return seen.read.result

    def read_error(self, error: errors.CrunProtocolError) -> errors.CrunProtocolError:
        """What a failed read means: a 501 is the job's own failure, anything else is itself."""
        if isinstance(error, errors.GenerationFailedError):
            return errors.JobFailedError(
                f"Crun {self.kind.label} {self.job_id} failed: {error.message} (code {error.code})",
                job_id=self.job_id,
            )
        return error

    def timed_out(
        self, deadline: float, limit: str, last_error: BaseException | None
    ) -> errors.JobTimeoutError:
        """The error for a wait that reached its deadline; ``limit`` names what set it."""
        message = (
            f"Crun {self.kind.label} {self.job_id} did not finish by {iso(deadline)} (its {limit}). Crun "
            f"keeps running it: a retry of this task reattaches to it; its id is {self.job_id}."
        )
        if self.last_status:
            message += f" Last status: {self.last_status!r}."
        if last_error is not None:
            message += f" Last poll failed: {last_error}"
        return errors.JobTimeoutError(message, job_id=self.job_id, limit=limit)


def iso(epoch_seconds: float) -> str:
    """An epoch time as ISO-8601 UTC, to the second."""
    return datetime.fromtimestamp(epoch_seconds, tz=UTC).isoformat(timespec="seconds")


def wait_deadline(now: float, timeout: float, execution_deadline: float | None) -> tuple[float, str]:
    """
    When a wait must end, and which limit sets it.

    :param now: Epoch seconds.
    :param timeout: The operator's own ``timeout``, in seconds from ``now``.
    :param execution_deadline: When the try's ``execution_timeout`` runs out (epoch), if set.
    :returns: ``(deadline, "timeout" | "execution_timeout")``.
    """
    own = now + timeout
    if execution_deadline is not None and execution_deadline < own:
        return execution_deadline, "execution_timeout"
    return own, "timeout"


def execution_deadline(started: Any, execution_timeout: timedelta | None) -> float | None:
    """
    When a try's ``execution_timeout`` runs out, as epoch seconds.

    :param started: The try's start (its task instance's ``start_date``); anything but a
        ``datetime`` counts as unknown.
    :returns: ``None`` when there is no ``execution_timeout`` or the start is unknown.
    """
    if execution_timeout is None or not isinstance(started, datetime):
        return None
    return started.timestamp() + execution_timeout.total_seconds()
