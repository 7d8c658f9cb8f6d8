"""Hook for the Crun API: sync calls over ``requests``, async calls for triggers over ``aiohttp``."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import requests
import tenacity
from airflow.providers.common.compat.connection import get_async_connection, get_async_extra_dejson
from airflow.providers.common.compat.sdk import BaseHook
from urllib3.exceptions import NewConnectionError

from airflow_provider_crun import protocol
from airflow_provider_crun.events import CrunTimeoutError
from airflow_provider_crun.exceptions import CrunGenerationFailedError, CrunJobFailedError, CrunTransportError
from airflow_provider_crun.hooks._retry import retry_kwargs
from airflow_provider_crun.hooks._session_pool import leased_session


def _never_reached_server(error: requests.ConnectionError) -> bool:
    """Whether a ``requests`` connection error happened before the request was written."""
    if isinstance(error, (requests.exceptions.ConnectTimeout, requests.exceptions.SSLError)):
        return True
    reason = getattr(error.args[0], "reason", None) if error.args else None
    return isinstance(reason, NewConnectionError)


def _transport_error(
    request: protocol.CrunRequest, error: BaseException, *, request_sent: bool
) -> CrunTransportError:
    return CrunTransportError(
        f"Crun {request.name}: {type(error).__name__}: {error}", request_sent=request_sent
    )


class CrunHook(BaseHook):
    """
    Talk to the Crun API with the API key of a ``crun`` connection.

    The connection's password is the API key; its host is the base URL (default
    ``https://api.crun.ai``, with or without ``/api/v1``). Extras: ``timeout`` (seconds per
    request) and ``max_retries``. Creation calls are never re-sent once they may have reached
    Crun, because Crun bills every task it creates.

    .. seealso:: ``../shared/crun-api.md`` and the README's "Connection" section.

    :param crun_conn_id: The ``crun`` connection to use.
    """

    conn_name_attr = "crun_conn_id"
    default_conn_name = "crun_default"
    conn_type = "crun"
    hook_name = "Crun"

    # Indirections so tests can record the retry waits instead of sleeping through them.
    _sleep: Callable[[float], None] = staticmethod(time.sleep)
    _async_sleep: Callable[[float], Awaitable[None]] = staticmethod(asyncio.sleep)

    def __init__(self, crun_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.crun_conn_id = crun_conn_id
        self._settings: protocol.CrunConnectionSettings | None = None
        self._http: requests.Session | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(crun_conn_id={self.crun_conn_id!r})"

    # ----------------------------------------------------------------------------------------
    # Connection

    @property
    def settings(self) -> protocol.CrunConnectionSettings:
        """The validated connection settings (read once, synchronously)."""
        if self._settings is None:
            conn = self.get_connection(self.crun_conn_id)
            self._settings = protocol.connection_settings(
                conn_id=self.crun_conn_id,
                host=conn.host,
                port=conn.port,
                password=conn.password,
                extra=conn.extra_dejson,
            )
        return self._settings

    async def aget_settings(self) -> protocol.CrunConnectionSettings:
        """The validated connection settings, read without blocking the event loop."""
        if self._settings is None:
            conn = await get_async_connection(self.crun_conn_id, hook=self)
            extra = await get_async_extra_dejson(conn)
            self._settings = protocol.connection_settings(
                conn_id=self.crun_conn_id, host=conn.host, port=conn.port, password=conn.password, extra=extra
            )
        return self._settings

    # ----------------------------------------------------------------------------------------
    # Sync transport

    @property
    def http(self) -> requests.Session:
        """This hook's ``requests`` session (one per hook, for connection reuse)."""
        if self._http is None:
            self._http = requests.Session()
        return self._http

    def _send_once(self, request: protocol.CrunRequest) -> Any:
        settings = self.settings
        try:
            response = self.http.request(
                request.method,
                settings.base_url + request.path,
                params=request.params,
                json=request.body,
                headers=protocol.request_headers(settings.api_key),
                timeout=settings.timeout,
                allow_redirects=False,
            )
        except requests.ConnectionError as error:
            raise CrunTransportError(
                f"Crun {request.name}: {type(error).__name__}: {error}",
                request_sent=not _never_reached_server(error),
            ) from None
        except requests.RequestException as error:
            raise CrunTransportError(
                f"Crun {request.name}: {type(error).__name__}: {error}", request_sent=True
            ) from None
        return protocol.parse_response(response.status_code, response.content, response.headers)

    def _call(self, request: protocol.CrunRequest) -> Any:
        retrying = tenacity.Retrying(
            sleep=type(self)._sleep,
            **retry_kwargs(request, max_retries=self.settings.max_retries, log=self.log),
        )
        return retrying(self._send_once, request)

    def create_face_detection(self, image_url: str) -> str:
        """
        Submit a face detection task.

        :param image_url: The image to detect faces in; the swap must later use the same URL.
        :returns: The ``detect_task_id``.
        """
        request = protocol.detect_faces_request(image_url)
        return str(protocol.require_field(self._call(request), "detect_task_id", request))

    def get_face_detection(self, detect_task_id: str) -> dict[str, Any]:
        """
        Read a face detection task.

        :param detect_task_id: The id from :meth:`create_face_detection`.
        :returns: The API's ``data`` object, unchanged.
        """
        return self._call(protocol.detection_result_request(detect_task_id))

    def create_task(self, model: str, input: dict[str, Any], callback_url: str | None = None) -> str:
        """
        Create a task of any Crun model (``CreateTask``); this spends credits.

        :param model: The Crun model, e.g. ``image-face-swap-multi``.
        :param input: The model's ``input`` object.
        :param callback_url: URL Crun POSTs the outcome to; omitted from the body when ``None``.
        :returns: The Crun ``task_id``.
        """
        request = protocol.create_task_request(model, input, callback_url)
        return str(protocol.require_field(self._call(request), "task_id", request))

    def get_task(self, task_id: str) -> dict[str, Any]:
        """
        Read any task (``TaskInfo``).

        :param task_id: The Crun task id.
        :returns: The API's ``data`` object, unchanged.
        """
        return self._call(protocol.task_info_request(task_id))

    def get_balance(self) -> float:
        """Return the account's credit balance."""
        request = protocol.balance_request()
        return float(protocol.require_field(self._call(request), "balance", request))

    def test_connection(self) -> tuple[bool, str]:
        """Check the key with the free balance call; never raises."""
        try:
            balance = self.get_balance()
        except Exception as error:
            return False, str(error)
        return True, f"Connected to Crun at {self.settings.base_url}; balance: {balance:g} credits."

    def download_media(self, url: str, destination_dir: str | os.PathLike[str]) -> str:
        """
        Download a result file (one of a task's ``media_urls``) into a local folder.

        Result files live on a CDN, not on the API host, so the API key is NOT sent, which is
        also why redirects may be followed here.

        :param url: An ``http(s)`` URL from ``media_urls``.
        :param destination_dir: Folder to write into; created if missing.
        :returns: The path of the written file, named after the URL's last path segment.
        :raises CrunInputError: for a URL that is not http(s).
        """
        target = protocol.media_file_name(url)
        folder = Path(destination_dir)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / target
        partial = path.with_name(path.name + ".part")
        with self.http.get(url, stream=True, timeout=self.settings.timeout) as response:
            response.raise_for_status()
            written = 0
            with partial.open("wb") as out:
                for chunk in response.iter_content(chunk_size=1 << 16):
                    written += len(chunk)
                    if written > protocol.MAX_MEDIA_BYTES:
                        raise CrunTransportError(
                            f"{url} is larger than {protocol.MAX_MEDIA_BYTES} bytes", request_sent=True
                        )
                    out.write(chunk)
        partial.replace(path)
        self.log.info("Downloaded %s (%d bytes) to %s", url, written, path)
        return str(path)

    # ----------------------------------------------------------------------------------------
    # Async transport (triggers)

    @asynccontextmanager
    async def async_session(self) -> AsyncIterator[None]:
        """
        Keep the process-wide shared ``aiohttp`` session open while inside.

        A trigger wraps its poll loop in this, so its polls reuse pooled keep-alive connections
        and the session closes once no trigger in the event loop needs it.
        """
        settings = await self.aget_settings()
        async with leased_session(settings.base_url):
            yield

    async def _asend_once(
        self,
        session: aiohttp.ClientSession,
        settings: protocol.CrunConnectionSettings,
        request: protocol.CrunRequest,
    ) -> Any:
        try:
            async with session.request(
                request.method,
                settings.base_url + request.path,
                params=dict(request.params) if request.params else None,
                json=request.body,
                headers=protocol.request_headers(settings.api_key),
                timeout=aiohttp.ClientTimeout(total=settings.timeout),
                allow_redirects=False,
            ) as response:
                body = await response.read()
                return protocol.parse_response(response.status, body, response.headers)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as error:
            raise _transport_error(request, error, request_sent=False) from None
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            raise _transport_error(request, error, request_sent=True) from None

    async def _acall(self, request: protocol.CrunRequest) -> Any:
        settings = await self.aget_settings()
        async with leased_session(settings.base_url) as session:
            # Fast path: almost every poll succeeds at once. A tenacity AsyncRetrying per call is a
            # ~30-object reference cycle plus ~40 us of CPU; with a thousand triggers that cyclic
            # garbage drives full GCs of the triggerer's whole heap (100+ ms loop stalls).
            try:
                return await self._asend_once(session, settings, request)
            except Exception as error:
                if settings.max_retries < 1 or not protocol.is_retryable(
                    error, creates_billable=request.creates_billable
                ):
                    raise
                first_failure: list[BaseException] = [error]

            async def attempt() -> Any:
                # Tenacity replays the first failure as its attempt 1, so the waits, the
                # warnings and the number of requests sent are exactly the slow path's.
                if first_failure:
                    raise first_failure.pop()
                return await self._asend_once(session, settings, request)

            retrying = tenacity.AsyncRetrying(
                sleep=type(self)._async_sleep,
                **retry_kwargs(request, max_retries=settings.max_retries, log=self.log),
            )
            return await retrying(attempt)

    async def aget_face_detection(self, detect_task_id: str) -> dict[str, Any]:
        """Async twin of :meth:`get_face_detection`."""
        return await self._acall(protocol.detection_result_request(detect_task_id))

    async def aget_task(self, task_id: str) -> dict[str, Any]:
        """Async twin of :meth:`get_task`."""
        return await self._acall(protocol.task_info_request(task_id))

    # ----------------------------------------------------------------------------------------
    # Blocking waits (operators in non-deferrable mode)

    # Indirection so tests can fast-forward the wait deadline instead of sleeping through it.
    _clock: Callable[[], float] = staticmethod(time.monotonic)

    def wait_for_task(
        self, crun_task_id: str, *, poll_interval: float = 10.0, timeout: float = 3 * 3600.0
    ) -> dict[str, Any]:
        """
        Poll a task with :meth:`get_task` until it finishes, blocking the calling thread.

        :param crun_task_id: The Crun task id.
        :param poll_interval: Seconds between polls.
        :param timeout: Seconds to wait in total.
        :returns: The finished task's ``data`` (``result.media_urls`` holds the outputs).
        :raises CrunJobFailedError: the task failed.
        :raises CrunTimeoutError: it did not finish in ``timeout`` seconds; Crun keeps running it.
        """
        return self._wait_until_finished("task", crun_task_id, self.get_task, poll_interval, timeout)

    def wait_for_face_detection(
        self, detect_task_id: str, *, poll_interval: float = 10.0, timeout: float = 3 * 3600.0
    ) -> dict[str, Any]:
        """
        Poll a face detection with :meth:`get_face_detection` until it finishes.

        :param detect_task_id: The detection task id.
        :param poll_interval: Seconds between polls.
        :param timeout: Seconds to wait in total.
        :returns: The finished detection's ``data`` (``result.id`` is the ``detect_id``).
        :raises CrunJobFailedError: the detection failed.
        :raises CrunTimeoutError: it did not finish in ``timeout`` seconds.
        """
        return self._wait_until_finished(
            "face detection", detect_task_id, self.get_face_detection, poll_interval, timeout
        )

    def _wait_until_finished(
        self,
        label: str,
        job_id: str,
        fetch: Callable[[str], dict[str, Any]],
        poll_interval: float,
        timeout: float,
    ) -> dict[str, Any]:
        deadline = type(self)._clock() + timeout
        watch = protocol.JobWatch(label, job_id)
        while True:
            try:
                data = fetch(job_id)
            except CrunGenerationFailedError as error:
                raise CrunJobFailedError(watch.generation_failed_message(error), job_id=job_id) from None
            seen = watch.observe(data)
            if seen.change:
                self.log.info(seen.change)
            if seen.warning:
                self.log.warning(seen.warning)
            if seen.phase is protocol.CrunJobPhase.SUCCEEDED:
                return data
            if seen.phase is protocol.CrunJobPhase.FAILED:
                raise CrunJobFailedError(watch.failure_message(data), job_id=job_id)
            remaining = deadline - type(self)._clock()
            if remaining <= 0:
                raise CrunTimeoutError(
                    f"Crun {label} {job_id} did not finish within {timeout:g} s (last status "
                    f"{seen.status or '(empty)'!r}). Crun keeps running it; look it up by its id {job_id}."
                )
            type(self)._sleep(min(poll_interval, remaining))
