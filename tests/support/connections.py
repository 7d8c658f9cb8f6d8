"""The ``crun`` connection the unit and integration tests use, as an ``AIRFLOW_CONN_*`` value."""

from __future__ import annotations

import json
from pathlib import Path

#: The repository's example DAGs (``dag.test()`` runs only a DAG whose file is in the dags folder).
EXAMPLE_DAGS = Path(__file__).resolve().parents[2] / "example_dags"
#: Recognisable, so a leak shows up in any text searched for it.
TEST_API_KEY = "crun-test-key-5ecr3t-7f3a9b"
TEST_BASE = "http://127.0.0.1:8089"


def crun_connection_json(host: str = TEST_BASE, api_key: str | None = TEST_API_KEY, **extra: object) -> str:
    """An ``AIRFLOW_CONN_*`` value for a ``crun`` connection."""
    conn: dict[str, object] = {"conn_type": "crun", "host": host, "extra": extra}
    if api_key is not None:
        conn["password"] = api_key
    return json.dumps(conn)
