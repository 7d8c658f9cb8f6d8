"""
The storage side: write a stream of chunks so that only a complete file is ever visible.

Two strategies, chosen by protocol:

* **Write, then rename** (local files and any filesystem not listed below): the chunks go to a
  hidden ``.<name>.partial-<random>`` file in the destination folder, which is renamed to the
  final name once complete. On a local disk that rename is atomic; on failure the temporary file
  is removed.
* **Commit on close** (S3): the chunks go straight to the final key. s3fs keeps the object
  invisible until the upload completes: a small one is sent by one ``PutObject`` at close, a large
  one as a multipart upload finished by ``CompleteMultipartUpload``. On failure the file is
  *discarded* (``AbortMultipartUpload``) and never closed, because fsspec's ``close()`` (which a
  ``with`` block calls even when an exception escapes) would commit the partial data under the
  final name. S3 has no rename: fsspec's ``mv`` is ``CopyObject`` plus ``DeleteObjects``, which
  rewrites every byte server-side and shows the temporary object in listings meanwhile.
"""

from __future__ import annotations

import logging
import math
import posixpath
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from airflow_provider_crun.storage.naming import partial_name

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

log = logging.getLogger(__name__)

#: Protocols whose files stay invisible until closed, and are dropped by ``discard()``.
COMMIT_ON_CLOSE_PROTOCOLS = frozenset({"s3", "s3a", "s3n"})
#: Object stores have no directories, and their ``makedirs`` may create a bucket: never call it.
OBJECT_STORE_PROTOCOLS = COMMIT_ON_CLOSE_PROTOCOLS | {"gs", "gcs", "abfs", "abfss", "az", "adl", "oss"}

# S3 multipart limits: parts of at least 5 MiB (but the last), at most 10,000 parts.
MIN_PART_SIZE = 5 * 1024 * 1024
MAX_PARTS = 10_000


def part_size(max_bytes: int) -> int:
    """
    The write block size for a commit-on-close upload: it bounds the memory the upload holds.

    :param max_bytes: the largest media that may be written.
    :return: 5 MiB, or more when 10,000 parts of 5 MiB could not hold ``max_bytes``.
    """
    return max(MIN_PART_SIZE, math.ceil(max_bytes / MAX_PARTS))


def prepare_folder(fs: AbstractFileSystem, folder: str, protocol: str) -> None:
    """
    Create the destination folder where the filesystem has real directories.

    :param fs: the destination filesystem.
    :param folder: the folder path, as the filesystem spells it.
    :param protocol: the destination's protocol (``""`` for a plain local path).
    """
    if protocol not in OBJECT_STORE_PROTOCOLS:
        fs.makedirs(folder, exist_ok=True)


def existing_size(fs: AbstractFileSystem, path: str) -> int | None:
    """
    The size of the file at ``path``, fresh from the store.

    :return: the size in bytes, or ``None`` when there is no file there.
    """
    fs.invalidate_cache(path)
    try:
        info = fs.info(path)
    except FileNotFoundError:
        return None
    if info.get("type") != "file":
        return None
    return int(info["size"])


def write_atomically(
    fs: AbstractFileSystem, path: str, chunks: Iterable[bytes], *, protocol: str, max_bytes: int
) -> int:
    """
    Write ``chunks`` to ``path`` so that ``path`` shows either nothing new or the complete file.

    An exception raised by ``chunks`` (a dropped download, the size cap) or by the filesystem
    leaves no partial file behind and propagates unchanged.

    :param fs: the destination filesystem.
    :param path: the final path, as the filesystem spells it.
    :param chunks: the content; it is consumed once, and never held whole in memory.
    :param protocol: the destination's protocol; selects the strategy.
    :param max_bytes: the size cap, which sets the upload part size.
    :return: the number of bytes written.
    """
    if protocol in COMMIT_ON_CLOSE_PROTOCOLS:
        return _write_commit_on_close(fs, path, chunks, block_size=part_size(max_bytes))
    return _write_then_rename(fs, path, chunks)


def _write_all(file: Any, chunks: Iterable[bytes]) -> int:
    written = 0
    for chunk in chunks:
        file.write(chunk)
        written += len(chunk)
    return written


def _write_commit_on_close(
    fs: AbstractFileSystem, path: str, chunks: Iterable[bytes], *, block_size: int
) -> int:
    file = fs.open(path, "wb", block_size=block_size)
    try:
        written = _write_all(file, chunks)
    except BaseException:
        _discard(file, path)
        raise
    file.close()
    return written


def _discard(file: Any, path: str) -> None:
    try:
        file.discard()
    except Exception:
        log.warning(
            "Could not abort the upload of %s; it stays invisible until an "
            "AbortIncompleteMultipartUpload lifecycle rule removes it",
            path,
        )
    # Marking the file closed keeps fsspec's close() (and __del__, which calls it) from
    # committing what was written so far.
    file.closed = True


def _write_then_rename(fs: AbstractFileSystem, path: str, chunks: Iterable[bytes]) -> int:
    folder, name = posixpath.split(path)
    temp = posixpath.join(folder, partial_name(name))
    try:
        with fs.open(temp, "wb") as file:
            written = _write_all(file, chunks)
        fs.mv(temp, path)
    except BaseException:
        _remove_quietly(fs, temp)
        raise
    return written


def _remove_quietly(fs: AbstractFileSystem, path: str) -> None:
    try:
        if fs.exists(path):
            fs.rm(path)
    except Exception:
        log.warning("Could not remove the temporary file %s", path)
