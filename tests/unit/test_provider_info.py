"""Provider registration: schema, entry point, and what Airflow's CLI shows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import airflow
import jsonschema
import pytest

from airflow_provider_crun import __version__
from airflow_provider_crun.get_provider_info import get_provider_info


def test_matches_airflow_schema() -> None:
    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    jsonschema.validate(get_provider_info(), schema)


def test_entry_point_and_package_name() -> None:
    (entry_point,) = [
        ep
        for ep in entry_points(group="apache_airflow_provider")
        if ep.value.startswith("airflow_provider_crun")
    ]
    info = entry_point.load()()
    assert info["package-name"] == entry_point.dist.name == "airflow-provider-crun"  # type: ignore[union-attr]
    assert info["versions"] == [__version__]


def test_connection_form_is_declarative() -> None:
    (connection,) = get_provider_info()["connection-types"]
    assert connection["connection-type"] == "crun"
    assert set(connection["conn-fields"]) == {"timeout", "max_retries", "proxy", "min_balance", "ca_bundle"}
    behaviour = connection["ui-field-behaviour"]
    assert set(behaviour["hidden-fields"]) == {"schema", "port", "login"}
    assert behaviour["relabeling"]["password"] == "API key"
    assert behaviour["placeholders"]["host"] == "https://api.crun.ai"


def test_listed_modules_import() -> None:
    import importlib

    info = get_provider_info()
    for section in ("hooks", "operators", "sensors", "triggers"):
        for entry in info[section]:
            for module in entry["python-modules"]:
                importlib.import_module(module)
    module, _, name = info["connection-types"][0]["hook-class-name"].rpartition(".")
    hook_class = getattr(importlib.import_module(module), name)
    assert (hook_class.conn_type, hook_class.conn_name_attr, hook_class.hook_name) == (
        "crun",
        "crun_conn_id",
        "Crun",
    )


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["providers", "list"], "airflow-provider-crun"),
        (["providers", "hooks"], "airflow_provider_crun.hooks.crun.CrunHook"),
    ],
    ids=["providers-list", "providers-hooks"],
)
def test_airflow_cli_shows_provider(command: list[str], expected: str, tmp_path: Path) -> None:
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path)}
    airflow_cli = Path(sys.executable).parent / "airflow"
    result = subprocess.run(
        [str(airflow_cli), *command], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert expected in result.stdout
    assert "crun" in result.stdout
