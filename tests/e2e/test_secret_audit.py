"""
(e) Secret audit: the API keys appear nowhere Airflow keeps data.

The audit makes its own activity first, so it never depends on what other tests left: a
deferrable swap run that succeeds (its trigger kwargs, logs and XComs), and a run whose
connection sends the wrong key (Crun's 401 in a failed task's log). It runs last, so it also
audits every other scenario's data.

Searched: every task and trigger log file, every component log, every text value of every table
of the metadata DB (Fernet tokens, such as trigger kwargs, decrypted first), the raw DB file
(freed pages included), every trigger's kwargs as sampled while it existed, and, through the REST
API, the rendered template fields and return-value XComs of every task instance of the runs.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet, InvalidToken

from tests.e2e.context import E2E
from tests.support.airflow import scenarios
from tests.support.airflow.checks import by_task, local_file, log_of, output_folder

pytestmark = pytest.mark.e2e

FERNET_PREFIX = "gAAAAA"
# The load run has hundreds of mapped task instances; their XComs are covered by the DB scan.
REST_XCOM_SKIP = ("example_crun_batch_face_swap",)
OWN_RUN_TIMEOUT = 180
OWN_DAGS = (scenarios.AUDIT_DAG.dag_id, scenarios.AUDIT_WRONG_KEY_DAG.dag_id)


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


def make_own_activity(e2e: E2E, describe: Any, output_root: Path) -> dict[str, Any]:
    """
    Run a deferrable swap that succeeds and a swap whose connection sends the wrong key; check
    that each did what the audit needs (a trigger with the key's connection, Crun's 401).
    """
    started = time.monotonic()
    happy, wrong = scenarios.AUDIT_DAG, scenarios.AUDIT_WRONG_KEY_DAG
    runs: dict[str, tuple[str, str]] = {}
    for dag in (happy, wrong):
        e2e.emulator(dag.conn_id).reset(everything=True)
        conf = {
            "image_url": e2e.media_url(dag.conn_id, f"audit-{dag.conn_id}", 2),
            "faces": {"1": e2e.media_url(dag.conn_id, "new-face", 1)},
            "output_path": output_folder(output_root / dag.dag_id),
        }
        runs[dag.dag_id] = (dag.dag_id, e2e.api.trigger(dag.dag_id, conf))
    finished = e2e.api.wait_for_runs(list(runs.values()), timeout=OWN_RUN_TIMEOUT)

    assert finished[runs[happy.dag_id]]["state"] == "success", describe(*runs[happy.dag_id])
    swap = e2e.api.xcom(*runs[happy.dag_id], "swap_faces")
    assert [local_file(path).is_file() for path in swap["stored_paths"]] == [True]
    e2e.triggers.sample()
    assert e2e.triggers.for_job(swap["crun_task_id"], happy.conn_id), "the audit's swap did not defer"

    assert finished[runs[wrong.dag_id]]["state"] == "failed", describe(*runs[wrong.dag_id])
    detect = by_task(e2e.api.task_instances(*runs[wrong.dag_id]))["detect_faces"]
    assert (detect["state"], detect["try_number"]) == ("failed", 1)
    log = log_of(e2e.api, *runs[wrong.dag_id], "detect_faces", 1)
    assert "API key missing or invalid" in log, log[-3000:]
    wrong_state = e2e.emulator(wrong.conn_id).state()
    # The wrong key reached Crun once and was refused: nothing created, nothing billed.
    assert (wrong_state["counts"]["detect-face-image"], wrong_state["detections_created"]) == (1, 0)
    return {"own_runs": len(runs), "own_runs_wall_s": round(time.monotonic() - started, 1)}


def test_api_key_never_stored_or_logged(e2e: E2E, describe: Any, tmp_path: Path) -> None:
    airflow = e2e.airflow
    own = make_own_activity(e2e, describe, tmp_path)
    e2e.triggers.sample()
    found: list[str] = []
    checked: dict[str, int] = {}

    def check(where: str, text: str, kind: str) -> None:
        checked[kind] = checked.get(kind, 0) + 1
        if any(dag_id in where for dag_id in OWN_DAGS):
            checked[f"{kind}, own runs"] = checked.get(f"{kind}, own runs", 0) + 1
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
            entry = e2e.api.request(
                "GET",
                f"/dags/{ti['dag_id']}/dagRuns/{ti['dag_run_id']}/taskInstances/{ti['task_id']}"
                "/xcomEntries/return_value",
                ok=(200, 404),  # a task that returned None has no XCom
                params={"map_index": ti["map_index"]},
            )
            if entry and "value" in entry:
                check(f"XCom of {where}", repr(entry["value"]), "XCom values (REST)")

    e2e.record("secret_audit", secrets=len(scenarios.SECRETS), leaks=len(found), checked=checked, **own)
    assert not found, "\n".join(found[:50])
    # The audit looked at real data, its own runs' included: every source had something in it.
    for kind in (
        "task and trigger log files, own runs",
        "component logs",
        "DB values",
        "trigger kwargs (sampled)",
        "rendered fields (REST), own runs",
        "XCom values (REST), own runs",
    ):
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
