"""
What does importing our operators (or sensors) cost a DAG file that already imported ``airflow.sdk``?

Every sample is a fresh interpreter that first imports ``airflow.sdk`` and then times the one
import under test with ``time.perf_counter``. Modules are interleaved round by round, so machine
noise spreads evenly. The http provider's operators module is measured the same way as the
reference. A second pass with ``python -X importtime`` lists what each import pulls in that
``airflow.sdk`` had not loaded, with the cumulative time of the heavy ones.

    .venv/bin/python benchmarks/import_cost.py                  # 15 runs per module
    .venv/bin/python benchmarks/import_cost.py --runs 25 --json import.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

from _benchlib import (
    PYTHON,
    REPO_ROOT,
    bytecode_cache_env,
    child_env,
    machine_info,
    markdown_table,
    median,
    run_python,
    write_json,
)

OURS = ("airflow_provider_crun.operators.crun", "airflow_provider_crun.sensors.crun")
REFERENCE = "airflow.providers.http.operators.http"
PRELUDE = "airflow.sdk"
WATCHED = ("httpx", "tenacity", "requests", "aiohttp")
HEAVY_MS = 5.0
TARGET_RATIO = 1.0
TARGET_MS = 20.0

_TIMING_CODE = """
import sys, time, json
import {prelude}
before = set(sys.modules)
started = time.perf_counter()
import {module}
elapsed = time.perf_counter() - started
print(json.dumps({{"ms": elapsed * 1000, "new": sorted(set(sys.modules) - before)}}))
"""


def time_import(module: str, env: dict[str, str]) -> dict[str, Any]:
    """One fresh-process sample: milliseconds to import ``module`` after ``airflow.sdk``, and new modules."""
    output = run_python(_TIMING_CODE.format(prelude=PRELUDE, module=module), env)
    sample: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    return sample


def parse_importtime(stderr: str) -> dict[str, float]:
    """``-X importtime`` output -> cumulative milliseconds per module (the last line wins)."""
    cumulative: dict[str, float] = {}
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative_us, name = (part.strip() for part in line[len("import time:") :].split("|"))
        if cumulative_us.isdigit():
            cumulative[name] = int(cumulative_us) / 1000
    return cumulative


def importtime_profile(module: str, env: dict[str, str]) -> dict[str, float]:
    """Cumulative ms per module newly imported by ``module`` on top of ``airflow.sdk`` (``-X importtime``)."""
    code = _TIMING_CODE.format(prelude=PRELUDE, module=module)
    completed = subprocess.run(
        [PYTHON, "-X", "importtime", "-c", code],
        cwd=REPO_ROOT,
        env=child_env(env),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    new = set(json.loads(completed.stdout.strip().splitlines()[-1])["new"])
    return {name: ms for name, ms in parse_importtime(completed.stderr).items() if name in new}


def heavy_modules(profiles: Sequence[dict[str, float]]) -> list[tuple[str, float]]:
    """Modules whose median cumulative import time is over ``HEAVY_MS``, slowest first."""
    names = set().union(*profiles) if profiles else set()
    medians = {name: median([p.get(name, 0.0) for p in profiles]) for name in names}
    return sorted(((n, ms) for n, ms in medians.items() if ms > HEAVY_MS), key=lambda item: -item[1])


def measure(
    modules: Sequence[str], runs: int, profile_runs: int, env: dict[str, str]
) -> dict[str, dict[str, Any]]:
    """A warm-up import each (fills the bytecode cache), interleaved timing samples, then profiles."""
    for module in modules:
        time_import(module, env)
    samples: dict[str, list[dict[str, Any]]] = {module: [] for module in modules}
    for round_number in range(runs):
        print(f"\rround {round_number + 1}/{runs}", end="", file=sys.stderr, flush=True)
        for module in modules:
            samples[module].append(time_import(module, env))
    print(file=sys.stderr)
    results: dict[str, dict[str, Any]] = {}
    for module in modules:
        profiles = [importtime_profile(module, env) for _ in range(profile_runs)]
        new_modules = samples[module][0]["new"]
        timings = [sample["ms"] for sample in samples[module]]
        results[module] = {
            "median_ms": median(timings),
            "min_ms": min(timings),
            "max_ms": max(timings),
            "runs": len(timings),
            "new_modules": len(new_modules),
            "watched_new": [name for name in WATCHED if name in new_modules],
            "heavy": heavy_modules(profiles),
        }
    return results


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def report(results: dict[str, dict[str, Any]]) -> str:
    """The timing table, the ratio to the reference, the heavy modules and the target verdicts."""
    reference = results[REFERENCE]["median_ms"]
    rows = [
        [
            module,
            r["median_ms"],
            r["min_ms"],
            r["max_ms"],
            r["new_modules"],
            r["median_ms"] / reference if reference else None,
            ", ".join(r["watched_new"]) or "none",
        ]
        for module, r in results.items()
    ]
    headers = [
        "module (after airflow.sdk)",
        "median ms",
        "min",
        "max",
        "new modules",
        "x http",
        "new of " + "/".join(WATCHED),
    ]
    lines = [
        markdown_table(headers, rows),
        "",
        f"Modules over {HEAVY_MS:g} ms cumulative (-X importtime, median):",
    ]
    for module, r in results.items():
        heavy = ", ".join(f"{name} {ms:.1f}" for name, ms in r["heavy"]) or "none"
        lines.append(f"- {module}: {heavy}")
    lines.append("")
    lines.append("Targets:")
    for module in OURS:
        if module in results:
            ms = results[module]["median_ms"]
            ratio = ms / reference if reference else float("inf")
            lines.append(
                f"- {module}: {ratio:.2f}x http (<= {TARGET_RATIO:g}x: {_verdict(ratio <= TARGET_RATIO)}), "
                f"{ms:.1f} ms (<= {TARGET_MS:g} ms: {_verdict(ms <= TARGET_MS)})"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Measure, print, optionally write JSON."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=15, help="fresh processes per module (default 15)")
    parser.add_argument(
        "--profile-runs", type=int, default=5, help="-X importtime runs per module (default 5)"
    )
    parser.add_argument("--json", dest="json_path", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    print("machine:", ", ".join(f"{k} {v}" for k, v in machine_info().items()), flush=True)
    with tempfile.TemporaryDirectory(prefix="import-cost-pyc-") as cache_dir:
        results = measure([*OURS, REFERENCE], args.runs, args.profile_runs, bytecode_cache_env(cache_dir))
    print(report(results))
    if args.json_path:
        write_json(args.json_path, {"machine": machine_info(), "prelude": PRELUDE, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
