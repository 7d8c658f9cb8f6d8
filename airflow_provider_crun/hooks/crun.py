"""
Hook for the Crun API: sync calls over ``requests``, single-attempt async reads for triggers.

.. seealso:: :ref:`howto/connection:crun` for the connection, and :ref:`durability` for what
    is retried and what is never sent twice.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import requests
from airflow.providers.common.compat.connection import get_async_connection, get_async_extra_dejson
from airflow.providers.common.compat.sdk import BaseHook

from airflow_provider_crun.exceptions import CrunConfigError, airflow_error
from airflow_provider_crun.hooks import _connection_check, _connection_form, _sync_transport
from airflow_provider_crun.hooks._async_reads import AsyncReadsMixin
from airflow_provider_crun.hooks._clock import SYSTEM_CLOCK, Clock
from airflow_provider_crun.hooks._session_pool import SessionLease
from airflow_provider_crun.hooks._settings_cache import shared_settings
from airflow_provider_crun.protocol import calls, envelope, errors, jobs, retry, watch
from airflow_provider_crun.protocol.settings import CrunConnectionSettings, connection_settings, mask_secret


class CrunHook(AsyncReadsMixin, BaseHook):
    """
    Talk to the Crun API with the API key of a ``crun`` connection.

    The connection's password is the API key; its host is the base URL (default
    ``https://api.crun.ai``, with or without ``/api/v1``). Extras: ``timeout`` (seconds per
    request), ``max_retries``, ``proxy``, ``ca_bundle`` and ``min_balance``. Creation calls are
    never re-sent once they may have reached Crun, because Crun bills every job it creates.

    .. seealso:: :ref:`howto/connection:crun`

    :param crun_conn_id: The ``crun`` connection to use.
    :param clock: Where waits read the time and sleep; tests pass their own.
    """

    conn_name_attr = "crun_conn_id"
    default_conn_name = "crun_default"
    conn_type = "crun"
    hook_name = "Crun"
    # Airflow 3.1 reads only these; 3.2+ reads conn-fields from the provider info and skips them.
    get_connection_form_widgets = staticmethod(_connection_form.connection_form_widgets)
    get_ui_field_behaviour = staticmethod(_connection_form.ui_field_behaviour)

    def __init__(
        self, crun_conn_id: str = default_conn_name, *, clock: Clock = SYSTEM_CLOCK, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.crun_conn_id = crun_conn_id
        self.clock = clock
        self._settings: CrunConnectionSettings | None = None
        self._http: requests.Session | None = None
        self._tls: ssl.SSLContext | None = None
        self._lease: SessionLease | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(crun_conn_id={self.crun_conn_id!r})"

    @contextmanager
    def _as_airflow_errors(self) -> Iterator[None]:
        """
        Raise every protocol error as its Airflow twin, the one place the hook maps them, with the
        API key masked in case Crun echoed it back in a message.
        """
        try:
            yield
        except errors.CrunProtocolError as error:
            raise airflow_error(type(error).from_fields(self.redact(error.fields()))) from None

    def redact(self, value: Any) -> Any:
        """``value`` (text, or JSON-like data) with this connection's API key masked, if it slipped in."""
        return mask_secret(value, self._settings.api_key if self._settings else "")

    # ----------------------------------------------------------------------------------------
    # Connection

    def _validated(self, conn: Any, extra: dict[str, Any]) -> CrunConnectionSettings:
        with self._as_airflow_errors():
            validated = connection_settings(
                conn_id=self.crun_conn_id, host=conn.host, port=conn.port, password=conn.password, extra=extra
            )
        return validated

    @property
    def settings(self) -> CrunConnectionSettings:
        """The validated connection (read once, synchronously)."""
        if self._settings is None:
            conn = self.get_connection(self.crun_conn_id)
            self._settings = self._validated(conn, conn.extra_dejson)
            if self._settings.ca_bundle and not os.path.exists(self._settings.ca_bundle):
                raise CrunConfigError(
                    f"The crun connection {self.crun_conn_id!r} names a ca_bundle that does not exist on "
                    f"this machine: {self._settings.ca_bundle!r}. Install it there, or remove the extra."
                )
        return self._settings

    async def aget_settings(self) -> CrunConnectionSettings:
        """
        The validated connection, read without blocking the event loop.

        Triggers that start together share one lookup per connection id (see
        :mod:`~airflow_provider_crun.hooks._settings_cache`).
        """
        if self._settings is None:
            self._settings = await shared_settings(self.crun_conn_id, self._alook_up)
        return self._settings

    async def _alook_up(self) -> CrunConnectionSettings:
        conn = await get_async_connection(self.crun_conn_id, hook=self)
        return self._validated(conn, await get_async_extra_dejson(conn))

    # ----------------------------------------------------------------------------------------
    # Sync calls (tenacity owns their retries)

    @property
    def http(self) -> requests.Session:
        """This hook's ``requests`` session, reused across its calls."""
        if self._http is None:
            self._http = requests.Session()
            # The transport passes proxies explicitly (one rule for both transports); trust_env would
            # also send a ~/.netrc entry to Crun as Basic auth.
            self._http.trust_env = False
        return self._http

    def _call(
        self,
        request: calls.CrunRequest,
        watch: _sync_transport.SendWatch | None = None,
        deadline: float | None = None,
    ) -> dict[str, Any] | None:
        settings = self.settings
        return _sync_transport.call(
            self.http, settings, request, clock=self.clock, log=self.log, watch=watch, deadline=deadline
        )

    def submit(self, request: calls.CrunRequest, watch: _sync_transport.SendWatch | None = None) -> str:
        """
        Send a creation call (it spends credits) and return the new job's id.

        :param watch: Told when each attempt goes on the wire and when a retry waits.

        :raises CrunCreationUnknownError: it failed after it may have reached Crun. Crun may have
            created the job, so the call is not sent again, and the error stops Airflow retries.
        """
        assert request.creates_billable
        assert request.id_field
        with self._as_airflow_errors():
            try:
                # An answer without a usable id still means Crun created (and billed) the job.
                return envelope.require_id(self._call(request, watch), request.id_field, request.name)
            except errors.CrunProtocolError as error:
                if not retry.may_have_created(error):
                    raise
                raise errors.CreationUnknownError(
                    f"Crun {request.name} failed after the request may have reached Crun ({error}). Crun "
                    "may have created and billed the job, and a retry could pay for a second one, so "
                    "this task is not retried. Check your Crun account, then clear the task to try again."
                ) from None

    def create_face_detection(self, image_url: str) -> str:
        """
        Submit a face detection (billed).

        :param image_url: The image; the swap must later use this same URL.
        :returns: The ``detect_task_id``.
        """
        return self.submit(calls.detect_faces_request(image_url))

    def create_task(self, model: str, input: dict[str, Any], callback_url: str | None = None) -> str:
        """
        Create a task of any Crun model (``CreateTask``, billed).

        :param model: The Crun model, e.g. ``image-face-swap-multi``.
        :param input: The model's ``input`` object.
        :param callback_url: URL Crun POSTs the outcome to; left out of the body when ``None``.
        :returns: The Crun ``task_id``.
        """
        return self.submit(calls.create_task_request(model, input, callback_url))

    def get_job(self, kind: jobs.JobKind, job_id: str) -> dict[str, Any]:
        """Read a task or detection once (with retries); returns the API's ``data`` unchanged."""
        with self._as_airflow_errors():
            return self._call(kind.status_request(job_id)) or {}

    def get_face_detection(self, detect_task_id: str) -> dict[str, Any]:
        """Read a face detection; returns the API's ``data`` unchanged."""
        return self.get_job(jobs.DETECTION, detect_task_id)

    def get_task(self, task_id: str) -> dict[str, Any]:
        """Read any task (``TaskInfo``); returns the API's ``data`` unchanged."""
        return self.get_job(jobs.TASK, task_id)

    def get_balance(self) -> float:
        """The account's credit balance (a free call)."""
        request = calls.balance_request()
        with self._as_airflow_errors():
            return envelope.require_number(self._call(request), "balance", request.name)

    def test_connection(self) -> tuple[bool, str]:
        """One free balance call (at most 5 s, no retry); one line names the cause. Never raises."""
        try:
            conn = self.get_connection(self.crun_conn_id)
        except Exception as error:
            return False, str(error)
        return _connection_check.check_connection(conn, self.http)

    def wait_for_job(
        self,
        kind: jobs.JobKind,
        job_id: str,
        *,
        poll_interval: float,
        deadline: float,
        limit: str = "timeout",
    ) -> dict[str, Any]:
        """
        Poll a job until it finishes, blocking the calling thread.

        :param deadline: Epoch seconds at which the wait gives up.
        :param limit: What set the deadline, for the timeout message.
        :returns: The finished job's summary (see :func:`~airflow_provider_crun.protocol.jobs.read_task`).
        :raises CrunJobFailedError: the job failed.
        :raises CrunTimeoutError: the deadline passed; Crun keeps running the job.
        """
        job_watch = watch.JobWatch(kind, job_id)
        with self._as_airflow_errors():
            while True:
                count = _sync_transport.AttemptCount()
                try:
                    data = self._call(kind.status_request(job_id), count, deadline)
                except errors.CrunProtocolError as error:
                    failure = job_watch.read_error(error)
                    # As the trigger decides: retries used up end the wait with the error itself;
                    # retries the deadline cut short end it as a timeout naming that error.
                    cut_short = count.attempts <= self.settings.max_retries and self.clock.time() >= deadline
                    if cut_short and retry.is_retryable(failure, creates_billable=False):
                        raise job_watch.timed_out(deadline, limit, failure) from None
                    raise failure from None
                seen = job_watch.observe(data, now=self.clock.time())
                if seen.change:
                    self.log.info(seen.change)
                if seen.warning:
                    self.log.warning(seen.warning)
                if seen.done:
                    return job_watch.outcome(seen)
                remaining = deadline - self.clock.time()
                if remaining <= 0:
                    raise job_watch.timed_out(deadline, limit, None)
                self.clock.sleep(min(poll_interval, remaining))

    def wait_for_task(
        self, crun_task_id: str, *, poll_interval: float = 10.0, timeout: float = 3 * 3600.0
    ) -> dict[str, Any]:
        """Poll a task until it finishes; see :meth:`wait_for_job`."""
        deadline = self.clock.time() + timeout
        return self.wait_for_job(jobs.TASK, crun_task_id, poll_interval=poll_interval, deadline=deadline)

    def wait_for_face_detection(
        self, detect_task_id: str, *, poll_interval: float = 10.0, timeout: float = 1800.0
    ) -> dict[str, Any]:
        """Poll a face detection until it finishes; see :meth:`wait_for_job`."""
        deadline = self.clock.time() + timeout
        return self.wait_for_job(
            jobs.DETECTION, detect_task_id, poll_interval=poll_interval, deadline=deadline
        )
