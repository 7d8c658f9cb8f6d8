"""
Processes of a test deployment: start and stop process groups, wait, find free ports, read CPU.

Every component runs in its own process group, so it can be killed with everything it spawned
(LocalExecutor workers, trigger runners, uvicorn), and an ``atexit`` hook kills whatever a
crashed test session left behind.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import psutil

VENV_BIN = Path(sys.executable).parent

T = TypeVar("T")

# Every process group this module started and has not reaped yet: the atexit backstop.
_LIVE_GROUPS: dict[int, subprocess.Popen[bytes]] = {}


def _kill_leftovers() -> None:
    for pgid in list(_LIVE_GROUPS):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        _LIVE_GROUPS.pop(pgid, None)


atexit.register(_kill_leftovers)


def exit_on_sigterm() -> Callable[[], None]:
    """
    Turn SIGTERM into ``SystemExit`` so finalizers and ``atexit`` still stop every component.

    Python's default SIGTERM handling exits without either. Returns the function that restores
    the previous handler.
    """
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, previous)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    predicate: Callable[[], T], *, timeout: float, interval: float = 0.5, what: str = "condition"
) -> T:
    """
    Call ``predicate`` until it returns something truthy, and return that.

    :raises TimeoutError: naming ``what`` when ``timeout`` seconds pass first.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def start_group(argv: Sequence[str], *, env: Mapping[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a new process group (session), stdout and stderr appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        log.write(f"\n===== {time.strftime('%H:%M:%S')} starting {' '.join(argv)}\n".encode())
        log.flush()
        process = subprocess.Popen(
            list(argv),
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    _LIVE_GROUPS[process.pid] = process
    return process


def stop_group(process: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM, grace: float = 15.0) -> None:
    """
    Signal the whole process group of ``process``; SIGKILL the group after ``grace`` seconds.

    The group is SIGKILLed at the end in any case, so no grandchild survives its parent.
    """
    pgid = process.pid
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
    if sig != signal.SIGKILL:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(10)
    _LIVE_GROUPS.pop(pgid, None)


def tail(path: Path, lines: int = 60) -> str:
    """The last ``lines`` lines of a text file, or a note that it is missing."""
    if not path.exists():
        return f"<{path} does not exist>"
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def process_tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its descendants, counting the ones they already reaped."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
    return round(total, 1)


def task_process(ti_id: str) -> psutil.Process | None:
    """
    The process running the task instance ``ti_id``, or ``None`` when there is none.

    In Airflow 3 the LocalExecutor worker supervises a forked child that runs the task; the child
    titles itself ``airflow worker -- <task instance id>``.
    """
    title = f"airflow worker -- {ti_id}"
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if cmdline.strip() == title:
            return process
    return None
