"""
Turn what a user writes as a destination into an ``ObjectStoragePath``, and back into a URI.

This is the only storage module that imports Airflow.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from airflow.sdk import ObjectStoragePath

from airflow_provider_crun.storage.errors import StorageConfigError

# fsspec's HTTP filesystem is read-only.
_READ_ONLY_PROTOCOLS = frozenset({"http", "https"})
_LOCAL_PROTOCOLS = frozenset({"", "file", "local"})


def _split_conn_id(uri: str) -> tuple[str | None, str]:
    """``("aws_default", "s3://bucket/key")`` for ``"s3://aws_default@bucket/key"``."""
    parts = urlsplit(uri)
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at:
        return None, uri
    if ":" in userinfo:
        # Never echoed: "key:secret@" is a credential, not an Airflow connection id.
        raise StorageConfigError("the destination's userinfo must be an Airflow connection id, not a secret")
    return userinfo or None, parts._replace(netloc=host).geturl()


def _check_uri(uri: str) -> None:
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    # upath reads file://data/out (and file://localhost/data) as relative to the working directory.
    if scheme in _LOCAL_PROTOCOLS and parts.netloc:
        raise StorageConfigError(f"destination {uri!r} names a host; a local folder is file:///abs/path")
    if scheme and scheme not in _LOCAL_PROTOCOLS and not parts.netloc:
        raise StorageConfigError(f"destination {uri!r} names no bucket or container")
    # Airflow 3.1 roots a relative path at "/" rather than at the working directory.
    if not scheme and not os.path.isabs(uri):
        raise StorageConfigError(f"destination {uri!r} is relative; give an absolute path or a URI")


def _check_folder(folder: ObjectStoragePath) -> ObjectStoragePath:
    protocol = protocol_of(folder)
    if protocol in _READ_ONLY_PROTOCOLS:
        raise StorageConfigError(f"destination {folder.path!r} is read-only http(s); give a folder")
    if protocol in _LOCAL_PROTOCOLS and not os.path.isabs(folder.path):
        raise StorageConfigError(f"destination {folder.path!r} is relative; give an absolute path or a URI")
    return folder


def resolve_destination(
    destination: str | os.PathLike[str] | ObjectStoragePath, conn_id: str | None = None
) -> ObjectStoragePath:
    """
    Resolve a destination folder and an optional connection into one ``ObjectStoragePath``.

    :param destination: an ``ObjectStoragePath``, a URI such as ``"s3://bucket/crun/"``,
        ``"s3://aws_default@bucket/crun/"`` or ``"file:///data/out/"``, or an absolute local path.
    :param conn_id: the Airflow connection of the store. It may repeat the one inside
        ``destination``, not contradict it.
    :return: the folder, carrying its connection.
    :raises StorageConfigError: on an empty, relative, read-only (http) or bucket-less
        destination, on credentials in its userinfo, or on two different connection ids.
    """
    if isinstance(destination, ObjectStoragePath):
        inner = conn_id_of(destination)
        _check_conn_ids(public_uri(destination), inner, conn_id)
        if conn_id is not None and inner is None:
            options = {k: v for k, v in destination.storage_options.items() if k != "conn_id"}
            destination = ObjectStoragePath(public_uri(destination), conn_id=conn_id, **options)
        return _check_folder(destination)
    raw = os.fspath(destination) if isinstance(destination, os.PathLike) else destination
    if not isinstance(raw, str) or not raw.strip():
        raise StorageConfigError(f"destination {destination!r} is not a folder URI or path")
    inner, uri = _split_conn_id(raw)
    _check_conn_ids(uri, inner, conn_id)
    _check_uri(uri)
    return _check_folder(ObjectStoragePath(uri, conn_id=conn_id or inner))


def _check_conn_ids(uri: str, inner: str | None, conn_id: str | None) -> None:
    if conn_id is not None and inner is not None and conn_id != inner:
        raise StorageConfigError(
            f"destination {uri!r} uses connection {inner!r}, but conn_id={conn_id!r} was given"
        )


def conn_id_of(folder: ObjectStoragePath) -> str | None:
    """The folder's connection id: a property since Airflow 3.2, a storage option before."""
    conn_id = getattr(folder, "conn_id", None)
    if conn_id is None:
        conn_id = folder.storage_options.get("conn_id")
    return conn_id if isinstance(conn_id, str) else None


def protocol_of(folder: ObjectStoragePath) -> str:
    """The folder's protocol, ``"file"`` for a plain local path."""
    return folder.protocol or "file"


def public_uri(folder: ObjectStoragePath, name: str | None = None) -> str:
    """
    The URI of ``folder`` (or of the file ``name`` in it) without the ``conn_id@`` userinfo.

    :param folder: a resolved destination.
    :param name: a file name inside it, or ``None`` for the folder itself.
    :return: e.g. ``"s3://bucket/crun/task_1_0.png"`` or ``"file:///data/out/task_1_0.png"``.
    """
    path = folder.path if name is None else fs_path(folder, name)
    return f"{protocol_of(folder)}://{path}"


def fs_path(folder: ObjectStoragePath, name: str) -> str:
    """The path of the file ``name`` inside ``folder``, as the folder's filesystem spells it."""
    return f"{folder.path.rstrip('/')}/{name}"
