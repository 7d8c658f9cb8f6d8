"""
The hook's async reads, for triggers: exactly one HTTP attempt each, over the pooled session.

The trigger's poll loop owns retries, ``Retry-After`` and the deadline (see
:mod:`~airflow_provider_crun.triggers._poll`).
"""

from __future__ import annotations

import asyncio
import ssl
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from airflow_provider_crun.exceptions import airflow_error
from airflow_provider_crun.hooks import _async_transport
from airflow_provider_crun.hooks._session_pool import SessionLease, hold_lease
from airflow_provider_crun.protocol import errors, jobs

if TYPE_CHECKING:
    from airflow_provider_crun.protocol.calls import CrunRequest
    from airflow_provider_crun.protocol.settings import CrunConnectionSettings


class AsyncReadsMixin:
    """:class:`~airflow_provider_crun.hooks.crun.CrunHook`'s async reads (no retries here)."""

    _settings: CrunConnectionSettings | None
    _tls: ssl.SSLContext | None
    # Inside async_session(): the lease this hook holds, found once rather than on every poll.
    _lease: SessionLease | None
    _last_status_request: tuple[jobs.JobKind, str, CrunRequest] | None = None

    if TYPE_CHECKING:

        async def aget_settings(self) -> CrunConnectionSettings: ...

        def redact(self, value: Any) -> Any: ...

    def async_session(self) -> AbstractAsyncContextManager[None]:
        """
        Keep the process-wide pooled ``aiohttp`` session open while inside.

        A trigger wraps its poll loop in this, so its polls reuse keep-alive connections and the
        session closes once no trigger in the event loop needs it.
        """
        return _HeldSession(self)

    async def aget_job(self, kind: jobs.JobKind, job_id: str) -> dict[str, Any]:
        """Read a task or detection with exactly one HTTP attempt."""
        conn_settings = self._settings or await self.aget_settings()
        try:
            if conn_settings.ca_bundle and self._tls is None:
                self._tls = await asyncio.to_thread(_async_transport.tls_context, conn_settings.ca_bundle)
            request = self._status_request(kind, job_id)
            # Inside async_session() (every trigger poll) the held lease's session is reused as it is.
            lease = self._lease
            if lease is not None and not lease.session.closed:
                data = await _async_transport.send_once(
                    lease.session, conn_settings, request, self._tls, lease.proxy_environment
                )
            else:
                async with hold_lease(conn_settings.base_url) as lease:
                    data = await _async_transport.send_once(
                        lease.session, conn_settings, request, self._tls, lease.proxy_environment
                    )
        except errors.CrunProtocolError as error:
            raise airflow_error(type(error).from_fields(self.redact(error.fields()))) from None
        return data or {}

    def _status_request(self, kind: jobs.JobKind, job_id: str) -> CrunRequest:
        # A trigger reads one job for its whole life: one request object, not one per poll.
        last = self._last_status_request
        if last is None or last[0] is not kind or last[1] != job_id:
            last = self._last_status_request = (kind, job_id, kind.status_request(job_id))
        return last[2]

    async def aget_task(self, task_id: str) -> dict[str, Any]:
        """Async twin of :meth:`~airflow_provider_crun.hooks.crun.CrunHook.get_task`, with one attempt."""
        return await self.aget_job(jobs.TASK, task_id)

    async def aget_face_detection(self, detect_task_id: str) -> dict[str, Any]:
        """Async twin of ``get_face_detection``, with one attempt."""
        return await self.aget_job(jobs.DETECTION, detect_task_id)


class _HeldSession:
    """
    What :meth:`AsyncReadsMixin.async_session` returns.

    A class, not an ``@asynccontextmanager``: a trigger holds it for its whole life, and a
    generator-based one keeps four more objects per trigger alive for the collector to scan.
    """

    __slots__ = ("_hold", "_hook", "_outer")

    def __init__(self, hook: AsyncReadsMixin) -> None:
        self._hook = hook
        self._hold: hold_lease | None = None
        self._outer: SessionLease | None = None

    async def __aenter__(self) -> None:
        conn_settings = await self._hook.aget_settings()
        self._hold = hold_lease(conn_settings.base_url)
        lease = await self._hold.__aenter__()
        self._outer, self._hook._lease = self._hook._lease, lease

    async def __aexit__(self, *exc_info: Any) -> None:
        assert self._hold is not None, "async_session() exited without being entered"
        self._hook._lease = self._outer
        await self._hold.__aexit__(*exc_info)
