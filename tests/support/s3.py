"""
A real S3 wire protocol on loopback: moto's threaded server, plus an Airflow ``aws`` connection.

Reusable by any suite (integration, e2e, benchmarks)::

    from tests.support.s3 import moto_s3_fixture  # noqa: F401  (a session fixture: moto_s3)

    def test_x(moto_s3: MotoS3) -> None:
        bucket = moto_s3.create_bucket()
        dest = f"s3://{moto_s3.conn_id}@{bucket}/out/"

Needs ``moto[server]`` and, for ``ObjectStoragePath``, ``apache-airflow-providers-amazon[s3fs]``.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

DUMMY_KEY_ID = "testing"
DUMMY_SECRET = "testing"
REGION = "us-east-1"

#: Environment that keeps botocore on this machine: dummy keys end its credential chain before
#: the EC2 metadata endpoint, which is disabled as well.
OFFLINE_AWS_ENV = {
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_ACCESS_KEY_ID": DUMMY_KEY_ID,
    "AWS_SECRET_ACCESS_KEY": DUMMY_SECRET,
    "AWS_DEFAULT_REGION": REGION,
}


def aws_connection_json(endpoint_url: str) -> str:
    """An ``AIRFLOW_CONN_*`` value for an ``aws`` connection to ``endpoint_url``, with dummy keys."""
    return json.dumps(
        {
            "conn_type": "aws",
            "login": DUMMY_KEY_ID,
            "password": DUMMY_SECRET,
            "extra": {"endpoint_url": endpoint_url, "region_name": REGION},
        }
    )


@dataclass
class MotoS3:
    """A running moto S3 server and the Airflow connection id that points at it."""

    endpoint_url: str
    conn_id: str

    def client(self) -> Any:
        """A plain boto3 S3 client, for setting up and inspecting buckets."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=DUMMY_KEY_ID,
            aws_secret_access_key=DUMMY_SECRET,
            region_name=REGION,
        )

    def create_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a fresh random name by default) and return its name."""
        bucket = name or f"crun-{secrets.token_hex(6)}"
        self.client().create_bucket(Bucket=bucket)
        return bucket

    def objects(self, bucket: str) -> dict[str, int]:
        """Every key in ``bucket`` with its size."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return {obj["Key"]: obj["Size"] for page in pages for obj in page.get("Contents", [])}

    def multipart_uploads(self, bucket: str) -> list[str]:
        """The keys of multipart uploads started and neither completed nor aborted."""
        uploads = self.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        return [upload["Key"] for upload in uploads]

    def read(self, bucket: str, key: str) -> bytes:
        body: bytes = self.client().get_object(Bucket=bucket, Key=key)["Body"].read()
        return body


@contextmanager
def moto_s3_server(conn_id: str | None = None) -> Iterator[MotoS3]:
    """
    Run moto's S3 on 127.0.0.1 (a free port) and export ``AIRFLOW_CONN_<CONN_ID>`` for it.

    :param conn_id: the connection id; a unique one by default, because Airflow caches the
        filesystem of each ``(protocol, conn_id)`` for the life of the process.
    """
    from moto.server import ThreadedMotoServer

    conn_id = conn_id or f"aws_moto_{secrets.token_hex(4)}"
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint_url = f"http://{host}:{port}"
        with pytest.MonkeyPatch.context() as env:
            for name, value in OFFLINE_AWS_ENV.items():
                env.setenv(name, value)
            env.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", aws_connection_json(endpoint_url))
            yield MotoS3(endpoint_url, conn_id)
    finally:
        server.stop()


@pytest.fixture(scope="session", name="moto_s3")
def moto_s3_fixture() -> Iterator[MotoS3]:
    """Session-wide moto S3 server (fixture ``moto_s3``); tests isolate themselves by bucket."""
    pytest.importorskip("moto.server", reason="needs the dev extra's moto[server]")
    pytest.importorskip("s3fs", reason="needs the dev extra's apache-airflow-providers-amazon[s3fs]")
    with moto_s3_server() as s3:
        yield s3
