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


@dataclass(frozen=True)
class CreationIntent:
    """
    Written to the store just before a creation call, and withdrawn if the call creates nothing.

    A try killed while its creation call is in flight (a worker lost, ``execution_timeout``) leaves
    it behind without a new id. Crun has no idempotency key, so the next try must not send the
    call again: it may have created, and billed, a job nobody knows the id of.

    :param fingerprint: The fingerprint of the request about to be sent.
    :param replaces: The id stored when the call was made (a failed or changed job), or ``None``.
    """

    fingerprint: str
    replaces: str | None = None

    def to_json(self) -> dict[str, str | None]:
        return {"fingerprint": self.fingerprint, "replaces": self.replaces}

    @classmethod
    def from_json(cls, value: object) -> CreationIntent | None:
        """The intent a store holds, or ``None`` for nothing (or anything this release did not write)."""
        if not isinstance(value, dict) or not isinstance(value.get("fingerprint"), str):
            return None
        replaces = value.get("replaces")
        return cls(value["fingerprint"], replaces if isinstance(replaces, str) else None)

    def unfinished(self, stored: StoredJob | None, fingerprint: str) -> bool:
        """
        Whether this intent is a creation of the same request that never stored its id.

        Once the call's id is stored, the store holds that id rather than :attr:`replaces`.
        """
        stored_id = stored.job_id if stored is not None else None
        return self.fingerprint == fingerprint and self.replaces == stored_id
