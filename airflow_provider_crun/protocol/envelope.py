"""Crun's ``{code, message, data}`` envelope: from an HTTP answer to ``data`` or an error."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_crun.protocol import errors

SUCCESS_CODE = 200
# A body snippet in a message is for a human; short, so an HTML error page never floods a log.
BODY_SNIPPET_CHARS = 200
RETRY_AFTER_CAP_SECONDS = 60.0

ERROR_CLASSES: dict[int, type[errors.ApiError]] = {
    401: errors.AuthError,
    402: errors.InsufficientCreditsError,
    404: errors.NotFoundError,
    422: errors.ValidationError,
    429: errors.RateLimitError,
    455: errors.ServiceUnavailableError,
    500: errors.ServerError,
    501: errors.GenerationFailedError,
    505: errors.FeatureDisabledError,
}


def snippet(value: Any) -> str:
    """A short printable excerpt of a body or a decoded value, for messages."""
    raw = value if isinstance(value, bytes) else json.dumps(value, default=str).encode()
    text = raw[:BODY_SNIPPET_CHARS].decode("utf-8", errors="replace")
    return text + ("..." if len(raw) > BODY_SNIPPET_CHARS else "")


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Read a ``Retry-After`` header (seconds or an HTTP date), capped at a minute."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if moment.tzinfo is None:
            # RFC 5322's "-0000" means UTC with no claim about the sender's zone.
            moment = moment.replace(tzinfo=UTC)
        seconds = (moment - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return max(0.0, min(seconds, RETRY_AFTER_CAP_SECONDS))


def error_for_code(
    code: int, message: str, *, http_status: int | None = None, retry_after: float | None = None
) -> errors.ApiError:
    """Map a Crun code to its error; undocumented 4xx are client errors, 5xx server errors."""
    error_class = ERROR_CLASSES.get(code)
    if error_class is None:
        if 400 <= code < 500:
            error_class = errors.ClientError
        elif 500 <= code < 600:
            error_class = errors.ServerError
        else:
            error_class = errors.ApiError
    return error_class(code, message, http_status=http_status, retry_after=retry_after)


def _hostname(url: str) -> str | None:
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None


def _retry_after(headers: Mapping[str, str]) -> float | None:
    # Read only for an error: a thousand pollers' successful answers need no header scan.
    return parse_retry_after(_header(headers, "Retry-After"))


def parse_response(
    status: int, body: bytes, headers: Mapping[str, str], *, call: str = "Crun"
) -> dict[str, Any] | None:
    """
    Turn an HTTP answer into the envelope's ``data``, or raise the matching error.

    A non-200 ``code`` inside an HTTP-200 body raises exactly like the same HTTP status. An
    error status whose body is an envelope uses the body's code and message.

    :param call: What was called, e.g. ``"TaskInfo task_12345678"``; prefixes complaints about
        the answer's shape, so they name the job.
    :returns: The envelope's ``data``: a dict, or ``None``.
    :raises errors.ApiError: a subclass chosen by :data:`ERROR_CLASSES`.
    """
    if 300 <= status < 400:
        target = _hostname(_header(headers, "Location") or "") or "an unknown location"
        raise errors.RedirectError(
            status,
            f"Crun answered with a redirect to {target}; redirects are refused so the API key is never "
            "sent to another host. Check the connection's base URL.",
        )
    try:
        envelope = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        envelope = None
    code = envelope.get("code") if isinstance(envelope, dict) else None
    if not isinstance(code, int) or isinstance(code, bool):
        description = f"{call}: HTTP {status} with a body that is not a Crun envelope: {snippet(body)!r}"
        if status >= 400:
            raise error_for_code(status, description, http_status=status, retry_after=_retry_after(headers))
        raise errors.MalformedResponseError(status, description, http_status=status)
    assert isinstance(envelope, dict)
    message = str(envelope.get("message") or "")
    if status >= 400 and code == SUCCESS_CODE:
        code = status
    if code != SUCCESS_CODE:
        raise error_for_code(
            code, message or f"HTTP {status}", http_status=status, retry_after=_retry_after(headers)
        )
    data = envelope.get("data")
    if data is not None and not isinstance(data, dict):
        raise errors.MalformedResponseError(
            status, f"{call}: the envelope's data is not an object: {snippet(data)!r}", http_status=status
        )
    return data


def _malformed(call: str, problem: str, data: Any) -> errors.MalformedResponseError:
    return errors.MalformedResponseError(SUCCESS_CODE, f"{call} answered {problem}: {snippet(data)!r}")


def require_id(data: Any, name: str, call: str) -> str:
    """
    Read a required id field (a non-empty string or integer) of a call's ``data``.

    :param call: The call's name, for the message.
    :raises errors.MalformedResponseError: when it is missing or not an id.
    """
    value = data.get(name) if isinstance(data, dict) else None
    if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value).strip() == "":
        raise _malformed(call, f"without a usable {name!r}", data)
    return str(value)


def require_number(data: Any, name: str, call: str) -> float:
    """
    Read a required numeric field of a call's ``data``.

    :raises errors.MalformedResponseError: when it is missing or not a number.
    """
    value = data.get(name) if isinstance(data, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _malformed(call, f"without a numeric {name!r}", data)
    return float(value)
