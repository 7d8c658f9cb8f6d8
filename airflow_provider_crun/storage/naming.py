"""
Pure naming rules: media types, file names, redaction. No I/O.

A stored file is named ``<crun_task_id>_<n>.<ext>`` whatever the destination, so a retry finds
the file an earlier try wrote instead of writing a second copy.
"""

from __future__ import annotations

import posixpath
import re
import secrets
from collections.abc import Mapping
from types import MappingProxyType
from urllib.parse import unquote, urlsplit

from airflow_provider_crun.storage.errors import StorageConfigError

#: The extension of each common image and video type. Fixed here, not read from the machine's
#: ``mimetypes`` tables, so every worker names the same media the same way.
MEDIA_EXTENSIONS: Mapping[str, str] = MappingProxyType(
    {
        "image/png": "png",
        "image/jpeg": "jpg",
        "image/jpg": "jpg",
        "image/pjpeg": "jpg",
        "image/webp": "webp",
        "image/gif": "gif",
        "image/avif": "avif",
        "image/heic": "heic",
        "image/heif": "heif",
        "image/bmp": "bmp",
        "image/tiff": "tiff",
        "image/svg+xml": "svg",
        "video/mp4": "mp4",
        "video/webm": "webm",
        "video/quicktime": "mov",
        "video/x-matroska": "mkv",
        "video/mpeg": "mpg",
        "video/ogg": "ogv",
        "video/x-msvideo": "avi",
        "video/3gpp": "3gp",
    }
)

FALLBACK_EXTENSION = "bin"
MEDIA_TYPE_PREFIXES = ("image/", "video/")

_URL_EXTENSION = re.compile(r"[a-z0-9]{1,8}")
_EXTENSION_ALIASES = {"jpeg": "jpg"}
# Letters, digits, '.', '_' and '-', not starting with '.': never a path separator, never hidden.
_TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


def media_type(header: str | None) -> str:
    """
    Normalise a ``Content-Type`` header to ``type/subtype`` in lower case.

    :param header: the raw header value, e.g. ``"Image/PNG; charset=binary"``, or ``None``.
    :return: ``"image/png"``, or ``""`` when the header is missing or blank.
    """
    if not header:
        return ""
    return header.split(";", 1)[0].strip().lower()


def is_media_type(content_type: str) -> bool:
    """
    Whether a normalised content type is an image or a video.

    :param content_type: a value returned by :func:`media_type`.
    """
    return any(content_type.startswith(p) and len(content_type) > len(p) for p in MEDIA_TYPE_PREFIXES)


def _url_extension(url: str) -> str | None:
    last_segment = unquote(urlsplit(url).path).rsplit("/", 1)[-1]
    suffix = posixpath.splitext(last_segment)[1].lstrip(".").lower()
    if not _URL_EXTENSION.fullmatch(suffix):
        return None
    return _EXTENSION_ALIASES.get(suffix, suffix)


def extension_for(content_type: str, *urls: str) -> str:
    """
    The file extension of a media, without the dot.

    :param content_type: the normalised content type; known types win.
    :param urls: URLs whose last path segment may carry an extension, tried in order.
    :return: e.g. ``"png"``; ``"bin"`` when neither the type nor a URL tells.
    """
    if known := MEDIA_EXTENSIONS.get(content_type):
        return known
    for url in urls:
        if from_url := _url_extension(url):
            return from_url
    return FALLBACK_EXTENSION


def check_task_id(crun_task_id: str) -> str:
    """
    Refuse a ``crun_task_id`` that cannot safely become part of a file name.

    :param crun_task_id: the Crun task id, e.g. ``"task_12345678"``.
    :return: the id, unchanged.
    :raises StorageConfigError: if it is empty, too long, hidden or holds a separator.
    """
    if not isinstance(crun_task_id, str) or not _TASK_ID.fullmatch(crun_task_id):
        raise StorageConfigError(
            f"crun_task_id {crun_task_id!r} cannot name a file: use letters, digits, '.', '_' or '-', "
            "not starting with '.', at most 200 characters"
        )
    return crun_task_id


def media_name(crun_task_id: str, index: int, extension: str) -> str:
    """
    The deterministic file name of the ``index``-th result of a Crun task.

    :param crun_task_id: a checked Crun task id.
    :param index: the position of the media in ``media_urls``, from 0.
    :param extension: the extension, without the dot.
    """
    return f"{crun_task_id}_{index}.{extension}"


def partial_name(name: str) -> str:
    """
    A hidden, unique temporary name for a file being written next to ``name``.

    :param name: the final file name.
    """
    return f".{name}.partial-{secrets.token_hex(8)}"


def redact_url(url: str) -> str:
    """
    A URL fit for a log line or an error: no userinfo, no query string, no fragment.

    Signed CDN URLs carry their signature in the query, so it is shown as ``?...``.

    :param url: any URL.
    """
    try:
        parts = urlsplit(url)
        host = parts.netloc.rpartition("@")[2]
    except ValueError:
        return "<unparsable URL>"
    query = "?..." if parts.query else ""
    return f"{parts.scheme}://{host}{parts.path}{query}" if parts.scheme else f"{host}{parts.path}{query}"
