"""
(e) Secret audit on the real stores: the API key appears nowhere Airflow or the provider writes.

Searched after the batch with its kills: a ``pg_dump`` of the metadata DB; every file under the
deployment's home (component and task logs); every Redis key and value of the broker, sampled
every few seconds during the run (Celery messages included, base64 bodies decoded) and once
more now; every object stored in S3; and every trigger's kwargs, decrypted, as sampled during
the run.
"""

from __future__ import annotations

import re

import pytest
from cryptography.fernet import Fernet, InvalidToken

from tests.distributed.chaos import Chaos
from tests.distributed.context import Dist
from tests.support.airflow.scenarios import API_KEY

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(900)]

FERNET_TOKEN = re.compile(rb"gAAAAA[A-Za-z0-9_\-]+=*")


def _decrypts(fernet: Fernet, token: bytes) -> bool:
    try:
        fernet.decrypt(token)
    except InvalidToken:
        return False
    return True


def test_api_key_is_in_no_store(dist: Dist, chaos: Chaos) -> None:
    secret = API_KEY.encode()
    monitor = dist.monitor
    monitor.stop()
    monitor.sample_redis()
    dump = dist.cluster.pg_dump()
    dump_lines = dump.count(b"\n")
    # Encrypted values (trigger kwargs, connection passwords) are searched decrypted as well.
    fernet = Fernet(dist.cluster.fernet_key.encode())
    tokens = [token for token in FERNET_TOKEN.findall(dump) if _decrypts(fernet, token)]
    token_hits = sum(fernet.decrypt(token).count(secret) for token in tokens)
    log_files = [path for path in dist.cluster.home.rglob("*") if path.is_file() and path.suffix != ".py"]
    log_hits = {str(path): path.read_bytes().count(secret) for path in log_files}
    keys = list(dist.s3.objects(dist.bucket))
    object_hits = {key: dist.s3.read(dist.bucket, key).count(secret) for key in keys}
    figures = {
        "pg_dump_bytes": len(dump),
        "pg_dump_lines": dump_lines,
        "pg_dump_hits": dump.count(secret),
        "pg_dump_fernet_values_decrypted": len(tokens),
        "pg_dump_fernet_hits": token_hits,
        "files_searched": len(log_files),
        "file_bytes_searched": sum(path.stat().st_size for path in log_files),
        "file_hits": sum(log_hits.values()),
        "redis_values_searched": monitor.audit["redis_values_searched"],
        "redis_snapshots": monitor.audit["redis_snapshots"],
        "redis_hits": monitor.audit["redis_hits"],
        "stored_objects_searched": len(keys),
        "stored_object_hits": sum(object_hits.values()),
        "trigger_kwargs_searched": monitor.audit["trigger_kwargs_searched"],
        "trigger_kwargs_hits": monitor.audit["trigger_kwargs_hits"],
    }
    dist.record("e_secret_audit", **figures)
    assert b"CREATE TABLE" in dump, "the dump looks empty"
    assert dump_lines > 1000, "the dump looks empty"
    for searched in ("files_searched", "stored_objects_searched", "redis_values_searched"):
        assert figures[searched] > 0, figures
    assert figures["trigger_kwargs_searched"] > 0, figures
    assert figures["pg_dump_hits"] == 0, figures
    assert figures["pg_dump_fernet_hits"] == 0, figures
    assert figures["file_hits"] == 0, {path: hits for path, hits in log_hits.items() if hits}
    assert figures["redis_hits"] == 0, figures
    assert figures["stored_object_hits"] == 0, figures
    assert figures["trigger_kwargs_hits"] == 0, figures
