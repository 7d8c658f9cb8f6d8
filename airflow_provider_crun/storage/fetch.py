"""
The HTTP side: read a result's headers, then stream its body in bounded chunks.

Result media live on a public CDN, so no Crun API key is ever sent: the ``x-api-key`` and
``Authorization`` headers are removed from every request, even when the caller's session has
them, and a session with ``auth`` is refused. That is also why redirects are followed here,
unlike in the hook.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeAlias
from urllib.parse import urlsplit

import requests
import urllib3

from airflow_provider_crun.storage.errors import (
    MediaDownloadError,
    MediaRejectedError,
    MediaTooLargeError,
    StorageConfigError,
    UnsupportedMediaTypeError,
)
from airflow_provider_crun.storage.naming import is_media_type, media_type, redact_url

#: ``requests``' timeout: seconds per connect and per read, or a ``(connect, read)`` pair.
Timeout: TypeAlias = float | tuple[float, float]

CHUNK_SIZE = 1024 * 1024
MAX_REDIRECTS = 10
# A header set to None removes the session's value. Identity encoding keeps Content-Length
# equal to the stored size, which is what makes a retry's "already complete" check sound.
_REQUEST_HEADERS: dict[str, str | None] = {
    "Accept-Encoding": "identity",
    "x-api-key": None,
    "Authorization": None,
}
_RETRYABLE_STATUSES = frozenset({408, 425, 429})


@dataclass(frozen=True)
class RemoteMedia:
    """
    What the server says about a media before its body is read.

    :param url: the URL as requested.
    :param final_url: the URL after redirects.
    :param content_type: the normalised content type, an ``image/*`` or ``video/*``.
    :param length: the size of the body in bytes, or ``None`` when the server does not say.
    """

    url: str
    final_url: str
    content_type: str
    length: int | None


def new_session() -> requests.Session:
    """A session for CDN downloads: no auth, bounded redirects."""
    session = requests.Session()
    session.max_redirects = MAX_REDIRECTS
    return session


def check_session(session: requests.Session) -> None:
    """
    Refuse a session that would send credentials to the CDN.

    :raises StorageConfigError: if ``session.auth`` is set.
    """
    if session.auth is not None:
        raise StorageConfigError("the session given for result downloads must not carry auth")


def check_url(url: str) -> None:
    """
    Refuse anything but an absolute http(s) URL, before any request.

    :raises MediaRejectedError: otherwise.
    """
    try:
        parts = urlsplit(url) if isinstance(url, str) else None
    except ValueError:
        parts = None
    if parts is None or parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        shown = redact_url(url) if isinstance(url, str) else repr(url)
        raise MediaRejectedError(shown, "only absolute http(s) URLs can be downloaded")


def _describe(response: requests.Response, url: str, max_bytes: int) -> RemoteMedia:
    shown = redact_url(url)
    content_type = media_type(response.headers.get("Content-Type"))
    if not is_media_type(content_type):
        raise UnsupportedMediaTypeError(shown, content_type)
    try:
        announced: int | None = int(response.headers.get("Content-Length", ""))
    except ValueError:
        announced = None
    if announced is not None and announced > max_bytes:
        raise MediaTooLargeError(shown, announced, max_bytes, announced=True)
    if announced == 0:
        raise MediaRejectedError(shown, "the server announces an empty body")
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    # A compressed body's Content-Length is not the stored size: the size is then unknown.
    length = announced if encoding in ("", "identity") else None
    return RemoteMedia(url, response.url or url, content_type, length)


def _download_error(url: str, error: requests.RequestException) -> MediaDownloadError:
    # requests' messages repeat the URL with its query string: only the class name is kept.
    cause = error.args[0] if error.args else None
    if isinstance(error, requests.Timeout) or isinstance(cause, urllib3.exceptions.TimeoutError):
        # A read timeout while streaming arrives as a ConnectionError wrapping urllib3's.
        return MediaDownloadError(redact_url(url), f"timed out ({type(error).__name__})")
    retryable = not isinstance(error, (requests.TooManyRedirects, requests.exceptions.InvalidSchema))
    return MediaDownloadError(redact_url(url), type(error).__name__, retryable=retryable)


def _check_status(response: requests.Response, url: str) -> None:
    status = response.status_code
    if 200 <= status < 300:
        return
    retryable = status in _RETRYABLE_STATUSES or status >= 500
    raise MediaDownloadError(redact_url(url), f"HTTP {status}", status=status, retryable=retryable)


def probe(session: requests.Session, url: str, *, max_bytes: int, timeout: Timeout) -> RemoteMedia | None:
    """
    Read a media's type and size with a ``HEAD`` request, following redirects.

    :return: what the server says, or ``None`` when ``HEAD`` is not answered usefully (an error
        status or no content type), so the caller falls back to the ``GET``'s headers.
    :raises MediaRejectedError: if the answer already shows a wrong type or a size over the cap.
    :raises MediaDownloadError: on a timeout or a connection failure.
    """
    try:
        response = session.head(url, headers=_REQUEST_HEADERS, timeout=timeout, allow_redirects=True)
    except requests.RequestException as error:
        raise _download_error(url, error) from None
    with response:
        if not 200 <= response.status_code < 300 or not response.headers.get("Content-Type"):
            return None
        return _describe(response, url, max_bytes)


@contextmanager
def open_download(
    session: requests.Session, url: str, *, max_bytes: int, timeout: Timeout
) -> Iterator[tuple[RemoteMedia, requests.Response]]:
    """
    Send the ``GET`` and check its headers; the body is not read until the caller iterates it.

    :return: a context manager yielding ``(RemoteMedia, response)``; the connection is released
        on exit, whether or not the body was read.
    :raises MediaRejectedError: on a wrong type or a ``Content-Length`` over the cap.
    :raises MediaDownloadError: on an error status, a timeout or a connection failure.
    """
    try:
        response = session.get(url, headers=_REQUEST_HEADERS, timeout=timeout, stream=True)
    except requests.RequestException as error:
        raise _download_error(url, error) from None
    with response:
        _check_status(response, url)
        yield _describe(response, url, max_bytes), response


def iter_body(
    response: requests.Response, remote: RemoteMedia, *, max_bytes: int, chunk_size: int = CHUNK_SIZE
) -> Iterator[bytes]:
    """
    Yield the body in chunks of at most ``chunk_size`` bytes, enforcing the cap as bytes arrive.

    :raises MediaTooLargeError: as soon as more than ``max_bytes`` bytes have arrived.
    :raises MediaDownloadError: if the connection drops, or the body is shorter or longer than
        its ``Content-Length``.
    """
    shown = redact_url(remote.url)
    received = 0
    try:
        for chunk in response.iter_content(chunk_size=chunk_size):
            received += len(chunk)
            if received > max_bytes:
                raise MediaTooLargeError(shown, received, max_bytes, announced=False)
            if remote.length is not None and received > remote.length:
                raise MediaDownloadError(shown, f"the body exceeds its Content-Length {remote.length}")
            yield chunk
    except requests.RequestException as error:
        raise _download_error(remote.url, error) from None
    if remote.length is not None and received != remote.length:
        raise MediaDownloadError(shown, f"the body ended after {received} of {remote.length} bytes")
    if received == 0:
        raise MediaRejectedError(shown, "the body is empty")
