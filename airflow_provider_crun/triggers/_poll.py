"""
The poll loop every Crun trigger runs: single-attempt reads, with the loop owning the retries.

Hundreds of these share one triggerer event loop, so nothing here blocks: reads go through the
hook's async transport and the pooled ``aiohttp`` session, and sleeps are ``asyncio`` sleeps.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from airflow_provider_crun.hooks._async_transport import TOTAL_TIMEOUT_FACTOR
from airflow_provider_crun.hooks._clock import Clock
from airflow_provider_crun.hooks.crun import CrunHook
from airflow_provider_crun.protocol import errors, retry, watch
from airflow_provider_crun.protocol.jobs import JobKind


async def watch_job(
    hook: CrunHook,
    kind: JobKind,
    job_id: str,
    *,
    poll_interval: float,
    deadline: float,
    limit: str,
    clock: Clock,
    log: logging.Logger | Any,
) -> dict[str, Any]:
    """
    Poll one job until it finishes or ``deadline`` passes.

    The first poll waits a random part of ``poll_interval``, so a thousand triggers restored
    together do not poll together. A failed read (transport error, 429, 455, 5xx, a body that is
    not an envelope) is retried with backoff (``Retry-After`` first) until ``max_retries`` reads
    in a row have failed; a permanent error ends the wait at once, and so does an envelope whose
    job summary Crun does not document, as in blocking mode. No read runs past the deadline by
    more than a short grace.

    :returns: The finished job's summary.
    :raises errors.CrunProtocolError: why the wait ended without a result.
    """
    conn = await hook.aget_settings()
    job_watch = watch.JobWatch(kind, job_id)
    log.info(
        "Polling Crun %s %s every %g s until %s.", kind.label, job_id, poll_interval, watch.iso(deadline)
    )
    await clock.asleep(clock.uniform(0, max(0.0, min(poll_interval, deadline - clock.time()))))
    failures = 0
    last_error: errors.CrunProtocolError | None = None
    async with hook.async_session():
        while True:
            remaining = deadline - clock.time()
            try:
                if remaining > conn.timeout * TOTAL_TIMEOUT_FACTOR:
                    # The request's own timeout ends it well before the deadline.
                    data = await hook.aget_job(kind, job_id)
                else:
                    async with asyncio.timeout(max(remaining, watch.LAST_POLL_GRACE_SECONDS)):
                        data = await hook.aget_job(kind, job_id)
            except TimeoutError:
                raise job_watch.timed_out(deadline, limit, last_error) from None
            except errors.CrunProtocolError as error:
                last_error = job_watch.read_error(error)
                failures += 1
                if not retry.is_retryable(last_error, creates_billable=False) or failures > conn.max_retries:
                    raise last_error from None
                wait = retry.backoff_seconds(failures, last_error, rng=clock)
                log.warning(
                    "Crun %s %s: poll failed (%s), %d of %d allowed in a row; polling again in %.1f s.",
                    kind.label,
                    job_id,
                    last_error,
                    failures,
                    conn.max_retries,
                    wait,
                )
            else:
                failures, last_error, wait = 0, None, poll_interval
                seen = job_watch.observe(data, now=clock.time())
                if seen.change:
                    log.info(seen.change)
                if seen.warning:
                    log.warning(seen.warning)
                if seen.done:
                    return job_watch.outcome(seen)
                # A sleeping trigger keeps no answer alive for the collector to scan.
                del data, seen
            remaining = deadline - clock.time()
            if remaining <= 0:
                raise job_watch.timed_out(deadline, limit, last_error)
            await clock.asleep(min(wait, remaining))
