"""Fixtures of the storage tests: a loopback CDN and a destination folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.media_server import MediaServer


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
