"""
`make demo`: run the multi-face-swap example DAG end to end, offline, and show the result.

Starts the Crun emulator on loopback, prepares a throwaway AIRFLOW_HOME on SQLite, runs
``airflow dags test example_crun_multi_face_swap`` and prints the detected faces, the swap task
id, where the result image was stored (``output_path``, under ``.demo/results/``) and the asset
event announcing it. It then checks that the stored image differs from the input in exactly the
swapped face's region. Exits non-zero if anything failed; the
emulator is stopped in every case.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from airflow_provider_crun.testing.emulator import EmulatorProcess, changed_faces

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".demo"
DAG_ID = "example_crun_multi_face_swap"
API_KEY = "demo-key-not-a-real-crun-key"
SWAPPED_FACE = 1
FACE_COUNT = 3


def step(message: str) -> None:
    print(f"==> {message}", flush=True)


def airflow_env(emulator_url: str, home: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
    connection = {"conn_type": "crun", "host": emulator_url, "password": API_KEY, "extra": {"timeout": 10}}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "example_dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        # An env-var connection: under `airflow dags test`, async lookups of DB-only connections fail.
        AIRFLOW_CONN_CRUN_DEFAULT=json.dumps(connection),
        CRUN_EXAMPLE_MEDIA_BASE=emulator_url,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    )
    return env


def run_airflow(args: list[str], env: dict[str, str], log: Path) -> None:
    airflow = Path(sys.executable).parent / "airflow"
    with log.open("a") as out:
        result = subprocess.run(
            [str(airflow), *args], env=env, stdout=out, stderr=subprocess.STDOUT, timeout=300
        )
    if result.returncode != 0:
        tail = log.read_text().splitlines()[-40:]
        raise SystemExit(f"`airflow {' '.join(args)}` failed (exit {result.returncode}):\n" + "\n".join(tail))


def read_xcom(home: Path, task_id: str) -> Any:
    with sqlite3.connect(home / "airflow.db") as db:
        row = db.execute(
            "SELECT value FROM xcom WHERE dag_id = ? AND task_id = ? AND key = 'return_value' "
            "ORDER BY timestamp DESC LIMIT 1",
            (DAG_ID, task_id),
        ).fetchone()
    if row is None:
        raise SystemExit(f"No XCom from task {task_id!r}: the DAG run did not get that far.")
    value = row[0]
    return json.loads(value) if isinstance(value, (str, bytes)) else value


def read_asset_event(home: Path) -> str:
    """The newest asset event, as the scheduler would see it: the asset and the event's extra."""
    with sqlite3.connect(home / "airflow.db") as db:
        row = db.execute(
            "SELECT asset.name, asset_event.extra FROM asset_event "
            "JOIN asset ON asset.id = asset_event.asset_id ORDER BY asset_event.timestamp DESC LIMIT 1"
        ).fetchone()
    return "none" if row is None else f"{row[0]} {row[1]}"


def main() -> int:
    started = time.monotonic()
    shutil.rmtree(WORK, ignore_errors=True)
    home, results = WORK / "airflow-home", WORK / "results"
    home.mkdir(parents=True)
    log = WORK / "airflow.log"
    step("Starting the Crun emulator on 127.0.0.1")
    with EmulatorProcess(
        args=["--api-key", API_KEY, "--detect-delays", "0.5,0.5", "--task-delays", "1,2"]
    ) as emu:
        env = airflow_env(emu.url, home)
        step(f"Emulator at {emu.url}; preparing a throwaway Airflow home on SQLite ({home})")
        run_airflow(["db", "migrate"], env, log)
        step(f"Running `airflow dags test {DAG_ID}` (deferrable operators, triggers run inline)")
        conf = {"output_path": results.as_uri() + "/"}
        run_airflow(["dags", "test", DAG_ID, "--conf", json.dumps(conf)], env, log)

        detection, swap = (read_xcom(home, task) for task in ("detect_faces", "swap_faces"))
        (stored_uri,) = swap["stored_paths"]
        stored_file = Path(stored_uri.removeprefix("file://"))
        print()
        print(f"Detected faces in {detection['image_url']}:")
        for face in detection["faces"]:
            print(f"  face {face['id']}: {face['link']}")
        print(f"detect_id:        {detection['detect_id']} (valid until {detection['expires_at']})")
        print(f"Swap task id:     {swap['crun_task_id']} ({swap['status']}, {swap.get('credits')} credits)")
        print(f"Result URL:       {swap['media_urls'][0]}")
        print(f"Stored at:        {stored_file} ({stored_file.stat().st_size} bytes)")
        print(f"Asset event:      {read_asset_event(home)}")

        with urllib.request.urlopen(detection["image_url"], timeout=10) as response:
            input_png = response.read()
        changed = changed_faces(input_png, stored_file.read_bytes(), FACE_COUNT)
        print(f"Changed regions:  faces {changed} (asked to swap face {SWAPPED_FACE}; the rest kept)")
        state = emu.state()
        print(f"Emulator saw:     {json.dumps(state.get('counts', {}), sort_keys=True)}")
        print(f"Airflow log:      {log}")
    if changed != [SWAPPED_FACE]:
        print(f"FAILED: expected exactly face {SWAPPED_FACE} to change, got {changed}", file=sys.stderr)
        return 1
    print(f"\nDemo finished in {time.monotonic() - started:.1f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
