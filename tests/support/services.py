"""
The machine's PostgreSQL and Redis, as the distributed suite uses them.

Both are services the machine starts before a session (127.0.0.1:5432 with trust auth for the
``postgres`` user, 127.0.0.1:6379). :func:`missing_services` says in one line which one does not
answer and how to start it; :class:`ScratchDatabase` and :class:`ScratchRedis` give a run a fresh
database and a Redis DB number of its own, and remove them afterwards.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_USER = "postgres"
REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379
#: The Redis DB numbers a run may claim, highest first (Celery's default, 0, is never used).
REDIS_DBS = range(15, 0, -1)
#: The key that marks a DB as one run's; a crashed run's claim expires.
REDIS_CLAIM_KEY = "crun-dist-claim"
REDIS_CLAIM_SECONDS = 3 * 3600

PG_START = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
REDIS_START = 'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no'


def _answers(host: str, port: int, probe: bytes, expect: bytes) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2) as sock:
            if not probe:
                return True
            sock.sendall(probe)
            return sock.recv(64).startswith(expect)
    except OSError:
        return False


def postgres_answers() -> bool:
    """Whether PostgreSQL accepts a connection as ``postgres`` (psycopg2 if installed, else TCP)."""
    try:
        import psycopg2
    except ImportError:
        return _answers(PG_HOST, PG_PORT, b"", b"")
    try:
        psycopg2.connect(
            host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", connect_timeout=3
        ).close()
    except psycopg2.Error:
        return False
    return True


def redis_answers() -> bool:
    """Whether Redis answers ``PING``."""
    return _answers(REDIS_HOST, REDIS_PORT, b"PING\r\n", b"+PONG")


def missing_services() -> str | None:
    """``None`` when PostgreSQL and Redis both answer, else one line: what is missing, how to start it."""
    missing = []
    if not postgres_answers():
        missing.append(f"PostgreSQL on {PG_HOST}:{PG_PORT} (start: {PG_START})")
    if not redis_answers():
        missing.append(f"Redis on {REDIS_HOST}:{REDIS_PORT} (start: {REDIS_START})")
    return "; ".join(missing) or None


def missing_packages() -> str | None:
    """``None`` when the ``distributed`` extra is installed, else what is missing."""
    from importlib.util import find_spec

    needed = {"airflow.providers.celery": "apache-airflow-providers-celery", "psycopg2": "psycopg2-binary"}
    needed |= {"redis": "redis", "asyncpg": "asyncpg"}
    absent = sorted(package for module, package in needed.items() if find_spec(module) is None)
    return f"{', '.join(absent)} (pip install -e '.[distributed]')" if absent else None


@dataclass
class ScratchDatabase:
    """A PostgreSQL database created for one run and dropped after it (connections terminated first)."""

    name: str = field(default_factory=lambda: f"crun_dist_{secrets.token_hex(4)}")

    @property
    def url(self) -> str:
        """The SQLAlchemy URL Airflow connects with."""
        return f"postgresql+psycopg2://{PG_USER}@{PG_HOST}:{PG_PORT}/{self.name}"

    @property
    def celery_result_backend(self) -> str:
        return f"db+postgresql+psycopg2://{PG_USER}@{PG_HOST}:{PG_PORT}/{self.name}"

    def _admin(self, sql: str) -> None:
        import psycopg2

        conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cursor:
                cursor.execute(sql)
        finally:
            conn.close()

    def create(self) -> ScratchDatabase:
        self._admin(f'CREATE DATABASE "{self.name}"')
        return self

    def drop(self) -> None:
        """Drop the database, whoever is still connected to it; safe to call twice."""
        self._admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{self.name}' AND pid <> pg_backend_pid()"
        )
        self._admin(f'DROP DATABASE IF EXISTS "{self.name}"')

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of one read-only statement, on a short-lived connection."""
        import psycopg2

        conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=self.name, connect_timeout=3)
        try:
            with conn.cursor() as cursor:
                cursor.execute(sql, params)
                return list(cursor.fetchall())
        finally:
            conn.close()


@dataclass
class ScratchRedis:
    """
    One Redis DB number of this run's own, flushed when the run ends.

    :meth:`claim` takes an empty DB and marks it, so two runs on one machine never share one.
    """

    db: int

    @classmethod
    def claim(cls) -> ScratchRedis:
        """
        The highest-numbered empty DB, marked as this run's.

        :raises RuntimeError: every DB holds keys (runs in progress, or a crashed run's leftovers).
        """
        for db in REDIS_DBS:
            broker = cls(db)
            with contextlib.closing(broker.client()) as client:
                if client.dbsize() == 0 and client.set(
                    REDIS_CLAIM_KEY, str(os.getpid()), nx=True, ex=REDIS_CLAIM_SECONDS
                ):
                    return broker
        raise RuntimeError(
            f"No empty Redis DB among {REDIS_DBS.stop + 1}-{REDIS_DBS.start} on {REDIS_HOST}:{REDIS_PORT}: "
            "other runs hold them, or crashed runs left keys behind (redis-cli -n N flushdb frees DB N)."
        )

    @property
    def url(self) -> str:
        return f"redis://{REDIS_HOST}:{REDIS_PORT}/{self.db}"

    def client(self) -> Any:
        import redis

        return redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=self.db, socket_timeout=5)

    def flush(self) -> None:
        with contextlib.closing(self.client()) as client:
            client.flushdb()

    def values(self) -> Iterator[bytes]:
        """Every key, and every value of every key (list items, hash fields and values, members)."""
        with contextlib.closing(self.client()) as client:
            for key in client.scan_iter(count=500):
                yield key
                kind = client.type(key)
                if kind == b"string":
                    items: list[bytes] = [client.get(key) or b""]
                elif kind == b"list":
                    items = client.lrange(key, 0, -1)
                elif kind == b"hash":
                    items = [part for pair in client.hgetall(key).items() for part in pair]
                elif kind == b"set":
                    items = list(client.smembers(key))
                elif kind == b"zset":
                    items = list(client.zrange(key, 0, -1))
                else:
                    items = []
                yield from items


def decoded_forms(value: bytes) -> list[bytes]:
    """``value`` and, when it holds Celery/kombu base64 bodies, their decoded text too."""
    forms = [value]
    for token in value.replace(b'"', b" ").split():
        if len(token) >= 16 and len(token) % 4 == 0:
            with contextlib.suppress(ValueError):
                forms.append(base64.b64decode(token, validate=True))
    return forms
