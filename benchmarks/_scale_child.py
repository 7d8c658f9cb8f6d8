"""
The measured process of ``trigger_scale.py``: N triggers of one variant in one event loop.

Started by ``trigger_scale.py``, never by hand. Protocol: the child imports everything, writes
``{"ready": true}`` as one JSON line to the control file descriptor, reads the JSON list of Crun
task ids from stdin, measures, and writes one JSON line of results to the control descriptor.
Its stdout and stderr (trigger logs) go to a file the parent owns.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import os
import resource
import sys
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import IO, Any

from _benchlib import percentile, proc_status_kb, reset_peak_rss
from _scale_variants import CRUN_CONN_ID, PollErrors, close_shared_clients, trigger_factory
from airflow.providers.common.compat.connection import get_async_connection
from airflow.triggers.base import BaseTrigger

TICK_SECONDS = 0.01


@dataclass
class GcPauses:
    """Records every garbage collection as ``(generation, start, end)`` on the monotonic clock."""

    collections: list[tuple[int, float, float]] = field(default_factory=list)
    _started: float = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        """The ``gc.callbacks`` hook."""
        if phase == "start":
            self._started = time.monotonic()
        else:
            self.collections.append((info["generation"], self._started, time.monotonic()))

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)

    def full(self) -> list[tuple[float, float]]:
        """``(start, end)`` of every full (generation 2) collection."""
        return [(start, end) for generation, start, end in self.collections if generation == 2]

    def summary(self) -> dict[str, Any]:
        """Collections per generation, the longest full collection and the total pause, in ms."""
        full = [end - start for start, end in self.full()]
        return {
            "gc_collections": [sum(1 for c in self.collections if c[0] == g) for g in (0, 1, 2)],
            "gc_full_max_ms": max(full) * 1000 if full else 0.0,
            "gc_total_ms": sum(end - start for _, start, end in self.collections) * 1000,
        }


@dataclass
class LagTicker:
    """Sleeps ``TICK_SECONDS`` again and again and records each sleep's ``(start, end)``."""

    ticks: list[tuple[float, float]] = field(default_factory=list)
    running: bool = True

    async def run(self) -> None:
        """Tick until :attr:`running` is cleared (``loop.time()`` is ``time.monotonic()``)."""
        loop = asyncio.get_running_loop()
        while self.running:
            started = loop.time()
            await asyncio.sleep(TICK_SECONDS)
            self.ticks.append((started, loop.time()))

    def summary(self, full_gcs: list[tuple[float, float]]) -> dict[str, Any]:
        """
        Max and p99 oversleep (ms), the five worst as ``[seconds since start, ms]``, and the max
        over the ticks that no full garbage collection overlapped.
        """
        if not self.ticks:
            return {"lag_max_ms": 0.0, "lag_p99_ms": 0.0, "lag_worst": [], "lag_max_no_full_gc_ms": 0.0}
        origin = self.ticks[0][0]
        lags = [max(0.0, end - start - TICK_SECONDS) for start, end in self.ticks]
        worst = sorted(range(len(lags)), key=lags.__getitem__, reverse=True)[:5]
        clean = [
            lag
            for lag, (start, end) in zip(lags, self.ticks, strict=True)
            if not any(gc_start < end and start < gc_end for gc_start, gc_end in full_gcs)
        ]
        return {
            "lag_max_ms": lags[worst[0]] * 1000,
            "lag_p99_ms": percentile(lags, 0.99) * 1000,
            "lag_worst": [[round(self.ticks[i][1] - origin, 2), round(lags[i] * 1000, 1)] for i in worst],
            "lag_max_no_full_gc_ms": max(clean, default=0.0) * 1000,
        }


def _involuntary_switches() -> int:
    """Times the OS took the CPU away from this process: a measure of how busy the machine is."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw)


async def first_event(trigger: BaseTrigger) -> str:
    """Drive a trigger the way the triggerer does: run to its first event, then clean up."""
    events = trigger.run()
    try:
        event = await events.__anext__()
    finally:
        if isinstance(events, AsyncGenerator):
            await events.aclose()
        await trigger.cleanup()
    payload = event.payload
    return str(payload.get("status")) if isinstance(payload, dict) else repr(payload)


async def measure(triggers: list[BaseTrigger]) -> dict[str, Any]:
    """Run every trigger to its event; return wall, CPU, lag and event statuses of that phase."""
    ticker = LagTicker()
    ticking = asyncio.create_task(ticker.run())
    switches_started = _involuntary_switches()
    with GcPauses() as gc_pauses:
        cpu_started, wall_started = time.process_time(), time.perf_counter()
        statuses = await asyncio.gather(*(first_event(trigger) for trigger in triggers))
        wall = time.perf_counter() - wall_started
        cpu = time.process_time() - cpu_started
    involuntary_switches = _involuntary_switches() - switches_started
    peak_kb = proc_status_kb("VmHWM")
    ticker.running = False
    await ticking
    await close_shared_clients()
    counts: dict[str, int] = {}
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "peak_rss_kb": peak_kb,
        "events": counts,
        "involuntary_switches": involuntary_switches,
        "peer_poll_errors": PollErrors.count,
        **ticker.summary(gc_pauses.full()),
        **gc_pauses.summary(),
    }


def run_measured(triggers: list[BaseTrigger], profile_path: str | None) -> dict[str, Any]:
    """:func:`measure` in a fresh event loop, under cProfile when ``profile_path`` is set."""
    if not profile_path:
        return asyncio.run(measure(triggers))
    profiler = cProfile.Profile()
    result = profiler.runcall(asyncio.run, measure(triggers))
    profiler.dump_stats(profile_path)
    return result


async def warm_up() -> None:
    """
    Look a connection up once, as a running triggerer already has: the first lookup imports
    Airflow's supervisor and secrets modules (~50 ms), which no variant should be charged for.
    """
    await get_async_connection(CRUN_CONN_ID)


def _send(control: IO[str], payload: dict[str, Any]) -> None:
    control.write(json.dumps(payload) + "\n")
    control.flush()


def main() -> int:
    """Measure one variant; see the module docstring for the protocol."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", required=True)
    parser.add_argument("--poll-interval", type=float, required=True)
    parser.add_argument("--timeout", type=float, required=True)
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--profile", help="write cProfile stats of the polling phase to this file")
    parser.add_argument("--gc-freeze", action="store_true", help="gc.freeze() the heap before the triggers")
    args = parser.parse_args()
    factory = trigger_factory(args.variant, args.poll_interval, args.timeout)
    with os.fdopen(args.control_fd, "w") as control:
        _send(control, {"ready": True})
        task_ids = json.loads(sys.stdin.readline())
        asyncio.run(warm_up())
        gc.collect()
        if args.gc_freeze:
            # Models a triggerer that freezes its startup heap, as Airflow's dag processor does.
            gc.freeze()
        baseline_kb = proc_status_kb("VmRSS")
        hwm_reset = reset_peak_rss()
        triggers = [factory(task_id) for task_id in task_ids]
        result = run_measured(triggers, args.profile)
        result.update(baseline_rss_kb=baseline_kb, hwm_reset=hwm_reset, triggers=len(triggers))
        _send(control, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
