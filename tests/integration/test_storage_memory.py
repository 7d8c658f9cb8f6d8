"""
A 200 MB Crun result goes through the swap operator into storage with a small, bounded memory
cost: file:// and S3 (moto's server on loopback).

The emulator (its own process) generates the result on the fly, with a real ``Content-Length``.
The operator runs in a fresh child process: one swap with a plain result first (imports, pools and
filesystems warm), then the child resets its RSS high-water mark (``/proc/self/clear_refs``), asks
the emulator for large results, and runs the measured swap. The figure is ``VmHWM`` after the swap
minus ``VmRSS`` before it; the issue's target is under 32 MB whatever the media size.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_crun.testing.emulator import EmulatorProcess
from tests.support.s3 import MotoS3, moto_s3_fixture  # noqa: F401

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc"),
]

REPO = Path(__file__).resolve().parents[2]
MB = 1_000_000
RESULT_BYTES = 200 * MB
RSS_GROWTH_LIMIT = 32 * 1024 * 1024

CHILD = textwrap.dedent(
    """
    import gc
    import json
    import sys
    import time
    import urllib.request
    from pathlib import Path

    from airflow_provider_crun.operators.crun import CrunFaceSwapOperator
    from tests.support.fakes import make_context

    emulator_url, output_path, size = sys.argv[1], sys.argv[2], int(sys.argv[3])


    def status_kb(field):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise AssertionError(field)


    def swap(name):
        operator = CrunFaceSwapOperator(
            task_id=name,
            image_url=f"{emulator_url}/media/input/{name}.png?faces=1",
            new_face=f"{emulator_url}/media/input/new-face.png?faces=1",
            output_path=output_path,
            max_output_bytes=size + 1,
            poll_interval=1,
        )
        return operator.execute(make_context())


    swap("warm-up")
    options = urllib.request.Request(
        f"{emulator_url}/_emulator/options",
        data=json.dumps({"large_result_bytes": size}).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    urllib.request.build_opener(urllib.request.ProxyHandler({})).open(options, timeout=10).close()
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    before_kb = status_kb("VmRSS")
    started = time.monotonic()
    result = swap("large")
    seconds = time.monotonic() - started
    print("CRUN-MEMORY " + json.dumps({
        "rss_before_kb": before_kb,
        "rss_growth_kb": status_kb("VmHWM") - before_kb,
        "seconds": seconds,
        "stored_paths": result["stored_paths"],
    }))
    """
)


@pytest.fixture
def emulator() -> Iterator[EmulatorProcess]:
    with EmulatorProcess(args=["--task-delays", "0,0"]) as emu:
        yield emu


def swap_large_result(emulator: EmulatorProcess, output_path: str) -> dict[str, Any]:
    """Run the measured swap in a child; return its figures (also printed, for the run's log)."""
    env = {**os.environ, "AIRFLOW_CONN_CRUN_DEFAULT": emulator.connection_uri()}
    child = subprocess.run(
        [sys.executable, "-c", CHILD, emulator.url, output_path, str(RESULT_BYTES)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert child.returncode == 0, child.stdout[-3000:] + child.stderr[-3000:]
    [line] = [line for line in child.stdout.splitlines() if line.startswith("CRUN-MEMORY ")]
    figures: dict[str, Any] = json.loads(line.removeprefix("CRUN-MEMORY "))
    print(
        f"\n{output_path.split(':')[0]}: {RESULT_BYTES // MB} MB stored; peak RSS growth "
        f"{figures['rss_growth_kb'] / 1024:.1f} MiB; {RESULT_BYTES / MB / figures['seconds']:.0f} MB/s "
        "(the whole swap, Crun calls included)"
    )
    return figures


def test_a_200_mb_result_into_a_local_folder(emulator: EmulatorProcess, tmp_path: Path) -> None:
    figures = swap_large_result(emulator, tmp_path.as_uri() + "/")

    [stored] = figures["stored_paths"]
    assert Path(stored.removeprefix("file://")).stat().st_size == RESULT_BYTES
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".")] == []  # no partial left
    assert figures["rss_growth_kb"] * 1024 < RSS_GROWTH_LIMIT, figures


def test_a_200_mb_result_into_s3(emulator: EmulatorProcess, moto_s3: MotoS3) -> None:
    bucket = moto_s3.create_bucket()

    figures = swap_large_result(emulator, f"s3://{moto_s3.conn_id}@{bucket}/large/")

    [stored] = figures["stored_paths"]
    key = stored.removeprefix(f"s3://{bucket}/")
    objects = moto_s3.objects(bucket)
    assert objects[key] == RESULT_BYTES
    assert len(objects) == 2  # the warm-up swap's result, and this one
    assert moto_s3.multipart_uploads(bucket) == []
    assert figures["rss_growth_kb"] * 1024 < RSS_GROWTH_LIMIT, figures
