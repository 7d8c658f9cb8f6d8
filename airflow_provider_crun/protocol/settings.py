"""What a transport needs from the ``crun`` connection, validated."""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from airflow_provider_crun.protocol.errors import ConfigError

DEFAULT_BASE_URL = "https://api.crun.ai"
API_PREFIX = "/api/v1"
DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_RETRIES = 5


@dataclass(frozen=True)
class CrunConnectionSettings:
    """
    The ``crun`` connection, validated.

    :param base_url: Versioned base URL, from :func:`normalize_base_url`.
    :param api_key: The API key; kept out of ``repr()``.
    :param timeout: Seconds for one HTTP request.
    :param max_retries: Sync calls: retries after the first attempt. Triggers: consecutive
        failed polls allowed after the first before the trigger gives up.
    :param ca_bundle: A CA bundle (file or folder) both transports trust for Crun, e.g. behind a
        TLS-inspecting proxy; ``None`` means each client's default store.
    :param min_balance: Refuse to create a job while the balance is below this (``None``: no check).
    :param proxy: An explicit proxy URL from the connection's ``proxy`` extra; ``None`` means the
        ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``NO_PROXY`` environment decides.
    """

    base_url: str
    api_key: str = field(repr=False)
    timeout: float = DEFAULT_TIMEOUT
    max_retries: int = DEFAULT_MAX_RETRIES
    proxy: str | None = field(default=None, repr=False)
    min_balance: float | None = None
    ca_bundle: str | None = None


def _is_loopback(hostname: str) -> bool:
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def normalize_base_url(host: str | None, port: int | None = None) -> str:
    """
    Turn the connection's host into the versioned API base URL.

    ``https://api.crun.ai``, ``api.crun.ai`` and ``https://api.crun.ai/api/v1`` all give
    ``https://api.crun.ai/api/v1``. Plain ``http://`` is refused unless the host is loopback,
    because the API key would otherwise cross the network in clear text.

    :raises ConfigError: for an unusable scheme, or ``http://`` to a non-loopback host.
    """
    raw = (host or DEFAULT_BASE_URL).strip()
    if "://" not in raw:
        raw = f"https://{raw}"
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number
    except ValueError:
        raise ConfigError(
            f"The crun connection's host {raw!r} is not a valid URL; set it to e.g. {DEFAULT_BASE_URL}."
        ) from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"The crun connection's host {raw!r} is not an http(s) URL; set it to e.g. {DEFAULT_BASE_URL}."
        )
    if scheme == "http" and not _is_loopback(parts.hostname):
        raise ConfigError(
            f"The crun connection's host uses plain http:// to {parts.hostname!r}, which would send the "
            "API key unencrypted. Use https://, or http:// only for a loopback host (127.0.0.1, ::1, "
            "localhost) such as the local emulator."
        )
    netloc = parts.netloc
    if port and parts.port is None:
        netloc = f"{netloc}:{port}"
    path = parts.path.rstrip("/")
    if path.endswith(API_PREFIX):
        path = path[: -len(API_PREFIX)]
    return urlunsplit((scheme, netloc, path + API_PREFIX, "", ""))


def _number_extra(extra: Mapping[str, Any], name: str, default: float, minimum: float) -> float:
    value = extra.get(name)
    if value in (None, ""):
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise ConfigError(f"The crun connection's extra {name!r} must be a number, got {value!r}.")
    if number < minimum:
        raise ConfigError(f"The crun connection's extra {name!r} must be >= {minimum:g}, got {value!r}.")
    return number


def _optional_number_extra(extra: Mapping[str, Any], name: str, *, minimum: float) -> float | None:
    if extra.get(name) in (None, ""):
        return None
    return _number_extra(extra, name, minimum, minimum)


def _proxy_extra(extra: Mapping[str, Any]) -> str | None:
    value = extra.get("proxy")
    if value in (None, ""):
        return None
    try:
        parts = urlsplit(str(value))
        usable = parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
    except ValueError:
        usable = False
    if not usable:
        # No value in the message: a proxy URL may carry a password.
        raise ConfigError(
            "The crun connection's extra 'proxy' must be an http(s) proxy URL such as "
            "'http://proxy.example.com:3128'."
        )
    return str(value)


def connection_settings(
    *, conn_id: str, host: str | None, port: int | None, password: str | None, extra: Mapping[str, Any]
) -> CrunConnectionSettings:
    """
    Validate a ``crun`` connection's fields.

    :param conn_id: The connection id, named in error messages.
    :param extra: The deserialized extra: ``timeout``, ``max_retries``, ``proxy``, ``min_balance``
        and ``ca_bundle``.
    :raises ConfigError: when the key is missing or a field is invalid.
    """
    if not password:
        raise ConfigError(
            f"The Airflow connection {conn_id!r} has no API key: put your Crun API key in its "
            "password field (shown as 'API key' in the UI)."
        )
    return CrunConnectionSettings(
        base_url=normalize_base_url(host, port),
        api_key=password,
        timeout=_number_extra(extra, "timeout", DEFAULT_TIMEOUT, minimum=1),
        max_retries=int(_number_extra(extra, "max_retries", DEFAULT_MAX_RETRIES, minimum=0)),
        proxy=_proxy_extra(extra),
        min_balance=_optional_number_extra(extra, "min_balance", minimum=0),
        ca_bundle=str(extra["ca_bundle"]) if extra.get("ca_bundle") else None,
    )


def mask_secret(value: Any, secret: str) -> Any:
    """``value`` (text, or JSON-like data) with every occurrence of ``secret`` replaced by ``***``."""
    if not secret:
        return value
    if isinstance(value, str):
        return value.replace(secret, "***")
    if isinstance(value, dict):
        return {name: mask_secret(item, secret) for name, item in value.items()}
    if isinstance(value, list):
        return [mask_secret(item, secret) for item in value]
    return value
