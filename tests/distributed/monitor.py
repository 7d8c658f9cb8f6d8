"""
Watch the metadata DB and the broker while a run goes on.

Trigger rows disappear soon after their task resumes, and Celery messages leave Redis once a
worker acknowledges them, so the figures (each triggerer's share, adoption, the peak of deferred
tasks) and the secret audit of trigger kwargs and broker messages need a history, not a look at
the end. A PostgreSQL restart makes some samples fail; those are counted, not fatal.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tests.support.services import ScratchDatabase, ScratchRedis, decoded_forms


@dataclass
class TriggerRow:
    """One trigger as seen over time."""

    classpath: str
    first_triggerer: int | None = None
    triggerers: set[int] = field(default_factory=set)


class Monitor:
    """
    Sample the ``trigger`` and ``task_instance`` tables twice a second, and Redis every few seconds.

    :param database: The deployment's database.
    :param broker: The Celery broker's Redis DB.
    :param fernet_key: Decrypts trigger kwargs, so the audit reads them as a triggerer does.
    :param secret: The string the audit looks for.
    """

    def __init__(self, database: ScratchDatabase, broker: ScratchRedis, fernet_key: str, secret: str) -> None:
        from cryptography.fernet import Fernet

        self.database = database
        self.broker = broker
        self.fernet = Fernet(fernet_key.encode())
        self.secret = secret.encode()
        self.triggers: dict[int, TriggerRow] = {}
        self.peak_deferred = 0
        self.sample_errors: Counter[str] = Counter()
        self.audit: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="dist-monitor", daemon=True)

    def start(self) -> Monitor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    # -- samples --------------------------------------------------------------------------------

    def sample_db(self) -> None:
        rows = self.database.query("SELECT id, classpath, kwargs, triggerer_id FROM trigger")
        deferred = self.database.query("SELECT count(*) FROM task_instance WHERE state = 'deferred'")
        with self._lock:
            self.peak_deferred = max(self.peak_deferred, int(deferred[0][0]))
            for trigger_id, classpath, kwargs, triggerer_id in rows:
                row = self.triggers.get(trigger_id)
                if row is None:
                    row = self.triggers[trigger_id] = TriggerRow(classpath)
                    text = kwargs if kwargs.startswith("{") else self.fernet.decrypt(kwargs.encode()).decode()
                    self.audit["trigger_kwargs_searched"] += 1
                    self.audit["trigger_kwargs_hits"] += text.encode().count(self.secret)
                if triggerer_id is not None:
                    if row.first_triggerer is None:
                        row.first_triggerer = triggerer_id
                    row.triggerers.add(triggerer_id)

    def sample_redis(self) -> None:
        searched = hits = 0
        for value in self.broker.values():
            searched += 1
            hits += sum(form.count(self.secret) for form in decoded_forms(value))
        with self._lock:
            self.audit["redis_values_searched"] += searched
            self.audit["redis_hits"] += hits
            self.audit["redis_snapshots"] += 1

    def _loop(self) -> None:
        next_redis = 0.0
        while not self._stop.wait(0.5):
            for name, sample in (("db", self.sample_db), ("redis", self.sample_redis)):
                if name == "redis" and time.monotonic() < next_redis:
                    continue
                try:
                    sample()
                except Exception as error:  # a DB restart, a busy moment: count it, keep going
                    self.sample_errors[f"{name}: {type(error).__name__}"] += 1
            if time.monotonic() >= next_redis:
                next_redis = time.monotonic() + 3.0

    # -- figures --------------------------------------------------------------------------------

    def assigned_to(self, job_id: int) -> set[int]:
        """Ids of the triggers now in the table that ``job_id`` runs."""
        rows = self.database.query("SELECT id FROM trigger WHERE triggerer_id = %s", (job_id,))
        return {int(row[0]) for row in rows}

    def triggerer_of(self, trigger_ids: set[int]) -> dict[int, int | None]:
        """The current triggerer of each of ``trigger_ids`` still in the table."""
        if not trigger_ids:
            return {}
        rows = self.database.query(
            "SELECT id, triggerer_id FROM trigger WHERE id = ANY(%s)", (sorted(trigger_ids),)
        )
        return {int(trigger_id): triggerer for trigger_id, triggerer in rows}

    def shares(self, names: dict[int, str]) -> dict[str, Any]:
        """How many triggers each triggerer ran (first assignment, and ever), by component name."""
        with self._lock:
            rows = list(self.triggers.values())
        first = Counter(names.get(row.first_triggerer or -1, "unassigned") for row in rows)
        ever = Counter(names.get(job, str(job)) for row in rows for job in row.triggerers)
        return {"triggers_seen": len(rows), "first_assigned": dict(first), "ran_at_some_point": dict(ever)}
