#!/usr/bin/env python3
"""
Run the unit and integration tests against several Airflow and Python versions.

Each cell gets a fresh venv under ``.matrix/<cell>/venv`` (deleted and rebuilt on every run; only
pip's own download cache is reused), installs ``apache-airflow==<version>`` plus ``-e .[dev,emulator]``
with ``-c constraints/airflow-<version>.txt``, and runs ``pytest -m "not e2e and not distributed"`` there.

    python3.11 scripts/test_matrix.py                      # every cell this machine can run
    MATRIX_CELLS='py3.11-*' python3.11 scripts/test_matrix.py
    MATRIX_CELLS=py3.11-af3.1.8,py3.13-af3.3.2 ...        # names or fnmatch patterns, comma-separated

Environment:
    MATRIX_CELLS        select cells by name or pattern (default: all)
    MATRIX_SKIP         drop cells by name or pattern, after MATRIX_CELLS (e.g. the cell `make test`
                        already covers: py3.11-af3.3.2)
    MATRIX_JOBS         cells run at once (default 2)
    MATRIX_REQUIRE_ALL  1: a missing Python 3.12 / 3.13 interpreter is an error, not a note
    MATRIX_PYTEST_ARGS  extra pytest arguments, split on spaces (e.g. "-x" or "tests/unit")

Per cell it writes ``install.log``, ``pytest.log``, ``junit.xml`` and ``freeze.txt``, and the run
writes ``.matrix/summary.json``. Exit status: 0 when every selected cell installed and passed.

Standard library only: it runs before any venv exists.
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MATRIX_DIR = ROOT / ".matrix"
CONSTRAINTS_DIR = ROOT / "constraints"

# Airflow versions tested on the baseline Python, and the one tested on every newer Python found.
BASE_PYTHON = "3.11"
AIRFLOW_ON_BASE_PYTHON = ["3.1.8", "3.2.2", "3.3.2"]
NEWER_PYTHONS = ["3.12", "3.13"]
AIRFLOW_ON_NEWER_PYTHONS = "3.3.2"

# Unit and integration only: the e2e and distributed suites need a deployment, and the cells install
# neither the distributed extra nor its services.
PYTEST_ARGS = [
    "-m",
    "not e2e and not distributed",
    "--ignore=tests/distributed",
    "-q",
    "-p",
    "no:cacheprovider",
    "-rfE",
]

INSTALL_TIMEOUT_S = 1800
TEST_TIMEOUT_S = 1800


@dataclass(frozen=True)
class Interpreter:
    version: str  # "3.12.1"
    executable: str  # the base (non-venv) interpreter
    found_as: str

    @property
    def minor(self) -> str:
        return ".".join(self.version.split(".")[:2])


@dataclass
class Cell:
    name: str
    airflow: str
    python: Interpreter
    install_ok: bool | None = None
    install_s: float = 0.0
    test_s: float = 0.0
    total_s: float = 0.0
    pytest_rc: int | None = None
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[dict[str, str]] = field(default_factory=list)
    note: str = ""

    @property
    def directory(self) -> Path:
        return MATRIX_DIR / self.name

    @property
    def ok(self) -> bool:
        return bool(self.install_ok) and self.pytest_rc == 0


_print_lock = threading.Lock()


def log(message: str) -> None:
    with _print_lock:
        print(message, flush=True)


# ---------------------------------------------------------------------------------------------
# Interpreters


_PROBE = (
    "import json, sys; print(json.dumps({'version': '%d.%d.%d' % sys.version_info[:3], "
    "'base': getattr(sys, '_base_executable', sys.executable), 'exe': sys.executable, "
    "'gil': getattr(sys, '_is_gil_enabled', lambda: True)()}))"
)


def _probe(candidate: str) -> dict[str, object] | None:
    try:
        out = subprocess.run(
            [candidate, "-c", _PROBE], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None  # e.g. a pyenv shim for a version that is installed but not selected
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


def discover_interpreters(minors: list[str]) -> dict[str, list[Interpreter]]:
    """Every distinct CPython of the given minor versions in pyenv/uv version dirs and on PATH."""
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    uv_root = Path(os.environ.get("UV_PYTHON_INSTALL_DIR", Path.home() / ".local/share/uv/python"))
    found: dict[str, list[Interpreter]] = {minor: [] for minor in minors}
    seen: set[str] = set()
    for minor in minors:
        candidates = [
            *sorted(glob.glob(str(pyenv_root / "versions" / "*" / "bin" / f"python{minor}"))),
            *sorted(glob.glob(str(uv_root / "*" / "bin" / f"python{minor}"))),
        ]
        for directory in os.environ.get("PATH", "").split(os.pathsep):
            path = Path(directory or ".") / f"python{minor}"
            if path.is_file() and os.access(path, os.X_OK):
                candidates.append(str(path))
        for candidate in candidates:
            info = _probe(candidate)
            if not info or not str(info["version"]).startswith(minor + ".") or not info["gil"]:
                continue
            base = os.path.realpath(str(info["base"]))
            if base in seen:
                continue
            seen.add(base)
            found[minor].append(Interpreter(str(info["version"]), base, candidate))
    return found


def base_interpreter(found: list[Interpreter]) -> Interpreter | None:
    """The 3.11 the Makefile uses (the one running this script), else the first one found."""
    if f"{sys.version_info[0]}.{sys.version_info[1]}" == BASE_PYTHON:
        base = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
        for interpreter in found:
            if interpreter.executable == base:
                return interpreter
        version = ".".join(map(str, sys.version_info[:3]))
        return Interpreter(version, base, "this script's interpreter")
    return found[0] if found else None


def plan_cells(found: dict[str, list[Interpreter]]) -> tuple[list[Cell], list[str]]:
    cells: list[Cell] = []
    missing: list[str] = []
    base = base_interpreter(found[BASE_PYTHON])
    if base is None:
        missing.append(BASE_PYTHON)
    else:
        cells += [Cell(f"py{BASE_PYTHON}-af{af}", af, base) for af in AIRFLOW_ON_BASE_PYTHON]
    for minor in NEWER_PYTHONS:
        interpreters = found[minor]
        if not interpreters:
            missing.append(minor)
        for interpreter in interpreters:
            label = interpreter.minor if len(interpreters) == 1 else interpreter.version
            cells.append(
                Cell(f"py{label}-af{AIRFLOW_ON_NEWER_PYTHONS}", AIRFLOW_ON_NEWER_PYTHONS, interpreter)
            )
    return cells, missing


# ---------------------------------------------------------------------------------------------
# One cell

_editable_lock = threading.Lock()


def _cell_env(venv: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        # A caller's Airflow settings or PYTHONPATH must not leak into the cell; PIP_* (an index
        # mirror, say) is kept.
        if not key.startswith(("AIRFLOW_", "PYTHON")) and key != "VIRTUAL_ENV"
    }
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


_children: set[subprocess.Popen[bytes]] = set()
_children_lock = threading.Lock()


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # the child and whatever it started


def _run(argv: list[str], logfile: Path, env: dict[str, str], timeout: float) -> int:
    with logfile.open("a") as out:
        out.write(f"\n$ {shlex.join(argv)}\n")
        out.flush()
        # Its own session, so a timeout or an interrupted run can kill the whole process tree.
        process = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        with _children_lock:
            _children.add(process)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            process.wait()
            out.write(f"\n!!! timed out after {timeout:.0f} s\n")
            return 124
        finally:
            with _children_lock:
                _children.discard(process)


def _interrupted(signum: int, frame: object) -> None:
    with _children_lock:
        for process in _children:
            _kill_group(process)
    print(f"\ninterrupted by signal {signum}; killed the running cell processes", flush=True)
    os._exit(128 + signum)


def _project_requirements(extras: list[str]) -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project.get("dependencies", []))
    for extra in extras:
        requirements += project.get("optional-dependencies", {}).get(extra, [])
    return requirements


def install(cell: Cell, env: dict[str, str]) -> bool:
    venv = cell.directory / "venv"
    logfile = cell.directory / "install.log"
    python = str(venv / "bin" / "python")
    constraints = CONSTRAINTS_DIR / f"airflow-{cell.airflow}.txt"
    if not constraints.is_file():
        logfile.write_text(f"missing {constraints}\n")
        return False
    pin = ["-c", str(constraints.relative_to(ROOT))]
    steps = [
        [cell.python.executable, "-m", "venv", str(venv)],
        [python, "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
        # The dependencies first, in parallel with other cells...
        [
            python,
            "-m",
            "pip",
            "install",
            f"apache-airflow=={cell.airflow}",
            *_project_requirements(["dev", "emulator"]),
            *pin,
        ],
    ]
    for argv in steps:
        if _run(argv, logfile, env, INSTALL_TIMEOUT_S) != 0:
            return False
    # ...then the project itself, one cell at a time: building the editable wheel writes
    # airflow_provider_crun.egg-info into the shared source tree.
    with _editable_lock:
        airflow = f"apache-airflow=={cell.airflow}"
        argv = [python, "-m", "pip", "install", airflow, "-e", ".[dev,emulator]", *pin]
        if _run(argv, logfile, env, INSTALL_TIMEOUT_S) != 0:
            return False
    freeze = subprocess.run(
        [python, "-m", "pip", "freeze", "--all"], capture_output=True, text=True, env=env, check=False
    )
    (cell.directory / "freeze.txt").write_text(freeze.stdout)
    return _run([python, "-m", "pip", "check"], logfile, env, 300) == 0


def _reason(element: ET.Element) -> str:
    """The error line: the junit message, or for a collection error the last ``E   `` line."""
    message = (element.get("message") or "").strip()
    if message and message != "collection failure":
        return message[:500]
    e_lines = [line[1:].strip() for line in (element.text or "").splitlines() if line.startswith("E ")]
    return (e_lines[-1] if e_lines else message)[:500]


def read_junit(cell: Cell, path: Path) -> None:
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0, "xfailed": 0}
    if not path.is_file():
        cell.counts = counts
        return
    root = ET.parse(path).getroot()
    for case in root.iter("testcase"):
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "errors", "skipped": "skipped"}[child.tag]
                if child.tag == "skipped" and child.get("type") == "pytest.xfail":
                    outcome = "xfailed"
                if child.tag != "skipped":
                    classname, name = case.get("classname", ""), case.get("name", "")
                    test_id = f"{classname}::{name}" if classname else name
                    cell.failures.append({"test": test_id, "kind": child.tag, "message": _reason(child)})
                break
        counts[outcome] += 1
    cell.counts = counts


def run_cell(cell: Cell) -> Cell:
    start = time.monotonic()
    shutil.rmtree(cell.directory, ignore_errors=True)
    cell.directory.mkdir(parents=True)
    venv = cell.directory / "venv"
    env = _cell_env(venv)
    log(f"[{cell.name}] installing apache-airflow=={cell.airflow} on Python {cell.python.version}")
    cell.install_ok = install(cell, env)
    cell.install_s = time.monotonic() - start
    if not cell.install_ok:
        cell.note = f"install failed, see {(cell.directory / 'install.log').relative_to(ROOT)}"
        cell.total_s = time.monotonic() - start
        log(f"[{cell.name}] INSTALL FAILED after {cell.install_s:.0f} s")
        return cell
    log(f"[{cell.name}] installed in {cell.install_s:.0f} s; running pytest")

    junit = cell.directory / "junit.xml"
    extra_args = shlex.split(os.environ.get("MATRIX_PYTEST_ARGS", ""))
    test_start = time.monotonic()
    cell.pytest_rc = _run(
        [str(venv / "bin" / "python"), "-m", "pytest", *PYTEST_ARGS, f"--junitxml={junit}", *extra_args],
        cell.directory / "pytest.log",
        env,
        TEST_TIMEOUT_S,
    )
    cell.test_s = time.monotonic() - test_start
    read_junit(cell, junit)
    if cell.pytest_rc not in (0, 1):
        cell.note = f"pytest exit {cell.pytest_rc}"

    cell.total_s = time.monotonic() - start
    c = cell.counts
    log(
        f"[{cell.name}] {'ok' if cell.ok else 'FAILED'}: {c['passed']} passed, {c['failed']} failed, "
        f"{c['errors']} errors in {cell.test_s:.0f} s (cell {cell.total_s:.0f} s)"
    )
    return cell


# ---------------------------------------------------------------------------------------------
# Report


def print_summary(cells: list[Cell], wall_s: float) -> None:
    headers = ["cell", "python", "install", "install s", "passed", "failed", "errors", "skipped", "xfailed"]
    headers += ["tests s", "cell s", "result"]
    rows = []
    for cell in cells:
        c = cell.counts or {}
        rows.append(
            [
                cell.name,
                cell.python.version,
                "ok" if cell.install_ok else "FAIL",
                f"{cell.install_s:.0f}",
                str(c.get("passed", "-")),
                str(c.get("failed", "-")),
                str(c.get("errors", "-")),
                str(c.get("skipped", "-")),
                str(c.get("xfailed", "-")),
                f"{cell.test_s:.0f}" if cell.pytest_rc is not None else "-",
                f"{cell.total_s:.0f}",
                ("PASS" if cell.ok else "FAIL") + (f" ({cell.note})" if cell.note else ""),
            ]
        )
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows, strict=False)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    print()
    print(line.format(*headers))
    print(line.format(*("-" * w for w in widths)))
    for row in rows:
        print(line.format(*row))
    print(f"\nwall time {wall_s:.0f} s")
    for cell in cells:
        if cell.failures:
            where = cell.directory.relative_to(ROOT)
            print(f"\n{cell.name}: {len(cell.failures)} failing (details in {where})")
            for failure in cell.failures:
                first = failure["message"].strip().splitlines()[0] if failure["message"].strip() else ""
                print(f"  {failure['kind']:7} {failure['test']}\n          {first[:200]}")


def main() -> int:
    jobs = max(1, int(os.environ.get("MATRIX_JOBS", "2")))
    require_all = os.environ.get("MATRIX_REQUIRE_ALL") == "1"
    selection = [s.strip() for s in os.environ.get("MATRIX_CELLS", "").split(",") if s.strip()]
    skipped = [s.strip() for s in os.environ.get("MATRIX_SKIP", "").split(",") if s.strip()]

    found = discover_interpreters([BASE_PYTHON, *NEWER_PYTHONS])
    print("Interpreters found:")
    for minor, interpreters in found.items():
        if not interpreters:
            print(f"  {minor}: none")
        for interpreter in interpreters:
            print(f"  {minor}: {interpreter.version} {interpreter.executable} (as {interpreter.found_as})")

    cells, missing = plan_cells(found)
    if selection:
        unknown = [s for s in selection if not any(fnmatch.fnmatch(c.name, s) for c in cells)]
        cells = [c for c in cells if any(fnmatch.fnmatch(c.name, s) for s in selection)]
        if unknown:
            print(f"MATRIX_CELLS entries matching no runnable cell: {', '.join(unknown)}")
    if skipped:
        dropped = [c.name for c in cells if any(fnmatch.fnmatch(c.name, s) for s in skipped)]
        cells = [c for c in cells if c.name not in dropped]
        print(f"MATRIX_SKIP drops: {', '.join(dropped) or 'nothing'}")
    print("Cells to run:")
    for cell in cells:
        print(f"  {cell.name}: apache-airflow=={cell.airflow} on {cell.python.executable}")
    for minor in missing:
        level = "ERROR" if require_all else "note"
        print(f"{level}: no Python {minor} interpreter found; its cells are skipped")
    if not cells:
        print("no cells to run")
        return 1

    MATRIX_DIR.mkdir(exist_ok=True)
    signal.signal(signal.SIGINT, _interrupted)
    signal.signal(signal.SIGTERM, _interrupted)
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        cells = list(pool.map(run_cell, cells))
    wall_s = time.monotonic() - start

    print_summary(cells, wall_s)
    summary = {
        "wall_s": round(wall_s, 1),
        "missing_pythons": missing,
        "cells": [
            {
                "cell": c.name,
                "airflow": c.airflow,
                "python": c.python.version,
                "interpreter": c.python.executable,
                "install_ok": c.install_ok,
                "install_s": round(c.install_s, 1),
                "test_s": round(c.test_s, 1),
                "total_s": round(c.total_s, 1),
                "pytest_rc": c.pytest_rc,
                "counts": c.counts,
                "failures": c.failures,
                "ok": c.ok,
            }
            for c in cells
        ],
    }
    (MATRIX_DIR / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    failed = [c.name for c in cells if not c.ok]
    if failed:
        print(f"\nFAILED cells: {', '.join(failed)}")
    if missing and require_all:
        print(f"MATRIX_REQUIRE_ALL=1 and Python {', '.join(missing)} missing")
    return 1 if failed or (missing and require_all) else 0


if __name__ == "__main__":
    sys.exit(main())
