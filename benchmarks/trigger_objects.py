"""
How many objects does a sleeping trigger keep alive for Python's garbage collector to scan?

A triggerer's full collections scan every tracked object of the process, and a collection starts
once the objects that survived into the oldest generation exceed a quarter of the heap. What a
thousand waiting triggers keep alive between polls therefore decides how often the triggerer
pauses for a full collection (see "Event-loop lag" in ``benchmarks/README.md``).

For each variant of ``trigger_scale.py`` (same triggers, same emulator), in its own process:
start N triggers polling tasks that stay pending, wait until every trigger has polled at least
once and sleeps, collect, and count the tracked objects (``gc.get_objects()``) against the same
process before the triggers, by type. The count is deterministic up to a few objects, so one run
is enough; the ratio is against the bare-aiohttp floor, measured the same way.

    .venv/bin/python benchmarks/trigger_objects.py                   # N=500, ours and the floor
    .venv/bin/python benchmarks/trigger_objects.py --variants ours,aiohttp_floor,http --top 15
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _benchlib import PYTHON, child_env, machine_info, markdown_table, write_json
from _scale_variants import EXTRA_VARIANTS, VARIANTS
from trigger_scale import API_KEY, connection_env, create_tasks

from airflow_provider_crun.testing.emulator import EmulatorProcess

HERE = Path(__file__).resolve().parent
# Polls every second; after this long every trigger has polled (jitter <= 1 s) and sleeps again.
POLL_INTERVAL = 1.0
SETTLE_SECONDS = 3.5
TARGET_RATIO = 1.5

_CHILD = """
import asyncio, collections, gc, json, sys
sys.path.insert(0, {here!r})
from _scale_variants import trigger_factory, close_shared_clients
from airflow.providers.common.compat.connection import get_async_connection

task_ids, variant = json.loads(sys.stdin.readline()), {variant!r}
factory = trigger_factory(variant, {interval}, 600.0)

def census():
    gc.collect()
    return collections.Counter(type(o).__qualname__ for o in gc.get_objects())

async def drive(trigger):
    async for event in trigger.run():
        return event

async def main():
    await get_async_connection("crun_default")  # a running triggerer has looked it up before
    triggers = [factory(task_id) for task_id in task_ids]
    before = census()
    tasks = [asyncio.create_task(drive(trigger)) for trigger in triggers]
    await asyncio.sleep({settle})
    after = census()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await close_shared_clients()
    # The trigger objects themselves were alive in both counts: add them back.
    kept = after - before
    kept[type(triggers[0]).__qualname__] += len(triggers)
    print(json.dumps(dict(kept)))

asyncio.run(main())
"""


def census(variant: str, task_ids: list[str], env: dict[str, str]) -> dict[str, int]:
    """Objects kept alive by ``len(task_ids)`` sleeping triggers of ``variant``, by type name."""
    code = _CHILD.format(here=str(HERE), variant=variant, interval=POLL_INTERVAL, settle=SETTLE_SECONDS)
    done = subprocess.run(
        [PYTHON, "-c", code],
        input=json.dumps(task_ids) + "\n",
        capture_output=True,
        text=True,
        env=child_env({**env, "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING"}),
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{variant}: exit {done.returncode}\n{done.stderr[-3000:]}")
    counts: dict[str, int] = json.loads(done.stdout.strip().splitlines()[-1])
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--triggers", type=int, default=500)
    parser.add_argument("--variants", default="ours,aiohttp_floor")
    parser.add_argument("--top", type=int, default=12, help="types listed per variant")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(variants) - set(VARIANTS + EXTRA_VARIANTS)
    if unknown:
        parser.error(f"unknown variants: {', '.join(sorted(unknown))}")

    per_trigger: dict[str, dict[str, float]] = {}
    # Tasks that stay pending for the whole census: no trigger finishes while it is counted.
    with EmulatorProcess(
        args=["--task-delays", "300,300", "--credits", "1000000000"], api_key=API_KEY
    ) as emulator:
        env = connection_env(emulator.url)
        os.environ.update(env)
        task_ids = create_tasks(args.triggers)
        for variant in variants:
            counts = census(variant, task_ids, env)
            per_trigger[variant] = {
                name: count / args.triggers for name, count in counts.items() if count > 0
            }

    totals = {variant: sum(kinds.values()) for variant, kinds in per_trigger.items()}
    print(f"Objects kept alive per sleeping trigger, N={args.triggers}:\n")
    print(markdown_table(["variant", "tracked objects per trigger"], [(v, totals[v]) for v in variants]))
    for variant in variants:
        top = sorted(per_trigger[variant].items(), key=lambda item: -item[1])[: args.top]
        print(f"\n{variant}: " + ", ".join(f"{name} {count:.2f}" for name, count in top))
    result: dict[str, Any] = {
        "machine": machine_info(),
        "triggers": args.triggers,
        "per_trigger": per_trigger,
    }
    if "ours" in totals and "aiohttp_floor" in totals:
        result["ours_over_floor"] = totals["ours"] / totals["aiohttp_floor"]
        verdict = "met" if result["ours_over_floor"] <= TARGET_RATIO else "MISSED"
        print(
            f"\nours / aiohttp_floor: {result['ours_over_floor']:.2f} (target <= {TARGET_RATIO}: {verdict})"
        )
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
