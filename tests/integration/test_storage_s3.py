"""
``store_results`` into S3 over the real wire protocol: moto's server, s3fs, an Airflow connection.

The loopback CDN is the unit tests' :class:`~tests.support.media_server.MediaServer`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_crun.storage import DestinationError, MediaDownloadError, store_results
from tests.support.media_server import Media, MediaServer
from tests.support.s3 import MotoS3, moto_s3_fixture  # noqa: F401

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
TASK = "task_12345678"
PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(64 * 1024)
# Above s3fs's 5 MiB part size here: a multipart upload, not a single PUT.
MP4 = os.urandom(12 * MiB)


@pytest.fixture
def cdn() -> Iterator[MediaServer]:
    with MediaServer() as server:
        yield server


@pytest.fixture
def bucket(moto_s3: MotoS3) -> str:
    return moto_s3.create_bucket()


def test_upload_then_retry_skips_and_the_bucket_holds_one_object_per_media(
    moto_s3: MotoS3, bucket: str, cdn: MediaServer
) -> None:
    urls = [cdn.add("/r/a.png", Media(PNG)), cdn.add("/r/b.mp4", Media(MP4, "video/mp4"))]
    destination = f"s3://{moto_s3.conn_id}@{bucket}/crun/2026-01-01/"

    first = store_results(urls, crun_task_id=TASK, destination=destination)
    etags = {k: moto_s3.client().head_object(Bucket=bucket, Key=k)["ETag"] for k in moto_s3.objects(bucket)}
    second = store_results(urls, crun_task_id=TASK, destination=destination)

    assert [(m.uri, m.size, m.content_type, m.skipped) for m in first] == [
        (f"s3://{bucket}/crun/2026-01-01/{TASK}_0.png", len(PNG), "image/png", False),
        (f"s3://{bucket}/crun/2026-01-01/{TASK}_1.mp4", len(MP4), "video/mp4", False),
    ]
    assert [m.skipped for m in second] == [True, True]
    assert [m.uri for m in second] == [m.uri for m in first]
    assert cdn.count("GET") == 2  # the retry downloaded nothing
    assert moto_s3.objects(bucket) == {
        f"crun/2026-01-01/{TASK}_0.png": len(PNG),
        f"crun/2026-01-01/{TASK}_1.mp4": len(MP4),
    }
    assert moto_s3.read(bucket, f"crun/2026-01-01/{TASK}_1.mp4") == MP4
    assert {k: moto_s3.client().head_object(Bucket=bucket, Key=k)["ETag"] for k in etags} == etags
    assert moto_s3.multipart_uploads(bucket) == []
    assert all(moto_s3.conn_id not in m.uri for m in first + second)


@pytest.mark.parametrize("drop_after", [16 * 1024, 8 * MiB], ids=["before-first-part", "after-first-part"])
def test_dropped_download_leaves_no_object_and_no_upload(
    moto_s3: MotoS3, bucket: str, cdn: MediaServer, drop_after: int
) -> None:
    media = Media(MP4, "video/mp4", drop_after=drop_after)
    url = cdn.add("/r/b.mp4", media)
    destination = ObjectStoragePath(f"s3://{bucket}/out/", conn_id=moto_s3.conn_id)

    with pytest.raises(MediaDownloadError):
        store_results([url], crun_task_id=TASK, destination=destination)

    assert moto_s3.objects(bucket) == {}
    assert moto_s3.multipart_uploads(bucket) == []
    media.drop_after = None
    [stored] = store_results([url], crun_task_id=TASK, destination=destination)
    assert moto_s3.objects(bucket) == {f"out/{TASK}_0.mp4": len(MP4)}
    assert stored.uri == f"s3://{bucket}/out/{TASK}_0.mp4"


def test_conn_id_given_apart_from_the_uri(moto_s3: MotoS3, bucket: str, cdn: MediaServer) -> None:
    url = cdn.add("/r/a.png", Media(PNG))

    [stored] = store_results([url], crun_task_id=TASK, destination=f"s3://{bucket}/", conn_id=moto_s3.conn_id)

    assert stored.uri == f"s3://{bucket}/{TASK}_0.png"
    assert moto_s3.objects(bucket) == {f"{TASK}_0.png": len(PNG)}


def test_missing_bucket_is_a_permanent_destination_error(moto_s3: MotoS3, cdn: MediaServer) -> None:
    url = cdn.add("/r/a.png", Media(PNG))

    with pytest.raises(DestinationError, match="s3://no-such-bucket-crun/out/") as raised:
        store_results(
            [url], crun_task_id=TASK, destination=f"s3://{moto_s3.conn_id}@no-such-bucket-crun/out/"
        )

    assert not raised.value.retryable
    assert moto_s3.conn_id not in str(raised.value)
    assert "no-such-bucket-crun" not in [b["Name"] for b in moto_s3.client().list_buckets()["Buckets"]]
