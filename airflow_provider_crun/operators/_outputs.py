"""
What a finished Crun task leaves behind in the user's world: stored files and asset events.

Its lineage is built by :mod:`airflow_provider_crun.openlineage.facets`, from :func:`urls_in`.

.. seealso:: :ref:`howto/storage`
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_provider_crun.exceptions import CrunInputError, CrunOutputError, CrunOutputRejectedError

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context
    from airflow.sdk import ObjectStoragePath


def check_output_path(output_path: str | ObjectStoragePath, output_conn_id: str | None) -> None:
    """
    Refuse an unusable ``output_path`` before anything is created: a relative path, a read-only
    scheme, credentials in the URI, two different connections.

    :raises CrunInputError: naming the problem.
    """
    from airflow_provider_crun.storage import StorageConfigError, resolve_destination

    try:
        resolve_destination(output_path, output_conn_id or None)
    except StorageConfigError as error:
        raise CrunInputError(
            f"output_path is unusable: {error}. Give a folder URI such as file:///data/crun/ or "
            "s3://aws_default@bucket/crun/."
        ) from None


def storage_conn_id(output_path: str | ObjectStoragePath, output_conn_id: str | None) -> str | None:
    """The connection the stored files are read with, from ``output_conn_id`` or the URI itself."""
    from airflow_provider_crun.storage.destination import conn_id_of, resolve_destination

    return conn_id_of(resolve_destination(output_path, output_conn_id or None))


def store_media(
    media_urls: Sequence[str],
    *,
    crun_task_id: str,
    output_path: str | ObjectStoragePath,
    output_conn_id: str | None,
    max_bytes: int,
) -> list[str]:
    """
    Stream every result file into ``output_path``; return the stored URIs, without credentials.

    :raises CrunOutputRejectedError: a file that can never be stored (wrong type, too large).
    :raises CrunOutputError: a failure another try may get past; that try skips complete files.
    """
    from airflow_provider_crun.storage import StorageError, store_results

    try:
        stored = store_results(
            media_urls,
            crun_task_id=crun_task_id,
            destination=output_path,
            conn_id=output_conn_id or None,
            max_bytes=max_bytes,
        )
    except StorageError as error:
        raise (CrunOutputError if error.retryable else CrunOutputRejectedError)(str(error)) from None
    return [media.uri for media in stored]


def emit_asset_events(
    context: Context, outlets: Iterable[Any], stored_paths: list[str], extra: dict[str, Any]
) -> None:
    """
    Describe the stored files to the operator's outlets.

    An ``Asset`` gets one event whose ``extra`` lists every stored path; an ``AssetAlias`` gets
    one event per stored file, with the file's URI as the asset.
    """
    from airflow.sdk import Asset, AssetAlias

    events = context.get("outlet_events")
    if events is None or not stored_paths:
        return
    for outlet in outlets:
        if isinstance(outlet, AssetAlias):
            for path in stored_paths:
                events[outlet].add(Asset(uri=path, name=path), extra={**extra, "stored_path": path})
        elif isinstance(outlet, Asset):
            event_extra: dict[str, Any] = {**extra, "stored_paths": stored_paths}
            events[outlet].extra.update(event_extra)


def urls_in(value: Any) -> list[str]:
    """Every http(s) URL inside a model input, in order: the inputs of the lineage."""
    if isinstance(value, str):
        return [value] if urlsplit(value).scheme in ("http", "https") else []
    if isinstance(value, Mapping):
        return [url for item in value.values() for url in urls_in(item)]
    if isinstance(value, (list, tuple)):
        return [url for item in value for url in urls_in(item)]
    return []
