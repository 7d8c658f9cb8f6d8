"""
Copy finished Crun result media into a storage folder (local, S3, any ``ObjectStoragePath``).

The operator calls :func:`store_results`; the errors it raises have no Airflow dependency and
carry ``retryable``, for the operator to map at its boundary.
"""

from __future__ import annotations

from airflow_provider_crun.storage.destination import public_uri, resolve_destination
from airflow_provider_crun.storage.errors import (
    DestinationError,
    MediaDownloadError,
    MediaRejectedError,
    MediaTooLargeError,
    StorageConfigError,
    StorageError,
    UnsupportedMediaTypeError,
)
from airflow_provider_crun.storage.store import DEFAULT_MAX_BYTES, DEFAULT_TIMEOUT, StoredMedia, store_results

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_TIMEOUT",
    "DestinationError",
    "MediaDownloadError",
    "MediaRejectedError",
    "MediaTooLargeError",
    "StorageConfigError",
    "StorageError",
    "StoredMedia",
    "UnsupportedMediaTypeError",
    "public_uri",
    "resolve_destination",
    "store_results",
]
