"""``store_results``' guards: size cap, content type, HTTP errors, timeouts, credentials, arguments."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from airflow_provider_crun.storage import (
    MediaDownloadError,
    MediaRejectedError,
    MediaTooLargeError,
    StorageConfigError,
    UnsupportedMediaTypeError,
    store_results,
)
from tests.support.media_server import Media, MediaServer
from tests.support.stored_media import PNG, TASK, listing, store_into


def test_size_cap_from_content_length_needs_no_get(cdn: MediaServer, out: Path) -> None:
    url = cdn.add("/r/big.png", Media(PNG))

    with pytest.raises(MediaTooLargeError, match=r"announces 10248 bytes; the cap is 1000") as raised:
        store_into(out, [url], max_bytes=1000)

    assert not raised.value.retryable
    assert cdn.count("GET") == 0
    assert listing(out) == []


def test_size_cap_from_get_headers_when_head_is_refused(cdn: MediaServer, out: Path) -> None:
    url = cdn.add("/r/big.png", Media(PNG, head_status=405))

    with pytest.raises(MediaTooLargeError, match="announces"):
        store_into(out, [url], max_bytes=1000)

    assert cdn.count("GET") == 1
    assert listing(out) == []


def test_size_cap_while_streaming(cdn: MediaServer, out: Path) -> None:
    url = cdn.add("/r/big.png", Media(PNG, send_length=False))

    with pytest.raises(MediaTooLargeError, match=r"sent more than \d+ bytes; the cap is 1000"):
        store_into(out, [url], max_bytes=1000)

    assert listing(out) == []


@pytest.mark.parametrize(
    ("content_type", "shown"),
    [("text/html; charset=utf-8", "'text/html'"), ("application/octet-stream", "'application/octet-stream'")],
    ids=["html", "octet-stream"],
)
def test_wrong_content_type_names_url_and_type(
    cdn: MediaServer, out: Path, content_type: str, shown: str
) -> None:
    url = cdn.add("/r/page", Media(b"<html></html>", content_type))

    with pytest.raises(UnsupportedMediaTypeError) as raised:
        store_into(out, [url])

    assert url in str(raised.value)
    assert f"content type {shown} is not image/* or video/*" in str(raised.value)
    assert cdn.count("GET") == 0
    assert listing(out) == []


def test_missing_content_type_is_refused(cdn: MediaServer, out: Path) -> None:
    url = cdn.add("/r/a.png", Media(PNG, content_type=None))

    with pytest.raises(UnsupportedMediaTypeError, match="no Content-Type"):
        store_into(out, [url])

    assert cdn.count("GET") == 1  # HEAD told nothing usable, the GET's headers decided
    assert listing(out) == []


def test_empty_body_is_refused(cdn: MediaServer, out: Path) -> None:
    url = cdn.add("/r/a.png", Media(b""))

    with pytest.raises(MediaRejectedError, match="empty"):
        store_into(out, [url])

    assert listing(out) == []


@pytest.mark.parametrize(("status", "retryable"), [(404, False), (403, False), (503, True), (429, True)])
def test_http_error_status(cdn: MediaServer, out: Path, status: int, retryable: bool) -> None:
    url = cdn.add("/r/a.png", Media(PNG, status=status, head_status=status))

    with pytest.raises(MediaDownloadError, match=f"HTTP {status}") as raised:
        store_into(out, [url])

    assert (raised.value.status, raised.value.retryable) == (status, retryable)
    assert listing(out) == []


def test_timeout_per_request(cdn: MediaServer, out: Path) -> None:
    url = cdn.add("/r/a.png", Media(PNG, stall=True))

    with pytest.raises(MediaDownloadError, match="timed out") as raised:
        store_results([url], crun_task_id=TASK, destination=str(out), timeout=0.2)

    assert raised.value.retryable
    assert listing(out) == []


def test_no_api_key_or_auth_reaches_the_cdn(cdn: MediaServer, out: Path) -> None:
    url = cdn.add("/r/a.png", Media(PNG))
    session = requests.Session()
    session.headers.update({"x-api-key": "crun-secret-key", "Authorization": "Bearer crun-secret"})

    store_into(out, [url], session=session)

    sent = [{k.lower(): v for k, v in r.headers.items()} for r in cdn.requests]
    assert [r.method for r in cdn.requests] == ["HEAD", "GET"]
    assert all("x-api-key" not in h and "authorization" not in h for h in sent)
    assert all(h.get("accept-encoding") == "identity" for h in sent)


def test_session_with_auth_is_refused_before_any_request(cdn: MediaServer, out: Path) -> None:
    url = cdn.add("/r/a.png", Media(PNG))
    session = requests.Session()
    session.auth = ("user", "secret")

    with pytest.raises(StorageConfigError, match="must not carry auth"):
        store_into(out, [url], session=session)

    assert cdn.requests == []


def test_uris_never_carry_the_connection_id(cdn: MediaServer, out: Path) -> None:
    url = cdn.add("/r/a.png", Media(PNG))

    [in_uri] = store_results([url], crun_task_id=TASK, destination=f"file://my_conn@{out}/")
    [as_kwarg] = store_results([url], crun_task_id=TASK, destination=str(out), conn_id="my_conn")

    assert in_uri.uri == as_kwarg.uri == f"file://{out}/{TASK}_0.png"


def test_errors_never_show_url_credentials_or_signatures(cdn: MediaServer, out: Path) -> None:
    cdn.add("/r/page", Media(b"<html></html>", "text/html"))
    url = cdn.base.replace("http://", "http://user:pa55word@") + "/r/page?X-Signature=s1gn4ture"

    with pytest.raises(UnsupportedMediaTypeError) as raised:
        store_into(out, [url])

    message = str(raised.value)
    assert "pa55word" not in message
    assert "s1gn4ture" not in message
    assert f"{cdn.base}/r/page?..." in message


def test_bad_urls_are_refused_before_any_download(cdn: MediaServer, out: Path) -> None:
    good = cdn.add("/r/a.png", Media(PNG))

    with pytest.raises(MediaRejectedError, match="only absolute http"):
        store_into(out, [good, "file:///etc/passwd"])

    assert cdn.requests == []


@pytest.mark.parametrize("crun_task_id", ["", "../etc", "a/b", ".hidden", "x" * 201], ids=repr)
def test_task_id_that_cannot_name_a_file_is_refused(out: Path, crun_task_id: str) -> None:
    with pytest.raises(StorageConfigError, match="cannot name a file"):
        store_results(["https://cdn.example/a.png"], crun_task_id=crun_task_id, destination=str(out))


@pytest.mark.parametrize("max_bytes", [0, -1, True, 1.5])
def test_size_cap_must_be_a_positive_int(out: Path, max_bytes: object) -> None:
    with pytest.raises(StorageConfigError, match="max_bytes"):
        store_results(
            ["https://cdn.example/a.png"], crun_task_id=TASK, destination=str(out), max_bytes=max_bytes
        )  # type: ignore[arg-type]


def test_media_urls_must_be_a_list(out: Path) -> None:
    with pytest.raises(StorageConfigError, match="list of URLs"):
        store_results("https://cdn.example/a.png", crun_task_id=TASK, destination=str(out))
