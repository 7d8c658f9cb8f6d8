"""One connection lookup per event loop, connection id and minute, shared by every trigger."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from airflow_provider_crun.hooks import _settings_cache, crun
from airflow_provider_crun.hooks.crun import CrunHook
from airflow_provider_crun.protocol.settings import CrunConnectionSettings
from tests.support.connections import crun_connection_json

BASE = "https://api.crun.example"


class CountingLookup:
    """``get_async_connection`` as the hook calls it, counting calls; it can fail or be slow."""

    def __init__(self, real: Any, *, failures: int = 0, delay: float = 0.0) -> None:
        self.real, self.failures, self.delay = real, failures, delay
        self.calls = 0

    async def __call__(self, conn_id: str, **kwargs: Any) -> Any:
        self.calls += 1
        await asyncio.sleep(self.delay)
        if self.failures:
            self.failures -= 1
            raise RuntimeError("the triggerer's supervisor did not answer")
        return await self.real(conn_id, **kwargs)


@pytest.fixture
def lookup(monkeypatch: pytest.MonkeyPatch) -> CountingLookup:
    monkeypatch.setenv("AIRFLOW_CONN_CRUN_DEFAULT", crun_connection_json(host=BASE))
    monkeypatch.setenv("AIRFLOW_CONN_CRUN_OTHER", crun_connection_json(host="https://eu.crun.example"))
    counting = CountingLookup(crun.get_async_connection, delay=0.01)
    monkeypatch.setattr(crun, "get_async_connection", counting)
    return counting


async def test_triggers_starting_together_share_one_lookup(lookup: CountingLookup) -> None:
    settings = await asyncio.gather(*(CrunHook().aget_settings() for _ in range(200)))

    assert lookup.calls == 1
    assert {item.base_url for item in settings} == {f"{BASE}/api/v1"}


async def test_each_connection_id_has_its_own_lookup(lookup: CountingLookup) -> None:
    default, other = await asyncio.gather(
        CrunHook().aget_settings(), CrunHook(crun_conn_id="crun_other").aget_settings()
    )

    assert lookup.calls == 2
    assert (default.base_url, other.base_url) == (f"{BASE}/api/v1", "https://eu.crun.example/api/v1")


async def test_a_lookup_older_than_the_ttl_is_made_again(
    lookup: CountingLookup, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    real = _settings_cache.shared_settings

    async def on_fake_time(conn_id: str, look_up: Any) -> CrunConnectionSettings:
        return await real(conn_id, look_up, monotonic=lambda: now[0])

    monkeypatch.setattr(crun, "shared_settings", on_fake_time)
    await CrunHook().aget_settings()
    now[0] += _settings_cache.TTL_SECONDS - 1
    await CrunHook().aget_settings()
    assert lookup.calls == 1
    now[0] += 2
    await CrunHook().aget_settings()
    assert lookup.calls == 2


async def test_a_failed_lookup_reaches_its_waiters_and_is_not_kept(lookup: CountingLookup) -> None:
    lookup.failures = 1

    outcomes = await asyncio.gather(*(CrunHook().aget_settings() for _ in range(3)), return_exceptions=True)
    retried = await CrunHook().aget_settings()

    assert [type(outcome) for outcome in outcomes] == [RuntimeError] * 3
    assert retried.base_url == f"{BASE}/api/v1"
    assert lookup.calls == 2


async def test_a_cancelled_waiter_does_not_cancel_the_shared_lookup(lookup: CountingLookup) -> None:
    first = asyncio.ensure_future(CrunHook().aget_settings())
    await asyncio.sleep(0)
    second = asyncio.ensure_future(CrunHook().aget_settings())
    first.cancel()

    settings = await second

    assert settings.base_url == f"{BASE}/api/v1"
    assert lookup.calls == 1


def test_each_event_loop_looks_up_for_itself(lookup: CountingLookup) -> None:
    asyncio.run(CrunHook().aget_settings())
    asyncio.run(CrunHook().aget_settings())

    assert lookup.calls == 2
