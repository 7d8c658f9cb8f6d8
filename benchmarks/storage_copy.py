"""
Copy a large Crun result into storage: throughput and peak RSS growth, ours against naive peers.

    .venv/bin/python benchmarks/storage_copy.py --repeat 3      # 50 and 200 MB, file:// and S3
    .venv/bin/python benchmarks/storage_copy.py --sizes-mb 1000 --destinations file

A loopback CDN generates the media on the fly (``image/png``, with ``Content-Length``); S3 is
moto's server. Both run in their own processes, so neither counts. Each copy runs in a fresh child
that first copies a 1 MB media the same way (imports, pools and filesystems warm), then resets the
kernel's RSS high-water mark (``/proc/self/clear_refs``) and copies the large one. "Peak RSS
growth" is ``VmHWM`` after minus ``VmRSS`` before; a thread sampling ``VmRSS`` every 2 ms gives a
second figure. Variants:

* ``ours``: ``store_results`` (its size cap raised to the size when needed).
* ``naive``: ``requests.get(url).content``, then ``ObjectStoragePath.write_bytes``.
* ``fsspec_stream``: ``requests`` with ``stream=True``, ``shutil.copyfileobj`` into
  ``ObjectStoragePath.open("wb")`` with fsspec's defaults (s3fs: 50 MiB parts); no checks, no
  atomicity.

Compare ratios within one run: the machine is shared and noisy. Target: ours grows RSS by less
than 32 MB whatever the size.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from _benchlib import (
    PYTHON,
    REPO_ROOT,
    child_env,
    fmt,
    machine_line,
    markdown_table,
    median,
    proc_status_kb,
    reset_peak_rss,
    write_json,
)

MB = 1_000_000
VARIANTS = ("ours", "naive", "fsspec_stream")
CONN_ID = "aws_bench_moto"
BUCKET = "crun-bench"
KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
# Dummy keys end botocore's credential chain before the EC2 metadata endpoint, disabled anyway.
OFFLINE_AWS_ENV = {"AWS_EC2_METADATA_DISABLED": "true", "AWS_ACCESS_KEY_ID": "testing",
                   "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip


def serve_media() -> None:
    """Serve ``/media/<bytes>.png``, generated on the fly; print the port; stop when stdin closes."""
    block = b"\x89PNG\r\n\x1a\n" + os.urandom(1024 * 1024 - 8)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_HEAD(self) -> None:
            self._headers()

        def do_GET(self) -> None:
            left = self._headers()
            try:
                while left > 0:
                    left -= self.wfile.write(block[: min(len(block), left)])
            except OSError:
                self.close_connection = True

        def _headers(self) -> int:
            size = int(self.path.rsplit("/", 1)[-1].split(".")[0])
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            return size

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    print(httpd.server_address[1], flush=True)
    sys.stdin.read()


def _copy_function(variant: str, size: int) -> Callable[[str, str, str], None]:
    import requests
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_crun.storage import DEFAULT_MAX_BYTES, store_results

    def ours(url: str, folder: str, task: str) -> None:
        store_results([url], crun_task_id=task, destination=folder, max_bytes=max(size, DEFAULT_MAX_BYTES))

    def naive(url: str, folder: str, task: str) -> None:
        data = requests.get(url, timeout=60).content
        ObjectStoragePath(f"{folder}{task}_0.png").write_bytes(data)

    def fsspec_stream(url: str, folder: str, task: str) -> None:
        with (
            requests.get(url, stream=True, timeout=60) as response,
            ObjectStoragePath(f"{folder}{task}_0.png").open("wb") as file,
        ):
            shutil.copyfileobj(response.raw, file, 1024 * 1024)

    return {"ours": ours, "naive": naive, "fsspec_stream": fsspec_stream}[variant]


@contextmanager
def _rss_sampler() -> Iterator[list[int]]:
    samples: list[int] = []
    stop = threading.Event()
    page_kb = os.sysconf("SC_PAGE_SIZE") // 1024

    def sample() -> None:
        with open("/proc/self/statm") as statm:
            while not stop.is_set():
                statm.seek(0)
                samples.append(int(statm.read().split()[1]) * page_kb)
                stop.wait(0.002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join()


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    """In the measured child: copy the warm-up media, then the measured one; return the figures."""
    copy = _copy_function(spec["variant"], spec["size"])
    copy(spec["warm_url"], spec["folder"], "warm")
    gc.collect()
    hwm_reset = reset_peak_rss()
    rss_before = proc_status_kb("VmRSS")
    with _rss_sampler() as samples:
        started = time.perf_counter()
        copy(spec["url"], spec["folder"], "bench")
        seconds = time.perf_counter() - started
    hwm = proc_status_kb("VmHWM")
    return {
        "seconds": seconds,
        "mb_per_s": spec["size"] / MB / seconds,
        "rss_before_mb": rss_before / 1024,
        "hwm_growth_mb": (hwm - rss_before) / 1024 if hwm_reset else None,
        "sampled_growth_mb": (max(samples, default=rss_before) - rss_before) / 1024,
    }


@contextmanager
def _media_server() -> Iterator[str]:
    process = subprocess.Popen(
        [PYTHON, __file__, "--serve-media"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert process.stdin is not None
    assert process.stdout is not None
    try:
        yield f"http://127.0.0.1:{int(process.stdout.readline())}"
    finally:
        process.stdin.close()
        process.wait(timeout=10)


@contextmanager
def _moto_server() -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    command = [PYTHON, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=child_env(OFFLINE_AWS_ENV))  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("moto server did not start")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def _run_cell(
    cell: tuple[int, str, str, int], cdn: str, workdir: Path, env: dict[str, str], s3: Any
) -> dict[str, Any]:
    size, dest, variant, _ = cell
    local = workdir / "out" / variant
    local.mkdir(parents=True, exist_ok=True)
    folder = f"file://{local}/" if dest == "file" else f"s3://{CONN_ID}@{BUCKET}/{variant}/"
    spec = {"variant": variant, "size": size, "folder": folder,
            "url": f"{cdn}/media/{size}.png", "warm_url": f"{cdn}/media/{MB}.png"}  # fmt: skip
    command = [PYTHON, __file__, "--child", json.dumps(spec)]
    try:
        done = subprocess.run(command, cwd=REPO_ROOT, env=child_env(env), capture_output=True, text=True,
                              timeout=900, check=False)  # fmt: skip
    finally:
        shutil.rmtree(workdir / "out", ignore_errors=True)
        for obj in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []) if dest == "s3" else []:
            s3.delete_object(Bucket=BUCKET, Key=obj["Key"])
    if done.returncode != 0:
        raise RuntimeError(f"{variant} to {dest} failed: {done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    speed, growth = fmt(result["mb_per_s"], 1), fmt(result["hwm_growth_mb"], 1)
    print(f"  {dest:5} {variant:14} {size / MB:6.0f} MB  {speed:>7} MB/s  RSS +{growth} MB", file=sys.stderr)
    return {"size_mb": size / MB, "dest": dest, "variant": variant, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--sizes-mb", default="50,200", help="result sizes in MB (10^6 bytes)")
    parser.add_argument("--destinations", default="file,s3")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--repeat", type=int, default=1, help="runs per cell; the table shows medians")
    parser.add_argument("--json", help="write every figure to this file")
    parser.add_argument("--serve-media", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_media:
        return serve_media()
    if args.child:
        return print(json.dumps(run_child(json.loads(args.child))))
    sizes = [int(float(s) * MB) for s in args.sizes_mb.split(",")]
    destinations, variants = args.destinations.split(","), args.variants.split(",")
    workdir = Path(tempfile.mkdtemp(prefix="crun-storage-bench-"))
    env = {**OFFLINE_AWS_ENV, "AIRFLOW_HOME": str(workdir / "airflow-home")}
    try:
        with _media_server() as cdn, _moto_server() if "s3" in destinations else nullcontext("") as moto:
            s3 = None
            if moto:
                import boto3

                s3 = boto3.client("s3", endpoint_url=moto, region_name="us-east-1", **KEYS)
                s3.create_bucket(Bucket=BUCKET)
                connection = {"conn_type": "aws", "login": "testing", "password": "testing",
                              "extra": {"endpoint_url": moto, "region_name": "us-east-1"}}  # fmt: skip
                env[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = json.dumps(connection)
            cells = itertools.product(sizes, destinations, variants, range(args.repeat))
            rows = [_run_cell(cell, cdn, workdir, env, s3) for cell in cells]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    _report(rows, variants, args.json)


def _report(rows: list[dict[str, Any]], variants: list[str], json_path: str | None) -> None:
    fields = ("mb_per_s", "hwm_growth_mb", "sampled_growth_mb")
    runs: dict[tuple[float, str], dict[str, list[dict[str, Any]]]] = {}
    for row in rows:
        runs.setdefault((row["size_mb"], row["dest"]), {}).setdefault(row["variant"], []).append(row)
    table = []
    for (size, dest), by_variant in runs.items():
        cell = {v: {f: median([r[f] or 0.0 for r in rs]) for f in fields} for v, rs in by_variant.items()}
        ours = cell.get("ours")
        for variant in (v for v in variants if v in cell):
            m = cell[variant]
            speed = m["mb_per_s"] / ours["mb_per_s"] if ours else None
            growth = m["hwm_growth_mb"] / ours["hwm_growth_mb"] if ours and ours["hwm_growth_mb"] else None
            table.append([dest, f"{size:.0f}", variant, *(m[f] for f in fields), speed, growth])
    headers = ["dest", "MB", "variant", "MB/s", "peak RSS growth MB (VmHWM)", "sampled MB",
               "throughput / ours", "RSS growth / ours"]  # fmt: skip
    print(f"\nMachine: {machine_line()}\n\n{markdown_table(headers, table)}")
    if json_path:
        write_json(json_path, {"machine": machine_line(), "runs": rows})


if __name__ == "__main__":
    main()
