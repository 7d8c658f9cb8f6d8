"""
Errors of the storage copy, free of any Airflow dependency.

The operator maps them at its boundary: :attr:`StorageError.retryable` says whether another try
can succeed (``False`` maps to ``AirflowFailException``). Messages name the media URL with its
userinfo and query string redacted, and the destination without its ``conn_id@``: they never
carry a credential.
"""

from __future__ import annotations


class StorageError(Exception):
    """
    Base class of every error raised while copying Crun results into storage.

    :param message: a human-readable explanation, free of credentials.
    :param retryable: whether another try of the same copy can succeed.
    """

    retryable: bool = True

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        if retryable is not None:
            self.retryable = retryable


class StorageConfigError(StorageError, ValueError):
    """An argument is unusable (destination, ``crun_task_id``, size cap); detected before any I/O."""

    retryable = False


class MediaRejectedError(StorageError):
    """
    The media itself is refused: wrong type, too large, empty or not an http(s) URL.

    :param url: the media URL, already redacted.
    :param reason: why it was refused.
    """

    retryable = False

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"Crun result {url} rejected: {reason}")
        self.url = url
        self.reason = reason


class UnsupportedMediaTypeError(MediaRejectedError):
    """The server announced a content type that is neither ``image/*`` nor ``video/*``."""

    def __init__(self, url: str, content_type: str) -> None:
        shown = content_type or "no Content-Type"
        super().__init__(url, f"content type {shown!r} is not image/* or video/*")
        self.content_type = content_type


class MediaTooLargeError(MediaRejectedError):
    """The media is larger than the size cap, by its ``Content-Length`` or while streaming."""

    def __init__(self, url: str, size: int, max_bytes: int, *, announced: bool) -> None:
        how = "announces" if announced else "sent more than"
        super().__init__(url, f"the server {how} {size} bytes; the cap is {max_bytes} bytes")
        self.size = size
        self.max_bytes = max_bytes


class MediaDownloadError(StorageError):
    """
    The download failed: an HTTP error status, a timeout, a dropped or short body.

    :param url: the media URL, already redacted.
    :param reason: what went wrong.
    :param status: the HTTP status, when the server answered with an error.
    :param retryable: whether another try can succeed.
    """

    def __init__(self, url: str, reason: str, *, status: int | None = None, retryable: bool = True) -> None:
        super().__init__(f"Downloading Crun result {url} failed: {reason}", retryable=retryable)
        self.url = url
        self.reason = reason
        self.status = status


class DestinationError(StorageError):
    """
    Writing to the destination failed (missing bucket, permission, storage outage).

    :param uri: the destination URI, without ``conn_id@``.
    :param reason: what went wrong.
    :param retryable: whether another try can succeed.
    """

    def __init__(self, uri: str, reason: str, *, retryable: bool = True) -> None:
        super().__init__(f"Writing {uri} failed: {reason}", retryable=retryable)
        self.uri = uri
        self.reason = reason
