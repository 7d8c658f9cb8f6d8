"""Fixtures of the storage tests: a loopback CDN and a destination folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_crun.storage import StoredMedia, store_results
from tests.support.media_server import MediaServer

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
TASK = "task_12345678"


@pytest.fixture(autouse=True)
def _offline_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    Keep botocore's credential chain on this machine.

    Building an ``s3://`` path resolves its filesystem, and without credentials botocore would ask
    the EC2 metadata endpoint: dummy keys end the chain first, and the endpoint is disabled anyway.
    """
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture
def cdn() -> Iterator[MediaServer]:
    """A loopback CDN, stopped after the test."""
    with MediaServer() as server:
        yield server


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """A destination folder that does not exist yet: ``store_results`` creates it."""
    return tmp_path / "results" / "2026-01-01"


def listing(folder: Path) -> list[str]:
    """Every name in ``folder``, hidden ones included, sorted."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def store_into(out: Path, urls: list[str], **kwargs: object) -> list[StoredMedia]:
    """``store_results`` for ``TASK`` into ``file://<out>/``, 10 s per request."""
    kwargs.setdefault("timeout", 10)
    return store_results(urls, crun_task_id=TASK, destination=f"file://{out}/", **kwargs)  # type: ignore[arg-type]
