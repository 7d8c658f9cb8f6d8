"""
How cheaply can one triggerer process hold N Crun triggers? Ours against three peers.

For each variant a fresh emulator subprocess and a fresh measured subprocess
(``_scale_child.py``) are started. The child imports everything, the parent creates N Crun
tasks that finish after ``--task-seconds`` through the sync ``CrunHook``, zeroes the emulator's
counters and hands the ids to the child, which runs N triggers in one event loop until each has
yielded its event. Only the polling phase is measured.

    .venv/bin/python benchmarks/trigger_scale.py                       # N=1000, P=2 s, S=20 s
    .venv/bin/python benchmarks/trigger_scale.py --triggers 200 --json out.json
    .venv/bin/python benchmarks/trigger_scale.py --variants ours,http

See ``benchmarks/README.md`` for what each figure means.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psutil
from _benchlib import (
    PYTHON,
    REPO_ROOT,
    child_env,
    fmt,
    machine_info,
    markdown_table,
    median,
    ratio,
    write_json,
)
from _scale_variants import CRUN_CONN_ID, ENV_API_KEY, ENV_BASE_URL, EXTRA_VARIANTS, HTTP_CONN_ID, VARIANTS

from airflow_provider_crun.testing.emulator import EmulatorProcess

API_KEY = "bench-key-0123456789"
CHILD_SCRIPT = Path(__file__).with_name("_scale_child.py")
PEERS = ("http", "to_thread", "httpx", "aiohttp_floor")
TARGETS = {
    "lag_max_ms": 50.0,
    "cpu_per_poll_vs_http": 0.5,
    "new_tcp_connections": 100,
    "rss_per_trigger_kb": 50.0,
}


@dataclass(frozen=True)
class Settings:
    """One benchmark run's parameters."""

    triggers: int
    poll_interval: float
    task_seconds: float
    variants: tuple[str, ...]
    profile_dir: str | None = None
    gc_freeze: bool = False
    repeat: int = 1

    @property
    def trigger_timeout(self) -> float:
        """Each trigger's own deadline: far beyond the expected finish, so none times out."""
        return max(300.0, 5 * self.task_seconds)

    @property
    def child_timeout(self) -> float:
        """How long the parent waits for a child's result before giving up."""
        return self.trigger_timeout + 120.0


def connection_env(emulator_url: str) -> dict[str, str]:
    """The env-var connections (ours: ``crun``; peer a: ``http``) and the peers' address and key."""
    crun = {"conn_type": "crun", "host": emulator_url, "password": API_KEY, "extra": {"timeout": 30}}
    return {
        f"AIRFLOW_CONN_{CRUN_CONN_ID.upper()}": json.dumps(crun),
        f"AIRFLOW_CONN_{HTTP_CONN_ID.upper()}": json.dumps({"conn_type": "http", "host": emulator_url}),
        ENV_BASE_URL: emulator_url,
        ENV_API_KEY: API_KEY,
    }


def create_tasks(count: int) -> list[str]:
    """Create ``count`` single-face swap tasks through the sync hook (``crun_default`` in the env)."""
    from airflow_provider_crun.hooks.crun import CrunHook

    hook = CrunHook(crun_conn_id=CRUN_CONN_ID)
    model_input = {"image_url": "https://example.com/in.png", "new_face": "https://example.com/face.png"}
    return [hook.create_task("image-face-swap", model_input) for _ in range(count)]


def _read_control(control: IO[str], timeout: float, child: subprocess.Popen[bytes]) -> dict[str, Any]:
    """The child's next JSON message, or ``RuntimeError`` once it died or ``timeout`` passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([control], [], [], 1.0)
        if ready:
            line = control.readline()
            if not line:
                break
            message: dict[str, Any] = json.loads(line)
            return message
        if child.poll() is not None:
            break
    raise RuntimeError(f"measured child gave no answer (exit code {child.poll()})")


def _spawn_child(
    settings: Settings, variant: str, env: dict[str, str], log: IO[bytes]
) -> tuple[subprocess.Popen[bytes], IO[str]]:
    """Start the measured child; return it and the read end of its control pipe."""
    read_fd, write_fd = os.pipe()
    command = [
        PYTHON,
        str(CHILD_SCRIPT),
        f"--variant={variant}",
        f"--poll-interval={settings.poll_interval}",
        f"--timeout={settings.trigger_timeout}",
        f"--control-fd={write_fd}",
    ]
    if settings.gc_freeze:
        command.append("--gc-freeze")
    if settings.profile_dir:
        Path(settings.profile_dir).mkdir(parents=True, exist_ok=True)
        command.append(f"--profile={Path(settings.profile_dir) / variant}.prof")
    child = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env=child_env(env),
        stdin=subprocess.PIPE,
        stdout=log,
        stderr=log,
        pass_fds=(write_fd,),
    )
    os.close(write_fd)
    return child, os.fdopen(read_fd, "r")


def _emulator_args(settings: Settings) -> list[str]:
    pending = settings.task_seconds * 0.25
    return ["--task-delays", f"{pending},{settings.task_seconds - pending}", "--credits", "1000000000"]


def _log_tail(log: IO[bytes], limit: int = 3000) -> str:
    log.seek(0)
    return log.read().decode(errors="replace")[-limit:]


def run_variant(settings: Settings, variant: str) -> dict[str, Any]:
    """Measure one variant with its own emulator and its own child process."""
    with EmulatorProcess(args=_emulator_args(settings), api_key=API_KEY) as emulator:
        env = connection_env(emulator.url)
        os.environ.update(env)
        assert emulator.process is not None
        emulator_ps = psutil.Process(emulator.process.pid)
        with tempfile.TemporaryFile(prefix=f"trigger-scale-{variant}-") as log:
            child, control = _spawn_child(settings, variant, env, log)
            try:
                with control:
                    _read_control(control, 120.0, child)
                    task_ids = create_tasks(settings.triggers)
                    emulator.reset()
                    load_before = os.getloadavg()[0]
                    emulator_cpu = sum(emulator_ps.cpu_times()[:2])
                    assert child.stdin is not None
                    child.stdin.write((json.dumps(task_ids) + "\n").encode())
                    child.stdin.close()
                    result = _read_control(control, settings.child_timeout, child)
                    emulator_cpu = sum(emulator_ps.cpu_times()[:2]) - emulator_cpu
                    result["load_avg_1m"] = max(load_before, os.getloadavg()[0])
                child.wait(30)
            except Exception as error:
                raise RuntimeError(f"{variant}: {error}; child output:\n{_log_tail(log)}") from None
            finally:
                if child.poll() is None:
                    child.kill()
                    child.wait()
            state = emulator.state()
    return summarize(settings, variant, result, state, emulator_cpu)


def summarize(
    settings: Settings, variant: str, child: dict[str, Any], state: dict[str, Any], emulator_cpu: float
) -> dict[str, Any]:
    """Combine the child's and the emulator's figures into one row of derived metrics."""
    polls = int(state["counts"].get("TaskInfo", 0))
    wall = float(child["wall_s"])
    peak_delta_kb = max(0, int(child["peak_rss_kb"]) - int(child["baseline_rss_kb"]))
    return {
        "variant": variant,
        "triggers": settings.triggers,
        "events": child["events"],
        "peer_poll_errors": child["peer_poll_errors"] if variant != "ours" else None,
        "wall_s": wall,
        "cpu_s": float(child["cpu_s"]),
        "polls": polls,
        "cpu_per_poll_ms": 1000 * float(child["cpu_s"]) / polls if polls else None,
        "polls_per_s": polls / wall if wall else None,
        "expected_polls_per_s": settings.triggers / settings.poll_interval,
        "lag_max_ms": float(child["lag_max_ms"]),
        "lag_p99_ms": float(child["lag_p99_ms"]),
        "baseline_rss_mb": int(child["baseline_rss_kb"]) / 1024,
        "peak_rss_mb": int(child["peak_rss_kb"]) / 1024,
        "peak_rss_delta_mb": peak_delta_kb / 1024,
        "rss_per_trigger_kb": peak_delta_kb / settings.triggers,
        "new_tcp_connections": int(state["connections_accepted"]),
        "emulator_cpu_pct": 100 * emulator_cpu / wall if wall else None,
        "load_avg_1m": child["load_avg_1m"],
        "involuntary_switches": child["involuntary_switches"],
        "lag_worst": child["lag_worst"],
        "lag_max_no_full_gc_ms": child["lag_max_no_full_gc_ms"],
        "gc_collections": child["gc_collections"],
        "gc_full_max_ms": child["gc_full_max_ms"],
        "gc_total_ms": child["gc_total_ms"],
    }


def combine(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One row from repeated runs of a variant: the median of every number, the rest from run 1."""
    combined = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            numbers = [run[key] for run in runs if isinstance(run.get(key), (int, float))]
            combined[key] = median(numbers)
    combined["runs"] = len(runs)
    return combined


ROWS: tuple[tuple[str, str], ...] = (
    ("runs (figures are medians when > 1)", "runs"),
    ("events (status: count, run 1)", "events"),
    ("failed polls (peers; ours retries inside, not counted)", "peer_poll_errors"),
    ("wall time to last event (s)", "wall_s"),
    ("trigger process CPU, polling phase (s)", "cpu_s"),
    ("polls (TaskInfo requests)", "polls"),
    ("CPU per poll (ms)", "cpu_per_poll_ms"),
    ("polls per second", "polls_per_s"),
    ("  ideal polls per second (N / P)", "expected_polls_per_s"),
    ("event-loop lag max (ms)", "lag_max_ms"),
    ("event-loop lag p99 (ms)", "lag_p99_ms"),
    ("  5 worst lags [s since start: ms]", "lag_worst"),
    ("event-loop lag max, ticks without a full GC (ms)", "lag_max_no_full_gc_ms"),
    ("GC collections (gen 0/1/2)", "gc_collections"),
    ("GC longest full collection (ms)", "gc_full_max_ms"),
    ("GC total pause (ms)", "gc_total_ms"),
    ("RSS baseline (MB)", "baseline_rss_mb"),
    ("peak RSS (MB)", "peak_rss_mb"),
    ("peak RSS delta (MB)", "peak_rss_delta_mb"),
    ("RSS per trigger (KB)", "rss_per_trigger_kb"),
    ("new TCP connections", "new_tcp_connections"),
    ("emulator CPU (% of one core)", "emulator_cpu_pct"),
    ("machine load average, 1 min (max of start/end)", "load_avg_1m"),
    ("involuntary context switches of the trigger process", "involuntary_switches"),
)
# Shown without decimals (medians of counts over several runs may end in .5).
COUNT_KEYS = frozenset(
    {
        "runs",
        "peer_poll_errors",
        "polls",
        "expected_polls_per_s",
        "new_tcp_connections",
        "involuntary_switches",
    }
)
RATIO_KEYS = ("cpu_per_poll_ms", "new_tcp_connections", "lag_max_ms", "rss_per_trigger_kb")


def figures_table(results: Sequence[dict[str, Any]]) -> str:
    """Every figure, one column per variant."""
    rows = []
    for label, key in ROWS:
        cells = []
        for result in results:
            value = result[key]
            if isinstance(value, dict):
                value = ", ".join(f"{status}: {count}" for status, count in sorted(value.items()))
            elif isinstance(value, list) and key == "lag_worst":
                value = " ".join(f"{at:g}:{ms:g}" for at, ms in value)
            elif isinstance(value, list):
                value = "/".join(str(item) for item in value)
            cells.append(fmt(value, 0 if key in COUNT_KEYS else 2))
        rows.append([label, *cells])
    return markdown_table(["figure", *(r["variant"] for r in results)], rows)


def ratios(results: Sequence[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """``ours / peer`` for the compared figures, keyed by peer then figure."""
    by_variant = {r["variant"]: r for r in results}
    ours = by_variant.get("ours")
    if ours is None:
        return {}
    return {
        peer: {key: ratio(ours[key], by_variant[peer][key]) for key in RATIO_KEYS}
        for peer in PEERS
        if peer in by_variant
    }


def ratio_table(table: dict[str, dict[str, float | None]]) -> str:
    """The ``ours / peer`` ratios (below 1 means ours is cheaper)."""
    rows = [
        [f"ours / {peer}", *(fmt(values[key], 3) for key in RATIO_KEYS)] for peer, values in table.items()
    ]
    return markdown_table(["ratio", *RATIO_KEYS], rows)


def target_checks(results: Sequence[dict[str, Any]], table: dict[str, dict[str, float | None]]) -> list[str]:
    """One line per acceptance target, for the ``ours`` variant."""
    ours = next((r for r in results if r["variant"] == "ours"), None)
    if ours is None:
        return []
    lag_target = TARGETS["lag_max_ms"]
    checks = [
        ("event-loop lag max <= 50 ms", ours["lag_max_ms"], ours["lag_max_ms"] <= lag_target),
        (
            "  the same, ticks without a full GC (informational)",
            ours["lag_max_no_full_gc_ms"],
            ours["lag_max_no_full_gc_ms"] <= lag_target,
        ),
        (
            "new TCP connections <= 100",
            ours["new_tcp_connections"],
            ours["new_tcp_connections"] <= TARGETS["new_tcp_connections"],
        ),
        (
            "RSS per trigger <= 50 KB",
            ours["rss_per_trigger_kb"],
            ours["rss_per_trigger_kb"] <= TARGETS["rss_per_trigger_kb"],
        ),
    ]
    vs_http = table.get("http", {}).get("cpu_per_poll_ms")
    if vs_http is not None:
        checks.append(
            ("CPU per poll <= 0.5x http provider", vs_http, vs_http <= TARGETS["cpu_per_poll_vs_http"])
        )
    return [f"- {name}: {fmt(value, 3)} -> {'met' if ok else 'MISSED'}" for name, value, ok in checks]


def parse_args(argv: Sequence[str] | None = None) -> tuple[Settings, str | None]:
    """Command line -> settings and the optional JSON output path."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--triggers", type=int, default=1000, help="N triggers per variant (default 1000)")
    parser.add_argument("--poll-interval", type=float, default=2.0, help="P seconds (default 2)")
    parser.add_argument("--task-seconds", type=float, default=20.0, help="S seconds per task (default 20)")
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated, from {','.join(VARIANTS)} (default) and {','.join(EXTRA_VARIANTS)}",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per variant, interleaved; figures are medians (default 1)"
    )
    parser.add_argument("--json", dest="json_path", help="also write every figure to this JSON file")
    parser.add_argument(
        "--profile-dir", help="cProfile each child's polling phase into DIR/<variant>.prof (slows it down)"
    )
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="gc.freeze() each child's heap after its imports (models a triggerer that freezes its startup "
        "heap); by default full collections scan all of Airflow's ~160k import-time objects",
    )
    args = parser.parse_args(argv)
    variants = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    unknown = sorted(set(variants) - set(VARIANTS + EXTRA_VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {','.join(VARIANTS + EXTRA_VARIANTS)}")
    settings = Settings(
        args.triggers,
        args.poll_interval,
        args.task_seconds,
        variants,
        args.profile_dir,
        args.gc_freeze,
        max(1, args.repeat),
    )
    return settings, args.json_path


def main(argv: Sequence[str] | None = None) -> int:
    """Run every requested variant, print the tables, optionally write JSON."""
    settings, json_path = parse_args(argv)
    print(
        f"N={settings.triggers} triggers, P={settings.poll_interval:g} s, S={settings.task_seconds:g} s"
        + (", gc.freeze() after imports" if settings.gc_freeze else "")
    )
    print("machine:", ", ".join(f"{k} {v}" for k, v in machine_info().items()), flush=True)
    runs: dict[str, list[dict[str, Any]]] = {variant: [] for variant in settings.variants}
    for round_number in range(settings.repeat):
        for variant in settings.variants:
            print(f"round {round_number + 1}/{settings.repeat}: {variant} ...", flush=True)
            try:
                runs[variant].append(run_variant(settings, variant))
            except RuntimeError as error:
                print(f"FAILED {error}", file=sys.stderr, flush=True)
                continue
            print(json.dumps(runs[variant][-1]), flush=True)
    results = [combine(variant_runs) for variant_runs in runs.values() if variant_runs]
    table = ratios(results)
    print()
    print(figures_table(results))
    if table:
        print()
        print(ratio_table(table))
    checks = target_checks(results, table)
    if checks:
        print("\nTargets (ours):")
        print("\n".join(checks))
    if json_path:
        payload = {
            "settings": dataclasses.asdict(settings),
            "machine": machine_info(),
            "results": results,
            "runs": runs,
            "ratios": table,
        }
        write_json(json_path, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
