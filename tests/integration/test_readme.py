"""The README's DAG snippet, exactly as printed, runs end to end against the emulator."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_provider_crun.testing.emulator import CrunEmulator

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"
# The snippet writes where it says it does; the test removes only the files this run created.
SNIPPET_OUTPUT = Path("/tmp/crun-results")


def readme_dag_snippet() -> str:
    """The first ``python`` block of the README: the DAG a new user copies."""
    (snippet, *_) = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert "with DAG(" in snippet, "the README's first Python block is no longer the DAG snippet"
    return snippet


def airflow(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    binary = Path(sys.executable).parent / "airflow"
    return subprocess.run([str(binary), *args], env=env, capture_output=True, text=True, timeout=600)


def test_readme_snippet_runs_as_printed(tmp_path: Path) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "readme_snippet.py").write_text(readme_dag_snippet())
    before = set(SNIPPET_OUTPUT.glob("*")) if SNIPPET_OUTPUT.exists() else set()
    with CrunEmulator(detect_delays=(0.2, 0.2), task_delays=(0.3, 0.5)) as emulator:
        env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
        env.update(
            AIRFLOW_HOME=str(tmp_path / "home"),
            AIRFLOW__CORE__DAGS_FOLDER=str(dags),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW_CONN_CRUN_DEFAULT=json.dumps(json.loads(emulator.connection_uri())),
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        )
        migrated = airflow(["db", "migrate"], env)
        assert migrated.returncode == 0, migrated.stdout[-3000:] + migrated.stderr[-3000:]
        run = airflow(["dags", "test", "swap_faces"], env)
        assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-5000:]
        counts = dict(emulator.counts)
    created = sorted(set(SNIPPET_OUTPUT.glob("*")) - before)
    try:
        assert (counts["detect-face-image"], counts["CreateTask"]) == (1, 1)
        assert [path.suffix for path in created] == [".png"], created
        assert re.fullmatch(r"task_\w+_0\.png", created[0].name), created
    finally:
        for path in created:
            path.unlink()
