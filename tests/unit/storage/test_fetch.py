"""The body checks of ``fetch.iter_body``, on stub responses: what urllib3 might let through."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
import urllib3

from airflow_provider_crun.storage.errors import MediaDownloadError, MediaRejectedError, MediaTooLargeError
from airflow_provider_crun.storage.fetch import RemoteMedia, check_url, iter_body

URL = "https://cdn.example/r/a.png?sig=secret"


class StubResponse:
    def __init__(self, *chunks: bytes, error: Exception | None = None) -> None:
        self.chunks = chunks
        self.error = error

    def iter_content(self, chunk_size: int) -> Iterator[bytes]:
        yield from self.chunks
        if self.error is not None:
            raise self.error


def _body(response: StubResponse, length: int | None, max_bytes: int = 100) -> bytes:
    remote = RemoteMedia(URL, URL, "image/png", length)
    return b"".join(iter_body(response, remote, max_bytes=max_bytes))  # type: ignore[arg-type]


def test_complete_body() -> None:
    assert _body(StubResponse(b"12345", b"678"), 8) == b"12345678"
    assert _body(StubResponse(b"12345", b"678"), None) == b"12345678"


def test_short_body_is_a_retryable_download_error() -> None:
    with pytest.raises(MediaDownloadError, match="ended after 5 of 10 bytes") as raised:
        _body(StubResponse(b"12345"), 10)
    assert raised.value.retryable


def test_body_longer_than_announced() -> None:
    with pytest.raises(MediaDownloadError, match="exceeds its Content-Length 4"):
        _body(StubResponse(b"12345"), 4)


def test_cap_counts_streamed_bytes() -> None:
    with pytest.raises(MediaTooLargeError, match="sent more than 12 bytes; the cap is 10"):
        _body(StubResponse(b"123456", b"789012"), None, max_bytes=10)


def test_empty_body() -> None:
    with pytest.raises(MediaRejectedError, match="empty"):
        _body(StubResponse(), None)


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (requests.exceptions.ChunkedEncodingError("IncompleteRead"), "ChunkedEncodingError"),
        (
            requests.ConnectionError(urllib3.exceptions.ReadTimeoutError(None, URL, "read timed out")),
            "timed out",
        ),
    ],
    ids=["dropped", "read-timeout"],
)
def test_transport_errors_are_retryable_and_redacted(error: Exception, reason: str) -> None:
    with pytest.raises(MediaDownloadError, match=reason) as raised:
        _body(StubResponse(b"123", error=error), 10)
    assert raised.value.retryable
    assert "secret" not in str(raised.value)


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://cdn/a.png", "//cdn/a.png", "https:///a.png", "", None], ids=repr
)
def test_check_url_refuses_non_http(url: object) -> None:
    with pytest.raises(MediaRejectedError, match="only absolute http"):
        check_url(url)  # type: ignore[arg-type]
