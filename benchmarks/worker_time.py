"""
How long does a Crun face swap hold a worker slot: deferrable against blocking?

The emulator runs in its own process; its tasks finish ``--task-seconds`` after creation. Each
sample is a fresh Python process (as a real task is), running ``CrunFaceSwapOperator`` with a
minimal context (no ``task_state_store``):

* deferrable: wall time of ``execute`` until it raises ``TaskDeferred``, plus ``execute_complete``
  with the trigger's success event. The trigger itself runs in between, untimed: that is the
  triggerer's time, not the worker's.
* blocking: wall time of ``execute`` until it returns.

    .venv/bin/python benchmarks/worker_time.py                   # S=10 s, 3 samples per mode
    .venv/bin/python benchmarks/worker_time.py --task-seconds 30 --repeat 1 --json worker.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _benchlib import (
    PYTHON,
    REPO_ROOT,
    bytecode_cache_env,
    child_env,
    fmt,
    machine_info,
    markdown_table,
    median,
    run_python,
    write_json,
)

from airflow_provider_crun.testing.emulator import EmulatorProcess

API_KEY = "bench-key-0123456789"
TARGET_DEFERRABLE_S = 1.0
IMAGE_URL = "https://example.com/in.png"
NEW_FACE = "https://example.com/face.png"
# What a worker imports for this task; compiled once before sampling, as pip would at install.
WARM_UP = "import airflow_provider_crun.operators.crun, airflow_provider_crun.triggers.crun, airflow.sdk"


class _TaskInstance:
    """The one ``ti`` method the operator calls: ``xcom_push``."""

    def __init__(self) -> None:
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        """Record an XCom."""
        self.xcoms[key] = value


def _operator(deferrable: bool, poll_interval: float, timeout: float) -> Any:
    from airflow_provider_crun.operators.crun import CrunFaceSwapOperator

    return CrunFaceSwapOperator(
        task_id="swap",
        image_url=IMAGE_URL,
        new_face=NEW_FACE,
        deferrable=deferrable,
        poll_interval=poll_interval,
        timeout=timeout,
    )


async def _first_event(trigger: Any) -> Any:
    async for event in trigger.run():
        return event.payload
    raise RuntimeError("the trigger yielded no event")


def measure_deferrable(poll_interval: float, timeout: float) -> dict[str, float]:
    """Worker seconds of the deferrable path; the trigger runs untimed in between."""
    from airflow.providers.common.compat.sdk import TaskDeferred

    context: dict[str, Any] = {"ti": _TaskInstance()}
    operator = _operator(True, poll_interval, timeout)
    started = time.perf_counter()
    try:
        operator.execute(context)
    except TaskDeferred as deferral:
        deferred = deferral
    else:
        raise RuntimeError("execute returned instead of deferring (did the task finish instantly?)")
    until_deferred = time.perf_counter() - started
    waited_started = time.perf_counter()
    event = asyncio.run(_first_event(deferred.trigger))
    triggerer_s = time.perf_counter() - waited_started
    started = time.perf_counter()
    result = getattr(operator, deferred.method_name)(context, event=event)
    complete = time.perf_counter() - started
    if not result.get("media_urls"):
        raise RuntimeError(f"unexpected result {result!r}")
    return {
        "execute_until_deferred_s": until_deferred,
        "execute_complete_s": complete,
        "worker_s": until_deferred + complete,
        "triggerer_s": triggerer_s,
    }


def measure_blocking(poll_interval: float, timeout: float) -> dict[str, float]:
    """Worker seconds of the blocking path."""
    context: dict[str, Any] = {"ti": _TaskInstance()}
    operator = _operator(False, poll_interval, timeout)
    started = time.perf_counter()
    result = operator.execute(context)
    elapsed = time.perf_counter() - started
    if not result.get("media_urls"):
        raise RuntimeError(f"unexpected result {result!r}")
    return {"worker_s": elapsed}


def child_main(mode: str, poll_interval: float, timeout: float) -> int:
    """In a fresh process: measure one mode and print its figures as one JSON line."""
    figures = (
        measure_deferrable(poll_interval, timeout)
        if mode == "deferrable"
        else measure_blocking(poll_interval, timeout)
    )
    print("RESULT " + json.dumps(figures), flush=True)
    return 0


def run_child(mode: str, settings: argparse.Namespace, env: dict[str, str]) -> dict[str, float]:
    """One fresh-process sample of ``mode``."""
    command = [
        PYTHON,
        str(Path(__file__).resolve()),
        f"--child={mode}",
        f"--poll-interval={settings.poll_interval}",
        f"--task-seconds={settings.task_seconds}",
    ]
    completed = subprocess.run(
        command,
        cwd=REPO_ROOT,
        env=child_env(env),
        capture_output=True,
        text=True,
        timeout=settings.task_seconds * 10 + 120,
        check=False,
    )
    for line in completed.stdout.splitlines():
        if line.startswith("RESULT "):
            figures: dict[str, float] = json.loads(line[len("RESULT ") :])
            return figures
    raise RuntimeError(f"{mode} sample failed ({completed.returncode}): {completed.stderr[-3000:]}")


def summarize(samples: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Median of every figure per mode."""
    return {
        mode: {key: median([sample[key] for sample in runs]) for key in runs[0]}
        for mode, runs in samples.items()
    }


def report(settings: argparse.Namespace, medians: dict[str, dict[str, float]]) -> str:
    """The figures table, the ratio and the target verdict."""
    deferrable, blocking = medians["deferrable"], medians["blocking"]
    rows = [
        ["deferrable: execute until TaskDeferred", deferrable["execute_until_deferred_s"]],
        ["deferrable: execute_complete", deferrable["execute_complete_s"]],
        ["deferrable: worker total", deferrable["worker_s"]],
        ["  (triggerer wait, not on the worker)", deferrable["triggerer_s"]],
        ["blocking: execute", blocking["worker_s"]],
        ["deferrable / blocking", deferrable["worker_s"] / blocking["worker_s"]],
    ]
    rows = [[label, fmt(value, 3)] for label, value in rows]
    table = markdown_table([f"worker wall seconds (S={settings.task_seconds:g} s, median)", "value"], rows)
    met = deferrable["worker_s"] <= TARGET_DEFERRABLE_S
    verdict = f"deferrable worker time <= {TARGET_DEFERRABLE_S:g} s: {fmt(deferrable['worker_s'], 3)} s -> "
    return table + "\n\nTarget:\n- " + verdict + ("met" if met else "MISSED")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task-seconds", type=float, default=10.0, help="S: seconds each Crun task takes")
    parser.add_argument(
        "--poll-interval", type=float, default=1.0, help="operator poll interval (default 1 s)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="fresh-process samples per mode (default 3)")
    parser.add_argument("--json", dest="json_path", help="also write the figures to this JSON file")
    parser.add_argument("--child", choices=("deferrable", "blocking"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Start the emulator, sample both modes in fresh processes, print the figures."""
    settings = parse_args(argv)
    timeout = max(300.0, settings.task_seconds * 5)
    if settings.child:
        return child_main(settings.child, settings.poll_interval, timeout)
    print("machine:", ", ".join(f"{k} {v}" for k, v in machine_info().items()), flush=True)
    pending = settings.task_seconds * 0.25
    delays = f"{pending},{settings.task_seconds - pending}"
    samples: dict[str, list[dict[str, float]]] = {"deferrable": [], "blocking": []}
    with (
        EmulatorProcess(args=["--task-delays", delays, "--credits", "1000000"], api_key=API_KEY) as emulator,
        tempfile.TemporaryDirectory(prefix="worker-time-pyc-") as cache_dir,
    ):
        crun = {"conn_type": "crun", "host": emulator.url, "password": API_KEY, "extra": {"timeout": 30}}
        env = {"AIRFLOW_CONN_CRUN_DEFAULT": json.dumps(crun), **bytecode_cache_env(cache_dir)}
        run_python(WARM_UP, env)
        for round_number in range(settings.repeat):
            for mode in samples:
                print(f"round {round_number + 1}/{settings.repeat}: {mode} ...", flush=True)
                samples[mode].append(run_child(mode, settings, env))
    medians = summarize(samples)
    print()
    print(report(settings, medians))
    if settings.json_path:
        payload = {"machine": machine_info(), "task_seconds": settings.task_seconds, "samples": samples}
        write_json(settings.json_path, {**payload, "medians": medians})
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
