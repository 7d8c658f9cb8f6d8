"""
Copy finished Crun result media from their CDN URLs into a storage folder.

:func:`store_results` is the one entry point an operator calls. For each media it reads the
headers first (``HEAD``, else the ``GET``'s), skips a file that an earlier try already stored
complete, and otherwise streams the body into the folder through
:func:`~airflow_provider_crun.storage.writers.write_atomically`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import requests

from airflow_provider_crun.storage import fetch, writers
from airflow_provider_crun.storage.destination import fs_path, protocol_of, public_uri, resolve_destination
from airflow_provider_crun.storage.errors import DestinationError, StorageConfigError, StorageError
from airflow_provider_crun.storage.naming import check_task_id, extension_for, media_name, redact_url

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath
    from fsspec import AbstractFileSystem

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 200 * 1024 * 1024
DEFAULT_TIMEOUT: fetch.Timeout = 30.0

# Errors of the store that another try cannot fix.
_PERMANENT_STORE_ERRORS = (FileNotFoundError, PermissionError, NotADirectoryError, IsADirectoryError)


@dataclass(frozen=True)
class StoredMedia:
    """
    One result media in the destination folder.

    :param uri: where it is, without the connection id (``s3://bucket/crun/task_1_0.png``).
    :param size: its size in bytes.
    :param content_type: the content type the CDN announced, e.g. ``"image/png"``.
    :param skipped: ``True`` when an earlier try had already stored it complete, so nothing was
        downloaded or written.
    """

    uri: str
    size: int
    content_type: str
    skipped: bool

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy, for XCom."""
        return asdict(self)


@dataclass(frozen=True)
class _Target:
    fs: AbstractFileSystem
    folder: ObjectStoragePath
    protocol: str


def store_results(
    media_urls: Sequence[str],
    *,
    crun_task_id: str,
    destination: str | os.PathLike[str] | ObjectStoragePath,
    conn_id: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    timeout: fetch.Timeout = DEFAULT_TIMEOUT,
    session: requests.Session | None = None,
) -> list[StoredMedia]:
    """
    Copy a Crun task's result media into a folder, as ``<crun_task_id>_<n>.<ext>``.

    Idempotent: a file already stored with the size the CDN announces is skipped without
    downloading its body, and a partial write is never visible under its final name. Media are
    copied in order; the first failure raises, and a retry skips what was already stored.

    :param media_urls: the result URLs (``result.media_urls`` of a finished Crun task).
    :param crun_task_id: the Crun task id; it names the files.
    :param destination: the folder: an ``ObjectStoragePath``, a URI (``"s3://bucket/crun/"``,
        ``"s3://aws_default@bucket/crun/"``, ``"file:///data/out/"``) or an absolute path.
    :param conn_id: the Airflow connection of the store, if ``destination`` does not carry it.
    :param max_bytes: the largest media accepted, checked against ``Content-Length`` and while
        streaming (default 200 MiB).
    :param timeout: seconds per connect and per read of each request, or a ``(connect, read)`` pair.
    :param session: a ``requests`` session to reuse; it must carry no auth. No API key is sent.
    :return: one :class:`StoredMedia` per URL, in the order of ``media_urls``.
    :raises StorageConfigError: on an unusable argument, before any download.
    :raises MediaRejectedError: on a media of the wrong type, too large, or not http(s).
    :raises MediaDownloadError: when a download fails; ``retryable`` tells whether to retry.
    :raises DestinationError: when writing to the destination fails.
    """
    urls = _check_arguments(media_urls, crun_task_id, max_bytes)
    target = _open_target(resolve_destination(destination, conn_id))
    own_session = session is None
    http = fetch.new_session() if session is None else session
    fetch.check_session(http)
    try:
        return [
            _store_one(
                http, target, url, stem=crun_task_id, index=index, max_bytes=max_bytes, timeout=timeout
            )
            for index, url in enumerate(urls)
        ]
    finally:
        if own_session:
            http.close()


def _check_arguments(media_urls: Sequence[str], crun_task_id: str, max_bytes: int) -> list[str]:
    if isinstance(media_urls, (str, bytes)) or not isinstance(media_urls, Sequence):
        raise StorageConfigError("media_urls must be a list of URLs, not a single string")
    check_task_id(crun_task_id)
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
        raise StorageConfigError(f"max_bytes must be a positive number of bytes, not {max_bytes!r}")
    urls = list(media_urls)
    for url in urls:
        fetch.check_url(url)
    return urls


def _open_target(folder: ObjectStoragePath) -> _Target:
    protocol = protocol_of(folder)
    try:
        fs = folder.fs
    except (ImportError, ValueError) as error:
        raise StorageConfigError(f"no filesystem for {public_uri(folder)}: {error}") from None
    with _destination_errors(public_uri(folder)):
        writers.prepare_folder(fs, folder.path, protocol)
    return _Target(fs, folder, protocol)


@contextmanager
def _destination_errors(uri: str) -> Iterator[None]:
    """Turn a filesystem error into a :class:`DestinationError`; let a :class:`StorageError` through."""
    try:
        yield
    except StorageError:
        raise
    except Exception as error:
        retryable = not isinstance(error, _PERMANENT_STORE_ERRORS)
        raise DestinationError(uri, f"{type(error).__name__}: {error}", retryable=retryable) from error


def _stored(target: _Target, name: str, size: int, content_type: str, *, skipped: bool) -> StoredMedia:
    return StoredMedia(public_uri(target.folder, name), size, content_type, skipped)


def _already_stored(target: _Target, name: str, remote: fetch.RemoteMedia) -> bool:
    if remote.length is None:
        return False
    with _destination_errors(public_uri(target.folder, name)):
        return writers.existing_size(target.fs, fs_path(target.folder, name)) == remote.length


def _name(stem: str, index: int, remote: fetch.RemoteMedia) -> str:
    return media_name(stem, index, extension_for(remote.content_type, remote.url, remote.final_url))


def _store_one(
    http: requests.Session,
    target: _Target,
    url: str,
    *,
    stem: str,
    index: int,
    max_bytes: int,
    timeout: fetch.Timeout,
) -> StoredMedia:
    checked: tuple[str, int | None] | None = None
    remote = fetch.probe(http, url, max_bytes=max_bytes, timeout=timeout)
    if remote is not None:
        name = _name(stem, index, remote)
        if _already_stored(target, name, remote):
            log.info(
                "Crun result %s is already stored at %s", redact_url(url), public_uri(target.folder, name)
            )
            return _stored(target, name, remote.length or 0, remote.content_type, skipped=True)
        checked = (name, remote.length)
    with fetch.open_download(http, url, max_bytes=max_bytes, timeout=timeout) as (remote, response):
        name = _name(stem, index, remote)
        if checked != (name, remote.length) and _already_stored(target, name, remote):
            return _stored(target, name, remote.length or 0, remote.content_type, skipped=True)
        uri = public_uri(target.folder, name)
        chunks = fetch.iter_body(response, remote, max_bytes=max_bytes)
        with _destination_errors(uri):
            size = writers.write_atomically(
                target.fs, fs_path(target.folder, name), chunks, protocol=target.protocol, max_bytes=max_bytes
            )
    log.info("Stored Crun result %s at %s (%d bytes)", redact_url(url), uri, size)
    return _stored(target, name, size, remote.content_type, skipped=False)
