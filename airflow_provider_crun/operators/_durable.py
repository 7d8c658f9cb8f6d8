"""
Resume or create: the one decision every Crun operator makes about the job an earlier try stored.

Right after creation the job id is stored in ``task_state_store`` (Airflow 3.3+), with the
fingerprint of the request that made it. A retry reads the stored job *before* any check that
only matters for creating (a detection's age, the balance), so a job that was paid for is kept
however old its inputs are. Airflow's ``ResumableJobMixin`` is not used: it decides only on the
blocking path and cannot tell that the request changed.

.. seealso:: :ref:`durability`
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.common.compat.sdk import AirflowException

from airflow_provider_crun.exceptions import (
    CrunCreationUnknownError,
    CrunGenerationFailedError,
    CrunJobNotStoredError,
    CrunNotFoundError,
    airflow_error,
)
from airflow_provider_crun.protocol import errors, jobs
from airflow_provider_crun.protocol.resume import CreationIntent, Resume, StoredJob, decide

# Tries of the one store write that keeps a retry from paying twice.
STORE_ATTEMPTS = 3

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context
    from airflow.sdk.types import Logger

    from airflow_provider_crun.hooks.crun import CrunHook
    from airflow_provider_crun.protocol.calls import CrunRequest


class DurableJobMixin:
    """
    :meth:`resume_or_create`, for an operator with a ``kind``, a ``hook`` and ``durable``.

    The operator provides :meth:`_check_before_create`, :meth:`_stored_result_usable` and
    :meth:`_state_to_store`.
    """

    kind: ClassVar[jobs.JobKind]
    durable: bool
    _job_id: str | None

    if TYPE_CHECKING:

        @property
        def hook(self) -> CrunHook: ...

        @property
        def log(self) -> Logger: ...

    def _check_before_create(self, context: Context) -> None:
        """Checks that matter only when a new job is about to be created (and paid for)."""

    def _stored_result_usable(self, context: Context, result: dict[str, Any]) -> bool:
        """Whether a stored job's success is still worth returning."""
        return True

    def _state_to_store(self) -> dict[str, Any]:
        """Extra ``task_state_store`` values written with a new job's id."""
        return {}

    def resume_or_create(self, context: Context, request: CrunRequest) -> tuple[str, jobs.JobRead | None]:
        """
        Reattach to the job an earlier try stored, or create one.

        The stored job is read before any check that matters only for creating, so a retry keeps a
        paid job however old its inputs are. It is kept when it was made for this same request
        and is pending, running or succeeded; otherwise a new job is created.

        :returns: The job id, and the read of a reattached job (``None`` for a new one).
        """
        store = self._state_store(context)
        stored = self._stored_job(store)
        if stored is not None:
            decision, read = self._judge(context, stored, request.fingerprint)
            if decision.reattaches:
                self.log.info(
                    "Reattaching to Crun %s %s (status %r) from an earlier try; nothing is created again.",
                    self.kind.label,
                    stored.job_id,
                    read.status if read else "",
                )
                self._job_id = stored.job_id
                return stored.job_id, read
            self.log.warning(
                "Crun %s %s from an earlier try is not reused: %s. Creating a new one.",
                self.kind.label,
                stored.job_id,
                _why_not_reused(decision, stored, request.fingerprint, read),
            )
        self._refuse_unfinished_creation(store, stored, request)
        self._check_before_create(context)
        intent = CreationIntent(request.fingerprint, stored.job_id if stored else None)
        try:
            job_id = self.hook.submit(request, _IntentWatch(self, store, intent))
        except Exception:
            # The call ended in this try: whatever it did, the error says so, and a later try must
            # not take the intent for a call that was lost with its try.
            self._withdraw_intent(store)
            raise
        self._job_id = job_id
        self.log.info("Created Crun %s %s.", self.kind.label, job_id)
        if store is not None:
            self._remember(store, job_id, request.fingerprint)
        self._log_balance_after(job_id)
        return job_id, None

    def _remember(self, store: Any, job_id: str, fingerprint: str) -> None:
        """
        Store a new job: its id first, because the id alone makes a retry reattach.

        The fingerprint and the extras follow; a retry honours an id stored without them.
        """
        self._write_retried(store, self.kind.id_key, job_id)
        for key, value in {self._fingerprint_key: fingerprint, **self._state_to_store()}.items():
            try:
                store.set(key, value)
            except Exception as error:
                self.log.warning("Could not store %s (%s); a retry still reattaches by the id.", key, error)

    def _write_retried(self, store: Any, key: str, value: Any, *, before_creating: bool = False) -> None:
        """
        One store write that keeps a retry from paying twice, tried a few times.

        The store is an API call that can fail under load.

        :raises AirflowException: the creation intent could not be stored; nothing was created, so
            an Airflow retry is safe.
        :raises CrunJobNotStoredError: a new job's id could not be stored. An Airflow retry would
            not find the job and would pay for another, so the task fails without one.
        """
        if store is None:
            return
        for attempt in range(1, STORE_ATTEMPTS + 1):
            try:
                store.set(key, value)
                return
            except Exception as error:
                if attempt < STORE_ATTEMPTS:
                    self.log.warning("Storing %s failed (%s); trying again.", key, error)
                    self.hook.clock.sleep(attempt)
                    continue
                if before_creating:
                    raise AirflowException(
                        f"Could not store {key} in task_state_store ({type(error).__name__}: {error}), "
                        f"so no Crun {self.kind.label} was created; a retry may create it."
                    ) from error
                raise CrunJobNotStoredError(
                    f"Created Crun {self.kind.label} {value}, but could not store its id in "
                    f"task_state_store ({type(error).__name__}: {error}). A retry would not find it and "
                    f"would pay for another, so this task is not retried. Crun {self.kind.label} "
                    f"{value} keeps running; look it up by its id."
                ) from error

    def _refuse_unfinished_creation(self, store: Any, stored: StoredJob | None, request: CrunRequest) -> None:
        """
        Fail, without a retry, when an earlier try was lost while sending this same creation call.

        The intent is withdrawn first: the user who checked Crun and clears the task decides
        that a new job may be created.

        :raises CrunCreationUnknownError: an earlier try may have created a job whose id is lost.
        """
        intent = CreationIntent.from_json(store.get(self._intent_key)) if store is not None else None
        if intent is None or not intent.unfinished(stored, request.fingerprint):
            return
        self._withdraw_intent(store)
        raise CrunCreationUnknownError(
            f"An earlier try of this task ended while its Crun {request.name} call was in flight (its "
            "worker was lost, or it timed out), so the request may have reached Crun and created a "
            f"billed {self.kind.label} whose id was never stored. Crun has no idempotency key, so it is "
            "not sent again and this task is not retried. Check your Crun account, then clear the task "
            "to create a new one."
        )

    def _withdraw_intent(self, store: Any) -> None:
        if store is None:
            return
        try:
            store.delete(self._intent_key)
        except Exception as error:
            self.log.warning("Could not withdraw %s (%s).", self._intent_key, error)

    @property
    def _fingerprint_key(self) -> str:
        return f"{self.kind.id_key}_fingerprint"

    @property
    def _intent_key(self) -> str:
        return f"{self.kind.id_key}_creating"

    def _judge(
        self, context: Context, stored: StoredJob, fingerprint: str
    ) -> tuple[Resume, jobs.JobRead | None]:
        if not stored.made_for(fingerprint):
            return Resume.REQUEST_CHANGED, None
        try:
            read: jobs.JobRead | None = self.kind.read(
                self.hook.get_job(self.kind, stored.job_id), stored.job_id
            )
        except CrunNotFoundError:
            read = None
        except CrunGenerationFailedError as error:
            read = jobs.JobRead(jobs.JobPhase.FAILED, "failed", failure=error.message)
        except errors.CrunProtocolError as error:
            raise airflow_error(error) from None
        decision = decide(read)
        if decision is Resume.DONE and read and not self._stored_result_usable(context, read.result or {}):
            decision = Resume.STALE
        return decision, read

    def _stored_job(self, store: Any) -> StoredJob | None:
        job_id = store.get(self.kind.id_key) if store is not None else None
        if not job_id:
            return None
        fingerprint = store.get(self._fingerprint_key)
        return StoredJob(str(job_id), str(fingerprint) if fingerprint else None)

    def _state_store(self, context: Context) -> Any:
        """The try's ``task_state_store``, or ``None`` (Airflow < 3.3, or ``durable=False``)."""
        store = context.get("task_state_store")
        if store is None and self.durable:
            self.log.warning(
                "No task_state_store in the context (durable execution needs Airflow 3.3): if this try "
                "fails after creating the Crun %s, a retry creates and pays for a new one.",
                self.kind.label,
            )
        return store if self.durable else None

    def _log_balance_after(self, job_id: str) -> None:
        """At debug level only (it costs a request), and after the id is stored: never fails the try."""
        if not getattr(self.log, "isEnabledFor", lambda level: False)(logging.DEBUG):
            return
        try:
            self.log.debug("Crun balance after creating %s: %g credits.", job_id, self.hook.get_balance())
        except Exception as error:
            self.log.debug("Could not read the Crun balance: %s", error)


class _IntentWatch:
    """
    Keeps the creation intent standing exactly while an attempt of the call may be on the wire.

    It is written just before each attempt, and withdrawn before each backoff: the sync transport
    waits out a 429's ``Retry-After`` inside the call, and a try lost during that wait sent
    nothing that could have created a job, so its retry must not refuse.
    """

    def __init__(self, operator: DurableJobMixin, store: Any, intent: CreationIntent) -> None:
        self._operator = operator
        self._store = store
        self._intent = intent

    def before_send(self) -> None:
        self._operator._write_retried(
            self._store, self._operator._intent_key, self._intent.to_json(), before_creating=True
        )

    def before_wait(self) -> None:
        self._operator._withdraw_intent(self._store)


def _why_not_reused(decision: Resume, stored: StoredJob, fingerprint: str, read: jobs.JobRead | None) -> str:
    if decision is Resume.REQUEST_CHANGED:
        return f"the request changed (stored fingerprint {stored.fingerprint}, now {fingerprint})"
    if decision is Resume.GONE:
        return "Crun no longer knows it (404)"
    if decision is Resume.FAILED:
        return f"it failed ({read.failure if read else 'no detail'})"
    return "its result can no longer be used"
