"""
What an end-to-end scenario gets from the suite's ``e2e`` fixture: :class:`E2E`.

Also the :class:`TriggerSampler`, which keeps every row the ``trigger`` table ever held.
"""

from __future__ import annotations

import atexit
import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_crun.testing.emulator import EmulatorProcess
from tests.support.airflow import scenarios
from tests.support.airflow.deployment import AirflowDeployment
from tests.support.s3 import MotoS3

#: A seed per emulator: task ids then differ between emulators, as they would on one Crun.
SEEDS = {backend.conn_id: seed for seed, backend in enumerate(scenarios.BACKENDS, start=1)}


class TriggerSampler:
    """
    Read the ``trigger`` table twice a second and keep every row ever seen, decrypted.

    Airflow deletes a trigger row soon after its task resumes, so the secret audit and the
    restart scenario need this history rather than a look at the end.

    :param db_path: The deployment's SQLite file.
    :param fernet_key: The key the deployment encrypts trigger kwargs with.
    """

    def __init__(self, db_path: Path, fernet_key: str) -> None:
        from cryptography.fernet import Fernet

        self.db_path = db_path
        self.fernet = Fernet(fernet_key.encode())
        self.rows: dict[tuple[int, str], dict[str, Any]] = {}
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="e2e-trigger-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def decrypt(self, stored: str) -> str:
        """The JSON text of stored kwargs (plain JSON, or a Fernet token)."""
        return stored if stored.startswith("{") else self.fernet.decrypt(stored.encode()).decode()

    def sample(self) -> None:
        """Read the table once."""
        try:
            db = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=2)
            try:
                rows = db.execute("SELECT id, classpath, kwargs, triggerer_id FROM trigger").fetchall()
            finally:
                db.close()
        except sqlite3.Error as error:
            self.errors.append(f"{type(error).__name__}: {error}")
            return
        with self._lock:
            for trigger_id, classpath, kwargs, triggerer_id in rows:
                # SQLite reuses the id of a deleted row, so the id alone does not name a trigger.
                key = (trigger_id, kwargs)
                if key not in self.rows:
                    self.rows[key] = {
                        "classpath": classpath,
                        "kwargs": self.decrypt(kwargs),
                        "triggerers": set(),
                    }
                if triggerer_id is not None:
                    self.rows[key]["triggerers"].add(triggerer_id)

    def snapshot(self) -> list[dict[str, Any]]:
        """Every trigger seen: ``classpath``, decrypted ``kwargs`` (JSON text), ``triggerers`` (job ids)."""
        with self._lock:
            return [{**value, "triggerers": set(value["triggerers"])} for value in self.rows.values()]

    def for_job(self, job_id: str, conn_id: str) -> list[dict[str, Any]]:
        """Every trigger whose kwargs name ``job_id`` on the connection ``conn_id``."""
        return [
            row
            for row in self.snapshot()
            if f'"{job_id}"' in row["kwargs"] and f'"crun_conn_id": "{conn_id}"' in row["kwargs"]
        ]

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            try:
                self.sample()
            except Exception as error:  # keep sampling; the audit reports what went wrong
                self.errors.append(f"{type(error).__name__}: {error}")


@dataclass
class E2E:
    """Everything a scenario needs: the deployment, the emulators by connection id, S3, the figures."""

    airflow: AirflowDeployment
    emulators: dict[str, EmulatorProcess]
    triggers: TriggerSampler
    s3: MotoS3
    results: dict[str, Any]

    @property
    def api(self) -> Any:
        return self.airflow.api

    def emulator(self, conn_id: str) -> EmulatorProcess:
        return self.emulators[conn_id]

    @contextlib.contextmanager
    def emulator_with(self, conn_id: str, *extra_args: str) -> Iterator[EmulatorProcess]:
        """
        Run the emulator behind ``conn_id`` with ``extra_args`` for a while, on the same port.

        The connections are environment variables of the Airflow components, fixed at start, and
        the emulator cannot change its task delays live; so the process is replaced by one with
        the extra arguments, and by one like the original afterwards (fresh state, same seed).
        Nothing else may use the backend meanwhile.
        """
        backend = next(backend for backend in scenarios.BACKENDS if backend.conn_id == conn_id)
        original = self.emulators[conn_id]
        port = urlsplit(original.url).port
        assert port is not None, original.url

        def replace(args: tuple[str, ...], seed: int | None) -> EmulatorProcess:
            self.emulators[conn_id].stop()
            process = EmulatorProcess(port=port, args=args, api_key=scenarios.API_KEY, seed=seed)
            atexit.register(process.stop)
            self.emulators[conn_id] = process.start()
            return process

        try:
            # No seed: its ids must not repeat the ones the original handed out this session.
            yield replace((*backend.args, *extra_args), None)
        finally:
            replace(backend.args, SEEDS[conn_id])

    def media_url(self, conn_id: str, name: str, faces: int) -> str:
        """An input image URL on the emulator behind ``conn_id``."""
        return f"{self.emulators[conn_id].url}/media/input/{name}.png?faces={faces}"

    def record(self, scenario: str, **figures: Any) -> None:
        """Keep one scenario's figures for the results file."""
        self.results.setdefault("scenarios", {})[scenario] = figures
