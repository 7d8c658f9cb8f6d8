"""
The four trigger variants that ``trigger_scale.py`` compares; only the HTTP client differs.

``ours`` is the provider's :class:`~airflow_provider_crun.triggers.crun.CrunTaskTrigger`. The
three peers are what a user would otherwise write, each a small ``BaseTrigger`` with the same
loop shape as ours: jitter the first poll within the interval, log the start and every status
change, sleep ``poll_interval`` between polls, stop at ``success`` or ``failed``.

* ``http``: ``apache-airflow-providers-http``'s ``HttpAsyncHook`` the way its own ``HttpTrigger``
  uses it: a new ``aiohttp.ClientSession`` per call, ``hook.run(session=..., endpoint=...,
  data=..., headers=...)``. (``hook.run()`` without a session returns a response whose body can
  no longer be read: the session is closed by then, and ``.json()`` raises
  ``RuntimeError: Connection closed.``)
* ``to_thread``: ``requests.get`` in ``asyncio.to_thread``, a new request (and connection) per poll.
* ``httpx``: one ``httpx.AsyncClient`` per process, shared by every trigger, default limits.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import httpx
import requests
from airflow.providers.http.hooks.http import HttpAsyncHook
from airflow.triggers.base import BaseTrigger, TriggerEvent

VARIANTS = ("ours", "http", "to_thread", "httpx")
# Not run by default: the floor, a bare shared aiohttp session with no hook, retries or settings.
EXTRA_VARIANTS = ("aiohttp_floor",)
CRUN_CONN_ID = "crun_default"
HTTP_CONN_ID = "crun_http"
TASK_INFO_PATH = "/api/v1/client/job/TaskInfo"
API_KEY_HEADER = "x-api-key"
REQUEST_TIMEOUT = 30.0
# Environment variables that carry the emulator address to the peers (ours reads its connection).
ENV_BASE_URL = "CRUN_BENCH_BASE_URL"
ENV_API_KEY = "CRUN_BENCH_API_KEY"


class PollErrors:
    """How many peer polls raised, per process (ours retries inside the hook and its loop)."""

    count = 0


class _PeerPollingTrigger(BaseTrigger):
    """
    The poll loop every peer shares; subclasses implement :meth:`fetch` (one ``TaskInfo`` call).

    :param crun_task_id: The Crun task id.
    :param poll_interval: Seconds between polls.
    :param timeout: Seconds after which the trigger gives up with a ``timeout`` event, like ours.
    """

    def __init__(self, crun_task_id: str, poll_interval: float, timeout: float) -> None:
        super().__init__()
        self.crun_task_id = crun_task_id
        self.poll_interval = poll_interval
        self.timeout = timeout

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Class path and kwargs, as every trigger must provide."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"crun_task_id": self.crun_task_id, "poll_interval": self.poll_interval, "timeout": self.timeout},
        )

    async def fetch(self) -> dict[str, Any]:
        """Return the task's ``TaskInfo`` ``data`` object."""
        raise NotImplementedError

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll until the task succeeds or fails; yield one event."""
        self.log.info("Polling Crun task %s every %g s.", self.crun_task_id, self.poll_interval)
        deadline = time.monotonic() + self.timeout
        await asyncio.sleep(random.uniform(0, self.poll_interval))
        last_status = None
        while True:
            if time.monotonic() > deadline:
                yield TriggerEvent({"status": "timeout", "crun_task_id": self.crun_task_id})
                return
            try:
                data = await self.fetch()
            except Exception as error:
                # Like ours, a failed poll is logged and retried; the harness reports the count.
                PollErrors.count += 1
                self.log.warning("Crun task %s: poll failed (%r); retrying.", self.crun_task_id, error)
                await asyncio.sleep(self.poll_interval)
                continue
            status = str(data.get("status", "")).lower()
            if status != last_status:
                self.log.info("Crun task %s: %s -> %s", self.crun_task_id, last_status, status)
                last_status = status
            if status in ("success", "failed"):
                yield TriggerEvent({"status": status, "crun_task_id": self.crun_task_id, "data": data})
                return
            await asyncio.sleep(self.poll_interval)


class HttpProviderTrigger(_PeerPollingTrigger):
    """Poll with the http provider's ``HttpAsyncHook``, one ``aiohttp`` session per call."""

    def __init__(self, crun_task_id: str, poll_interval: float, timeout: float) -> None:
        super().__init__(crun_task_id, poll_interval, timeout)
        self._hook: HttpAsyncHook | None = None

    async def fetch(self) -> dict[str, Any]:
        """One ``TaskInfo`` call through ``HttpAsyncHook.run``."""
        if self._hook is None:
            self._hook = HttpAsyncHook(method="GET", http_conn_id=HTTP_CONN_ID)
        async with aiohttp.ClientSession() as session:
            response = await self._hook.run(
                session=session,
                endpoint=TASK_INFO_PATH,
                data={"task_id": self.crun_task_id},
                headers={API_KEY_HEADER: os.environ[ENV_API_KEY]},
            )
            body = await response.json()
        return dict(body["data"])


class ToThreadRequestsTrigger(_PeerPollingTrigger):
    """Poll with a plain ``requests.get`` per call, run in ``asyncio.to_thread``."""

    async def fetch(self) -> dict[str, Any]:
        """One ``TaskInfo`` call in the default thread pool."""
        response = await asyncio.to_thread(
            requests.get,
            os.environ[ENV_BASE_URL] + TASK_INFO_PATH,
            params={"task_id": self.crun_task_id},
            headers={API_KEY_HEADER: os.environ[ENV_API_KEY]},
            timeout=REQUEST_TIMEOUT,
        )
        response.raise_for_status()
        return dict(response.json()["data"])


_httpx_clients: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}


def _shared_httpx_client() -> httpx.AsyncClient:
    """The process's ``httpx.AsyncClient`` for the running loop, created on first use."""
    loop = asyncio.get_running_loop()
    client = _httpx_clients.get(loop)
    if client is None:
        client = _httpx_clients[loop] = httpx.AsyncClient(
            base_url=os.environ[ENV_BASE_URL],
            headers={API_KEY_HEADER: os.environ[ENV_API_KEY]},
            timeout=REQUEST_TIMEOUT,
        )
    return client


class SharedHttpxTrigger(_PeerPollingTrigger):
    """Poll over one ``httpx.AsyncClient`` shared by every trigger in the process."""

    async def fetch(self) -> dict[str, Any]:
        """One ``TaskInfo`` call on the shared client."""
        response = await _shared_httpx_client().get(TASK_INFO_PATH, params={"task_id": self.crun_task_id})
        response.raise_for_status()
        return dict(json.loads(response.content)["data"])


_aiohttp_sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}


def _shared_aiohttp_session() -> aiohttp.ClientSession:
    """The process's bare ``aiohttp.ClientSession`` for the running loop, created on first use."""
    loop = asyncio.get_running_loop()
    session = _aiohttp_sessions.get(loop)
    if session is None:
        session = _aiohttp_sessions[loop] = aiohttp.ClientSession(
            base_url=os.environ[ENV_BASE_URL],
            headers={API_KEY_HEADER: os.environ[ENV_API_KEY]},
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
        )
    return session


class AiohttpFloorTrigger(_PeerPollingTrigger):
    """The floor: one bare shared ``aiohttp`` session, no hook, no retries, no connection lookup."""

    async def fetch(self) -> dict[str, Any]:
        """One ``TaskInfo`` call on the shared session."""
        async with _shared_aiohttp_session().get(
            TASK_INFO_PATH, params={"task_id": self.crun_task_id}
        ) as response:
            response.raise_for_status()
            return dict(json.loads(await response.read())["data"])


async def close_shared_clients() -> None:
    """Close the shared ``httpx`` client and ``aiohttp`` session of the running loop (after measuring)."""
    loop = asyncio.get_running_loop()
    client = _httpx_clients.pop(loop, None)
    if client is not None:
        await client.aclose()
    session = _aiohttp_sessions.pop(loop, None)
    if session is not None:
        await session.close()


def trigger_factory(variant: str, poll_interval: float, timeout: float) -> Callable[[str], BaseTrigger]:
    """Return a function that builds ``variant``'s trigger for one Crun task id."""
    if variant == "ours":
        from airflow_provider_crun.triggers.crun import CrunTaskTrigger

        deadline = time.time() + timeout
        return lambda task_id: CrunTaskTrigger(
            crun_task_id=task_id, crun_conn_id=CRUN_CONN_ID, poll_interval=poll_interval, deadline=deadline
        )
    if variant not in VARIANTS + EXTRA_VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS + EXTRA_VARIANTS)}")
    peers: dict[str, type[_PeerPollingTrigger]] = {
        "http": HttpProviderTrigger,
        "to_thread": ToThreadRequestsTrigger,
        "httpx": SharedHttpxTrigger,
        "aiohttp_floor": AiohttpFloorTrigger,
    }
    peer = peers[variant]
    return lambda task_id: peer(task_id, poll_interval, timeout)
