"""
The life cycle shared by the Crun operators: create one Crun job, remember its id, wait, reattach.

Crun bills every job it creates and has neither an idempotency key nor a cancel endpoint, so a
retry must never create a second job while the first one can still deliver. The job id is stored
in ``task_state_store`` (Airflow 3.3+) right after creation, in blocking and deferrable mode
alike, and a retry of the same task instance decides from the stored job's status:

* pending or running (or a status Crun has not documented): reattach and keep waiting;
* succeeded: return its result without waiting;
* failed, or unknown to Crun (404): create a new job.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.common.compat.sdk import BaseOperator, ResumableJobMixin, conf

from airflow_provider_crun import events, protocol
from airflow_provider_crun.exceptions import (
    CrunCreationUnknownError,
    CrunError,
    CrunGenerationFailedError,
    CrunJobFailedError,
    CrunMalformedResponseError,
    CrunNotFoundError,
    CrunServerError,
    CrunTransportError,
)
from airflow_provider_crun.operators._validation import require_positive

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context
    from airflow.triggers.base import BaseTrigger

    from airflow_provider_crun.hooks.crun import CrunHook

DEFAULT_POLL_INTERVAL = 10.0
DEFAULT_TIMEOUT = 3 * 3600.0
# Status words of our own start with this prefix, which no Crun status has; they mean "do not reuse".
LOCAL_STATUS_PREFIX = "crun:"
# What get_job_status reports when Crun answers 404 for a stored id.
NOT_FOUND = f"{LOCAL_STATUS_PREFIX}not-found"


def _may_have_created(error: CrunError) -> bool:
    """Whether a failed creation call may still have created (and billed) the job on Crun."""
    if isinstance(error, CrunTransportError):
        return error.request_sent
    return isinstance(error, (CrunServerError, CrunMalformedResponseError))


class CrunJobOperator(ResumableJobMixin, BaseOperator):
    """
    Base of the operators that create one Crun job and wait for it to finish.

    Subclasses say how to create, read, wait for and report their kind of job (``_create``,
    ``_fetch``, ``_wait``, ``_trigger``, ``_resume_state``, ``_finish``); this class owns the
    blocking and deferrable paths and the durable reattach.

    :param deferrable: Wait in the triggerer instead of on a worker slot.
    :param poll_interval: Seconds between two status reads.
    :param timeout: Seconds to wait for the job before failing the try; Crun keeps running it, and
        a retry reattaches to it.
    :param crun_conn_id: The ``crun`` connection to use.
    :param durable: Store the Crun id in ``task_state_store`` so a retry reattaches (Airflow 3.3+).
    """

    #: The ``task_state_store`` key and the event key naming the job's id.
    external_id_key: str = "crun_task_id"
    #: How logs and errors call the job.
    job_label: ClassVar[str] = "task"

    def __init__(
        self,
        *,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        timeout: float = DEFAULT_TIMEOUT,
        crun_conn_id: str = "crun_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.deferrable = deferrable
        self.poll_interval = require_positive("poll_interval", poll_interval)
        self.timeout = require_positive("timeout", timeout)
        self.crun_conn_id = crun_conn_id
        self._job_id: str | None = None
        self._job_data: dict[str, dict[str, Any]] = {}
        self._results: dict[str, Any] = {}
        self._durability_noted = False

    @cached_property
    def hook(self) -> CrunHook:
        """The Crun hook, built on first use so parsing a DAG never reads a connection."""
        from airflow_provider_crun.hooks.crun import CrunHook

        return CrunHook(crun_conn_id=self.crun_conn_id)

    # ----------------------------------------------------------------------------------------
    # What subclasses provide

    def _prepare(self, context: Context) -> None:
        """Validate the rendered arguments and build the request; no I/O."""

    def _create(self, context: Context) -> str:
        """Create the job on Crun (this spends credits) and return its id."""
        raise NotImplementedError

    def _fetch(self, job_id: str) -> dict[str, Any]:
        """Read the job's current ``data`` once."""
        raise NotImplementedError

    def _wait(self, job_id: str) -> dict[str, Any]:
        """Block until the job finishes; return its ``data`` or raise."""
        raise NotImplementedError

    def _trigger(self, job_id: str, resume_state: dict[str, Any]) -> BaseTrigger:
        """The trigger that waits for the job in deferrable mode."""
        raise NotImplementedError

    def _resume_state(self, context: Context, job_id: str) -> dict[str, Any]:
        """What :meth:`_finish` needs besides the job's data; travels through the trigger event."""
        return {}

    def _finish(self, context: Context, job_id: str, data: dict[str, Any], state: dict[str, Any]) -> Any:
        """Turn a successful job's ``data`` into the XCom return value."""
        raise NotImplementedError

    # ----------------------------------------------------------------------------------------
    # Entry points

    def execute(self, context: Context) -> Any:
        """Validate, then create the job (or reattach to it) and wait, blocking or deferred."""
        require_positive("poll_interval", self.poll_interval)
        require_positive("timeout", self.timeout)
        self._prepare(context)
        return self._run(context)

    def _run(self, context: Context) -> Any:
        store = self._state_store(context)
        if self.deferrable:
            return self._run_deferrable(context, store)
        if store is None:
            return self.poll_until_complete(self.submit_job(context), context)
        return self.execute_resumable(context)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """
        Resume after the trigger fired: return the result, or raise for anything but success.

        :param event: The trigger's event; its ``resume_state`` replaces ``defer(kwargs=...)``,
            which ``airflow dags test`` drops.
        :raises CrunJobFailedError: the job failed (Crun's message is included).
        :raises CrunTimeoutError: the trigger's deadline passed; Crun keeps running the job.
        :raises CrunError: an error or malformed event.
        """
        data = events.data_from_event(event, id_key=self.external_id_key)
        assert event is not None  # data_from_event raised otherwise
        job_id = str(event[self.external_id_key])
        self._job_id = job_id
        state = event.get("resume_state") or self._resume_state(context, job_id)
        return self._finish(context, job_id, data, state)

    def on_kill(self) -> None:
        """Crun cannot cancel a job, so only say which one keeps running."""
        if self._job_id is None:
            self.log.info("Killed before this process created or reattached to a Crun %s.", self.job_label)
            return
        self.log.warning(
            "Crun has no cancel endpoint: Crun %s %s keeps running (and is billed) although this Airflow "
            "task was killed. Look it up by its id %s.",
            self.job_label,
            self._job_id,
            self._job_id,
        )

    # ----------------------------------------------------------------------------------------
    # Durability

    def _state_store(self, context: Context) -> Any:
        """The task's ``task_state_store``, or ``None`` (Airflow < 3.3, or ``durable=False``)."""
        store = context.get("task_state_store")
        if store is None and not self._durability_noted:
            self._durability_noted = True
            self.log.warning(
                "No task_state_store in the context (durable execution needs Airflow 3.3): if this try "
                "fails after creating the Crun %s, a retry creates and pays for a new one.",
                self.job_label,
            )
        return store if self.durable else None

    def _reattach(self, context: Context, store: Any) -> tuple[str | None, str | None]:
        """
        Decide what to do with the job an earlier try stored.

        :returns: ``(job_id, status)`` to reuse a pending, running or succeeded job, or
            ``(None, None)`` when a new one must be created.
        """
        prior = store.get(self.external_id_key) if store is not None else None
        if not prior:
            return None, None
        job_id = str(prior)
        status = self.get_job_status(job_id, context)
        if self.is_job_active(status) or self.is_job_succeeded(status):
            self.log.info(
                "Reattaching to Crun %s %s (status %r) created by an earlier try; nothing is created again.",
                self.job_label,
                job_id,
                status,
            )
            self._job_id = job_id
            return job_id, status
        self.log.warning(
            "Crun %s %s from an earlier try is %s; creating a new one.",
            self.job_label,
            job_id,
            "unknown to Crun (404)" if status == NOT_FOUND else repr(status),
        )
        return None, None

    def _submit_and_remember(self, context: Context, store: Any) -> str:
        job_id = self.submit_job(context)
        if store is not None:
            store.set(self.external_id_key, job_id)
        return job_id

    # ----------------------------------------------------------------------------------------
    # ResumableJobMixin (the blocking path) and the same decisions for the deferrable path

    def submit_job(self, context: Context) -> str:
        """
        Create the Crun job and log its id.

        :raises CrunCreationUnknownError: the call failed after it may have created the job; an
            Airflow retry could pay for a second one, so the task fails without retrying.
        """
        try:
            job_id = self._create(context)
        except CrunError as error:
            if not _may_have_created(error):
                raise
            raise CrunCreationUnknownError(
                f"Creating the Crun {self.job_label} failed after the request may have reached Crun "
                f"({error}). Crun may have created and billed it, and a retry could pay for a second "
                f"one, so this task is not retried. Check your Crun account, then clear the task to "
                "try again."
            ) from error
        self._job_id = job_id
        self.log.info("Created Crun %s %s.", self.job_label, job_id)
        return job_id

    def get_job_status(self, external_id: Any, context: Context) -> str:
        """Crun's status word for the job, or :data:`NOT_FOUND` when Crun no longer knows it."""
        job_id = str(external_id)
        try:
            data = self._fetch(job_id)
        except CrunNotFoundError:
            return NOT_FOUND
        except CrunGenerationFailedError:
            return "failed"
        self._job_data[job_id] = data
        return protocol.job_status(data)

    def is_job_active(self, status: str) -> bool:
        """Pending, running, or an undocumented status (Crun may add some): keep waiting."""
        if status.startswith(LOCAL_STATUS_PREFIX):
            return False
        return protocol.job_phase(status) in (protocol.CrunJobPhase.RUNNING, protocol.CrunJobPhase.UNKNOWN)

    def is_job_succeeded(self, status: str) -> bool:
        """Any of Crun's spellings of success."""
        return protocol.job_phase(status) is protocol.CrunJobPhase.SUCCEEDED

    def poll_until_complete(self, external_id: Any, context: Context) -> Any:
        """
        Wait for the job, then return the XCom value.

        Returning the result here (and not only from :meth:`get_job_result`) matters: the mixin
        returns this method's value when it reattaches to a running job.
        """
        job_id = str(external_id)
        self._job_id = job_id
        self._job_data[job_id] = self._wait(job_id)
        return self.get_job_result(job_id, context)

    def get_job_result(self, external_id: Any, context: Context) -> Any:
        """The XCom value of the finished job, built once per job."""
        job_id = str(external_id)
        if job_id not in self._results:
            data = self._job_data.get(job_id) or self._fetch(job_id)
            self._results[job_id] = self._finish(context, job_id, data, self._resume_state(context, job_id))
        return self._results[job_id]

    # ----------------------------------------------------------------------------------------
    # Deferrable path

    def _run_deferrable(self, context: Context, store: Any) -> Any:
        job_id, status = self._reattach(context, store)
        if job_id is None:
            job_id = self._submit_and_remember(context, store)
            status = self._status_before_deferring(context, job_id)
        if status is not None and self.is_job_succeeded(status):
            return self.get_job_result(job_id, context)
        if status is None or self.is_job_active(status):
            self.log.info(
                "Deferring until Crun %s %s finishes (timeout %g s).", self.job_label, job_id, self.timeout
            )
            # No defer(timeout=...): it would fail the task without calling execute_complete. The
            # trigger's own deadline turns a timeout into an event instead.
            self.defer(
                trigger=self._trigger(job_id, self._resume_state(context, job_id)),
                method_name="execute_complete",
            )
        raise self._unusable(job_id, status)

    def _status_before_deferring(self, context: Context, job_id: str) -> str | None:
        """One status read, so a job that already finished never waits for a triggerer round trip."""
        try:
            status = self.get_job_status(job_id, context)
        except CrunError as error:
            if not protocol.is_retryable(error, creates_billable=False):
                raise
            self.log.warning(
                "Could not read Crun %s %s (%s); the trigger will.", self.job_label, job_id, error
            )
            return None
        self.log.info("Crun %s %s: status %r.", self.job_label, job_id, status)
        return status

    def _unusable(self, job_id: str, status: str) -> CrunError:
        if status == NOT_FOUND:
            return CrunError(
                f"Crun answered 404 for {self.job_label} {job_id}, which this task just created."
            )
        detail = protocol.failure_detail(self._job_data.get(job_id))
        return CrunJobFailedError(f"Crun {self.job_label} {job_id} failed: {detail}", job_id=job_id)
