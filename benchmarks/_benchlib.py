"""Small helpers shared by the benchmark scripts: statistics, tables, machine facts, RSS."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def median(values: Sequence[float]) -> float:
    """The median of a non-empty sequence."""
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (``fraction`` in [0, 1]) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or ``None`` when either is missing or the denominator is 0."""
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def fmt(value: Any, digits: int = 2) -> str:
    """Format a table cell: floats with ``digits`` decimals, ``None`` as a dash."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Render rows as a GitHub-flavoured Markdown table (cells already formatted or formattable)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines.extend("| " + " | ".join(fmt(cell) for cell in row) + " |" for row in rows)
    return "\n".join(lines)


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, str]:
    """The facts a reader needs to compare figures across machines."""
    return {
        "nproc": str(os.cpu_count()),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "airflow": _version("apache-airflow"),
        "aiohttp": _version("aiohttp"),
        "httpx": _version("httpx"),
        "requests": _version("requests"),
        "http provider": _version("apache-airflow-providers-http"),
    }


def machine_line() -> str:
    """:func:`machine_info` on one line."""
    return ", ".join(f"{key} {value}" for key, value in machine_info().items())


def proc_status_kb(field: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``), or 0 where there is none."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def reset_peak_rss() -> bool:
    """Reset this process's ``VmHWM`` to its current RSS (Linux >= 4.0); ``False`` if not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def write_json(path: str | os.PathLike[str], payload: Mapping[str, Any]) -> None:
    """Write ``payload`` as indented JSON."""
    Path(path).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """
    The environment of a measured child: this one, the repo on ``PYTHONPATH``, plus ``extra``.

    When ``extra`` sets ``PYTHONPYCACHEPREFIX``, ``PYTHONDONTWRITEBYTECODE`` is dropped.
    """
    env = dict(os.environ)
    if extra and "PYTHONPYCACHEPREFIX" in extra:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(extra or {})
    return env


def bytecode_cache_env(cache_dir: str | os.PathLike[str]) -> dict[str, str]:
    """
    Environment entries that let children write and reuse ``.pyc`` files under ``cache_dir``.

    A pip-installed provider ships compiled bytecode; this checkout, run with
    ``PYTHONDONTWRITEBYTECODE=1``, would otherwise recompile every module of ours on every import
    while site-packages modules load from their ``.pyc``. :func:`child_env` then also drops
    ``PYTHONDONTWRITEBYTECODE``. Warm the cache with one untimed run before measuring.
    """
    return {"PYTHONPYCACHEPREFIX": str(cache_dir)}


def run_python(code: str, env: Mapping[str, str] | None = None, timeout: float = 120.0) -> str:
    """Run ``python -c code`` from the repo root and return its stdout (raises on failure)."""
    completed = subprocess.run(
        [PYTHON, "-c", code],
        cwd=REPO_ROOT,
        env=child_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"child failed ({completed.returncode}): {completed.stderr[-2000:]}")
    return completed.stdout
