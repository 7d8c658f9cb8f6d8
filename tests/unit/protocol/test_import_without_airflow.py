"""The protocol package is pure: it imports, and works, where Airflow cannot be imported at all."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import airflow_provider_crun

SCRIPT = textwrap.dedent(
    """
    import importlib
    import pkgutil
    import sys

    sys.modules["airflow"] = None  # any "import airflow..." now raises ImportError

    import airflow_provider_crun.protocol as protocol

    names = sorted(info.name for info in pkgutil.iter_modules(protocol.__path__))
    for name in names:
        importlib.import_module(f"airflow_provider_crun.protocol.{name}")

    from airflow_provider_crun.protocol import envelope, jobs

    data = envelope.parse_response(200, b'{"code": 200, "message": "ok", "data": {"status": "success"}}', {})
    print(" ".join(names))
    print(jobs.read_task(data, "t1").phase)
    print(sorted(name for name in sys.modules if name == "airflow" or name.startswith("airflow.")))
    """
)


def test_protocol_imports_and_runs_without_airflow() -> None:
    package_root = Path(airflow_provider_crun.__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(package_root), os.environ.get("PYTHONPATH", "")])}

    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, cwd=package_root, timeout=120
    )

    assert done.returncode == 0, done.stderr
    modules, phase, airflow_modules = done.stdout.splitlines()
    assert set(modules.split()) >= {
        "calls",
        "envelope",
        "errors",
        "jobs",
        "resume",
        "retry",
        "settings",
        "swap",
        "watch",
    }
    assert phase == "success"
    assert airflow_modules == "['airflow']"
