"""
The life cycle every Crun operator shares: resume or create one job, then wait for it.

Crun bills every job it creates and has neither an idempotency key nor a cancel endpoint, so
a retry must never create a second job while the first can still deliver:
:meth:`~airflow_provider_crun.operators._durable.DurableJobMixin.resume_or_create` decides, for
every mode (blocking, deferrable, submit-only), what a try does with a stored job.

.. seealso:: :ref:`durability`
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.common.compat.sdk import BaseOperator, conf

from airflow_provider_crun.exceptions import CrunBalanceTooLowError, CrunGenerationFailedError, airflow_error
from airflow_provider_crun.operators._durable import DurableJobMixin
from airflow_provider_crun.operators._validation import require_positive
from airflow_provider_crun.protocol import errors, jobs, watch

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_crun.hooks.crun import CrunHook
    from airflow_provider_crun.protocol.calls import CrunRequest

DEFAULT_POLL_INTERVAL = 10.0
DEFAULT_TIMEOUT = 3 * 3600.0


class CrunJobOperator(DurableJobMixin, BaseOperator):
    """
    Base of the operators that create one Crun job and wait for it.

    Subclasses build the creation request (:meth:`_creation_request`), may add checks that only
    matter for creating (:meth:`_check_before_create`), and turn the finished job's summary into
    the XCom value (:meth:`_finish`).

    :param deferrable: Wait in the triggerer instead of on a worker slot.
    :param poll_interval: Seconds between two status reads.
    :param timeout: Seconds to wait for the job before failing the try. Crun keeps running it,
        and a retry reattaches to it. A shorter ``execution_timeout`` wins.
    :param crun_conn_id: The ``crun`` connection to use. (templated)
    :param durable: Store the Crun id in ``task_state_store`` so a retry reattaches (Airflow 3.3+).
    :param min_balance: Before creating a job (never before reattaching), read the free balance
        and fail without a retry when it is below this. Default: the connection's ``min_balance``
        extra; no check when neither is set.
    """

    kind: ClassVar[jobs.JobKind]
    template_fields: Sequence[str] = ("crun_conn_id",)

    def __init__(
        self,
        *,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        timeout: float = DEFAULT_TIMEOUT,
        crun_conn_id: str = "crun_default",
        durable: bool = True,
        min_balance: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.deferrable = deferrable
        self.poll_interval = require_positive("poll_interval", poll_interval)
        self.timeout = require_positive("timeout", timeout)
        self.crun_conn_id = crun_conn_id
        self.durable = durable
        self.min_balance = (
            None if min_balance is None else require_positive("min_balance", min_balance, zero=True)
        )
        self._job_id: str | None = None

    @cached_property
    def hook(self) -> CrunHook:
        """The Crun hook, built on first use so parsing a DAG never reads a connection."""
        from airflow_provider_crun.hooks.crun import CrunHook

        return CrunHook(crun_conn_id=self.crun_conn_id)

    # ----------------------------------------------------------------------------------------
    # What subclasses provide

    def _creation_request(self, context: Context) -> CrunRequest:
        """Validate the rendered arguments and build the creation call; no I/O, no clock."""
        raise NotImplementedError

    def _check_before_create(self, context: Context) -> None:
        """
        Checks that matter only when a new job is about to be created (and paid for).

        :raises CrunBalanceTooLowError: the balance is below ``min_balance``.
        """
        threshold = self.min_balance if self.min_balance is not None else self.hook.settings.min_balance
        if threshold is None:
            return
        balance = self.hook.get_balance()
        if balance < threshold:
            raise CrunBalanceTooLowError(
                f"The Crun balance is {balance:g} credits, below min_balance={threshold:g}, so no Crun "
                f"{self.kind.label} was created. Top up the account, or lower min_balance."
            )
        self.log.info("Crun balance %g credits (min_balance %g).", balance, threshold)

    def _resume_state(self, context: Context) -> dict[str, Any]:
        """What :meth:`_finish` needs besides the result; travels through the trigger event."""
        return {}

    def _finish(self, context: Context, job_id: str, result: dict[str, Any], state: dict[str, Any]) -> Any:
        """Turn a finished job's summary into the XCom value."""
        raise NotImplementedError

    def _waits_for_completion(self) -> bool:
        return True

    def _submitted(self, job_id: str, read: jobs.JobRead | None) -> Any:
        """The XCom value when the operator does not wait."""
        raise NotImplementedError

    # ----------------------------------------------------------------------------------------
    # Entry points

    def execute(self, context: Context) -> Any:
        """Resume or create the job, then return its result, wait for it, or defer."""
        request = self._creation_request(context)
        job_id, read = self.resume_or_create(context, request)
        if not self._waits_for_completion():
            return self._submitted(job_id, read)
        if read is None and self.deferrable:
            read = self._status_before_deferring(job_id)
        if read is not None and read.phase.is_terminal:
            return self._finish(context, job_id, self._outcome(job_id, read), self._resume_state(context))
        deadline, limit = self._deadline(context)
        if self.deferrable:
            from airflow_provider_crun.triggers.crun import TRIGGERS

            self.log.info(
                "Deferring until Crun %s %s finishes (until %s).",
                self.kind.label,
                job_id,
                watch.iso(deadline),
            )
            # No defer(timeout=...): it would fail the task without calling execute_complete.
            self.defer(
                trigger=TRIGGERS[self.kind.id_key](
                    job_id,
                    crun_conn_id=self.crun_conn_id,
                    poll_interval=self.poll_interval,
                    deadline=deadline,
                    limit=limit,
                    resume_state=self._resume_state(context),
                ),
                method_name="execute_complete",
            )
        result = self.hook.wait_for_job(
            self.kind, job_id, poll_interval=self.poll_interval, deadline=deadline, limit=limit
        )
        return self._finish(context, job_id, result, self._resume_state(context))

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """
        Resume after the trigger fired: the result, or the exception blocking mode raises.

        :param event: The trigger's event; its ``resume_state`` stands in for
            ``defer(kwargs=...)``, which ``airflow dags test`` drops.
        """
        from airflow_provider_crun.events import result_from_event

        job_id, result, state = result_from_event(event, self.kind)
        self._job_id = job_id
        return self._finish(context, job_id, result, state or self._resume_state(context))

    def on_kill(self) -> None:
        """Crun cannot cancel a job, so only say which one keeps running."""
        if self._job_id is not None:
            self.log.warning(
                "Crun has no cancel endpoint: Crun %s %s keeps running (and is billed) although this "
                "Airflow task was killed.",
                self.kind.label,
                self._job_id,
            )

    # ----------------------------------------------------------------------------------------

    def _status_before_deferring(self, job_id: str) -> jobs.JobRead | None:
        """One read, so a job that already finished never waits for a triggerer round trip."""
        try:
            read = self.kind.read(self.hook.get_job(self.kind, job_id), job_id)
        except CrunGenerationFailedError as error:
            raise airflow_error(watch.JobWatch(self.kind, job_id).read_error(error)) from None
        except errors.CrunProtocolError as error:
            if error.permanent:
                raise airflow_error(error) from None
            self.log.warning(
                "Could not read Crun %s %s (%s); the trigger will.", self.kind.label, job_id, error
            )
            return None
        self.log.info("Crun %s %s: status %r.", self.kind.label, job_id, read.status)
        return read

    def _outcome(self, job_id: str, read: jobs.JobRead) -> dict[str, Any]:
        try:
            return watch.JobWatch(self.kind, job_id).outcome(watch.Observation(read, None, None))
        except errors.CrunProtocolError as error:
            raise airflow_error(error) from None

    def _deadline(self, context: Context) -> tuple[float, str]:
        """The earlier of ``timeout`` from now and the end of this try's ``execution_timeout``."""
        started = getattr(context.get("ti"), "start_date", None)
        execution_end = watch.execution_deadline(started, self.execution_timeout)
        return watch.wait_deadline(time.time(), self.timeout, execution_end)
