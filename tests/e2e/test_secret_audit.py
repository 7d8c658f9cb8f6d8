"""
(e) Secret audit, after every other scenario: the API keys appear nowhere Airflow keeps data.

Searched: every task and trigger log file, every component log, every text value of every table
of the metadata DB (Fernet tokens, such as trigger kwargs, decrypted first), the raw DB file
(freed pages included), every trigger's kwargs as sampled while it existed, and, through the REST
API, the rendered template fields and return-value XComs of every task instance of the runs.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet, InvalidToken

from tests.e2e import scenarios
from tests.e2e.conftest import E2E

pytestmark = pytest.mark.e2e

FERNET_PREFIX = "gAAAAA"
# The load run has hundreds of mapped task instances; their XComs are covered by the DB scan.
REST_XCOM_SKIP = ("example_crun_batch_face_swap",)


def leaks(text: str) -> list[str]:
    """The secrets that occur in ``text``."""
    return [secret for secret in scenarios.SECRETS if secret in text]


def readable(value: object, fernet: Fernet) -> str | None:
    """A DB value as text, with a Fernet token (encrypted trigger kwargs) decrypted."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if not isinstance(value, str):
        return None
    if value.startswith(FERNET_PREFIX):
        try:
            return fernet.decrypt(value.encode()).decode("utf-8", errors="replace")
        except InvalidToken:
            return value
    return value


def db_values(db_path: Path, fernet: Fernet) -> Iterator[tuple[str, str]]:
    """``(table.column, text)`` for every text or blob value in the DB."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            cursor = db.execute(f'SELECT * FROM "{table}"')
            columns = [column[0] for column in cursor.description]
            for row in cursor:
                for column, value in zip(columns, row, strict=True):
                    text = readable(value, fernet)
                    if text is not None:
                        yield f"{table}.{column}", text
    finally:
        db.close()


def test_api_key_never_stored_or_logged(e2e: E2E) -> None:
    airflow = e2e.airflow
    e2e.triggers.sample()
    found: list[str] = []
    checked: dict[str, int] = {}

    def check(where: str, text: str, kind: str) -> None:
        checked[kind] = checked.get(kind, 0) + 1
        found.extend(f"{secret!r} in {where}" for secret in leaks(text))

    for path in sorted(airflow.task_log_dir.rglob("*")):
        if path.is_file():
            check(
                str(path.relative_to(airflow.home)),
                path.read_text(errors="replace"),
                "task and trigger log files",
            )
    for name, text in airflow.component_logs().items():
        check(f"component log {name}", text, "component logs")

    fernet = Fernet(airflow.fernet_key.encode())
    for where, text in db_values(airflow.db_path, fernet):
        check(f"DB {where}", text, "DB values")
    check("raw DB file", airflow.db_path.read_bytes().decode("latin-1"), "raw DB file")
    for row in e2e.triggers.snapshot():
        check(f"trigger kwargs of {row['classpath']}", row["kwargs"], "trigger kwargs (sampled)")

    for ti in all_task_instances(e2e):
        where = f"{ti['dag_id']}/{ti['dag_run_id']}/{ti['task_id']}[{ti['map_index']}]"
        check(f"rendered fields of {where}", repr(ti.get("rendered_fields")), "rendered fields (REST)")
        if ti["dag_id"] not in REST_XCOM_SKIP and ti["state"] == "success":
            value = e2e.api.xcom(ti["dag_id"], ti["dag_run_id"], ti["task_id"], ti["map_index"])
            check(f"XCom of {where}", repr(value), "XCom values (REST)")

    e2e.record("secret_audit", secrets=len(scenarios.SECRETS), leaks=len(found), checked=checked)
    assert not found, "\n".join(found[:50])
    # The audit looked at real data: every source had something in it.
    for kind in ("task and trigger log files", "component logs", "DB values", "trigger kwargs (sampled)"):
        assert checked.get(kind, 0) > 0, f"nothing to audit in {kind}: {checked}"
    assert not e2e.triggers.errors, e2e.triggers.errors[-5:]


def all_task_instances(e2e: E2E) -> Iterator[dict[str, Any]]:
    """Every task instance of every run, through the REST API's ``~`` wildcards."""
    offset = 0
    while True:
        page = e2e.api.get("/dags/~/dagRuns/~/taskInstances", limit=100, offset=offset)
        yield from page["task_instances"]
        offset += len(page["task_instances"])
        if offset >= page["total_entries"] or not page["task_instances"]:
            return


def test_audit_would_find_a_leak(tmp_path: Path) -> None:
    """The scanner itself: a planted key in a Fernet token and in plain text are both found."""
    key = Fernet.generate_key()
    db_path = tmp_path / "planted.db"
    with sqlite3.connect(db_path) as db:
        db.execute("CREATE TABLE trigger (kwargs TEXT)")
        token = Fernet(key).encrypt(f'{{"x": "{scenarios.API_KEY}"}}'.encode()).decode()
        db.execute("INSERT INTO trigger VALUES (?), (?)", (token, f"plain {scenarios.WRONG_KEY}"))
    planted = [(where, leaks(text)) for where, text in db_values(db_path, Fernet(key)) if leaks(text)]
    assert planted == [("trigger.kwargs", [scenarios.API_KEY]), ("trigger.kwargs", [scenarios.WRONG_KEY])]
