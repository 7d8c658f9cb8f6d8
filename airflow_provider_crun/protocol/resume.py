"""
Resume or create: what a try does with the job an earlier try of the same task stored.

The caller reads the store and the job; this module only decides. The decision comes before
any check that matters only for creating (a detection's age, the balance), so a retry keeps a
job that was paid for, however long ago.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from airflow_provider_crun.protocol.jobs import JobPhase, JobRead


class Resume(StrEnum):
    """What a try does about a stored job."""

    #: Nothing stored: create a job.
    CREATE = "create"
    #: Stored for another request (the inputs changed): create a job for this one.
    REQUEST_CHANGED = "request-changed"
    #: Crun no longer knows the stored id (404): create a job.
    GONE = "gone"
    #: The stored job failed: create a job.
    FAILED = "failed"
    #: The stored job succeeded but its result can no longer be used (a detection past its hour).
    STALE = "stale"
    #: The stored job is pending, running, or in a status Crun has not documented: wait for it.
    WAIT = "wait"
    #: The stored job succeeded: use its result.
    DONE = "done"

    @property
    def reattaches(self) -> bool:
        """Whether the try keeps the stored job instead of creating one."""
        return self in (Resume.WAIT, Resume.DONE)


@dataclass(frozen=True)
class StoredJob:
    """
    What an earlier try stored: the job id, and the fingerprint of the request that made it.

    :param fingerprint: ``None`` for an id stored by a release that wrote none; still honoured.
    """

    job_id: str
    fingerprint: str | None = None

    def made_for(self, fingerprint: str) -> bool:
        """Whether this job was created for the request with ``fingerprint``."""
        return self.fingerprint is None or self.fingerprint == fingerprint


def decide(read: JobRead | None) -> Resume:
    """
    Judge a stored job from one read of it.

    :param read: The classified read, or ``None`` when Crun answered 404.
    """
    if read is None:
        return Resume.GONE
    if read.phase is JobPhase.SUCCEEDED:
        return Resume.DONE
    if read.phase is JobPhase.FAILED:
        return Resume.FAILED
    return Resume.WAIT
