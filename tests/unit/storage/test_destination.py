"""Resolving a destination (URI, path or ObjectStoragePath, plus conn_id) and naming it back."""

from __future__ import annotations

from pathlib import Path

import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_crun.storage import StorageConfigError, public_uri, resolve_destination
from airflow_provider_crun.storage.destination import conn_id_of


@pytest.mark.parametrize(
    ("destination", "conn_id", "expected_conn", "expected_uri"),
    [
        ("s3://aws_unit@bucket/crun/2026-01-01/", None, "aws_unit", "s3://bucket/crun/2026-01-01"),
        ("s3://bucket/crun/", "aws_unit", "aws_unit", "s3://bucket/crun"),
        ("s3://aws_unit@bucket/crun/", "aws_unit", "aws_unit", "s3://bucket/crun"),
        ("s3://bucket/", None, None, "s3://bucket/"),
        ("file:///data/out/", None, None, "file:///data/out"),
        ("/data/out", None, None, "file:///data/out"),
        (Path("/data/out"), None, None, "file:///data/out"),
    ],
    ids=["conn-in-uri", "conn-kwarg", "same-conn-twice", "bucket-root", "file-uri", "abs-path", "pathlib"],
)
def test_resolves_uri_and_conn_id(
    destination: str | Path, conn_id: str | None, expected_conn: str | None, expected_uri: str
) -> None:
    folder = resolve_destination(destination, conn_id)

    assert isinstance(folder, ObjectStoragePath)
    assert conn_id_of(folder) == expected_conn
    assert public_uri(folder) == expected_uri


def test_object_storage_path_gets_the_conn_id() -> None:
    folder = resolve_destination(ObjectStoragePath("s3://bucket/crun/"), "aws_unit")

    assert conn_id_of(folder) == "aws_unit"
    assert public_uri(folder, "task_1_0.png") == "s3://bucket/crun/task_1_0.png"


def test_object_storage_path_is_kept_as_it_is() -> None:
    path = ObjectStoragePath("s3://aws_unit@bucket/crun/")

    assert resolve_destination(path) is path
    assert resolve_destination(path, "aws_unit") is path


@pytest.mark.parametrize(
    ("destination", "conn_id", "message"),
    [
        ("s3://aws_a@bucket/x/", "aws_b", "uses connection 'aws_a', but conn_id='aws_b'"),
        (ObjectStoragePath("s3://aws_a@bucket/x/"), "aws_b", "uses connection 'aws_a', but conn_id='aws_b'"),
        ("relative/out", None, "is relative"),
        ("https://cdn.example/out/", None, "read-only http"),
        ("file://data/out", None, "names a host"),
        ("file://localhost/data/out", None, "names a host"),
        ("s3:///key", None, "names no bucket"),
        ("", None, "not a folder"),
        (None, None, "not a folder"),
    ],
    ids=[
        "two-conn-ids",
        "two-conn-ids-path",
        "relative",
        "http",
        "file-host",
        "file-localhost",
        "no-bucket",
        "empty",
        "none",
    ],
)
def test_refuses_unusable_destinations(destination: object, conn_id: str | None, message: str) -> None:
    with pytest.raises(StorageConfigError, match=message):
        resolve_destination(destination, conn_id)  # type: ignore[arg-type]


def test_credentials_in_userinfo_are_refused_without_echo() -> None:
    with pytest.raises(StorageConfigError) as raised:
        resolve_destination("s3://AKIAEXAMPLE:s3cr3t@bucket/out/")

    assert "s3cr3t" not in str(raised.value)
    assert "AKIAEXAMPLE" not in str(raised.value)
