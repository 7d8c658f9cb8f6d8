"""
Crun API semantics without any I/O.

Endpoint paths, request bodies, the ``{code, message, data}`` envelope, status words, the
error-code-to-exception map and the retry decision all live here, as pure functions over
plain values. The sync (``requests``) and async (``aiohttp``) transports in
:mod:`airflow_provider_crun.hooks.crun` only move bytes and call into this module, in the
sans-I/O style of h11: everything that decides something can be tested without a socket.
"""

from __future__ import annotations

import ipaddress
import json
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from enum import Enum
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from airflow_provider_crun import __version__
from airflow_provider_crun.exceptions import (
    CrunApiError,
    CrunAuthError,
    CrunConfigError,
    CrunFeatureDisabledError,
    CrunGenerationFailedError,
    CrunInputError,
    CrunInsufficientCreditsError,
    CrunMalformedResponseError,
    CrunNotFoundError,
    CrunRateLimitError,
    CrunRedirectError,
    CrunServerError,
    CrunServiceUnavailableError,
    CrunTransportError,
    CrunValidationError,
)

DEFAULT_BASE_URL = "https://api.crun.ai"
API_PREFIX = "/api/v1"
USER_AGENT = f"airflow-provider-crun/{__version__}"
DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_RETRIES = 5

# How long a detect_id stays usable after the detection was submitted (Crun's documented hour).
DETECT_ID_TTL_SECONDS = 3600

SUCCESS_CODE = 200
# A body snippet in an error message is for a human; keep it short so a huge HTML error page
# never floods a log or an exception.
BODY_SNIPPET_CHARS = 200
RETRY_AFTER_CAP_SECONDS = 60.0
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 30.0

ERROR_CLASSES: dict[int, type[CrunApiError]] = {
    401: CrunAuthError,
    402: CrunInsufficientCreditsError,
    404: CrunNotFoundError,
    422: CrunValidationError,
    429: CrunRateLimitError,
    455: CrunServiceUnavailableError,
    500: CrunServerError,
    501: CrunGenerationFailedError,
    505: CrunFeatureDisabledError,
}
# 429 and 455 are rejections: nothing was created, so even a creation call may be re-sent.
REJECTION_CODES = frozenset({429, 455})
RETRYABLE_READ_CODES = frozenset({429, 455, 500, 502, 503, 504})

MODEL_MULTI_FACE_SWAP = "image-face-swap-multi"
MODEL_FACE_SWAP = "image-face-swap"


# --------------------------------------------------------------------------------------------
# Requests


@dataclass(frozen=True)
class CrunRequest:
    """
    One Crun API call, ready for a transport to send.

    :param name: The endpoint's short name, for logs.
    :param method: ``GET`` or ``POST``.
    :param path: Path below the versioned base URL, e.g. ``/client/job/TaskInfo``.
    :param params: Query parameters.
    :param body: JSON body.
    :param creates_billable: ``True`` for calls that create (and bill) something on Crun. Such
        a call is never re-sent once it may have reached the server.
    """

    name: str
    method: str
    path: str
    params: Mapping[str, str] | None = None
    body: Mapping[str, Any] | None = None
    creates_billable: bool = False


def detect_faces_request(image_url: str) -> CrunRequest:
    """Build the call that creates a face detection task."""
    return CrunRequest(
        name="detect-face-image",
        method="POST",
        path="/client/job/detect-face-image",
        body={"image_url": image_url},
        creates_billable=True,
    )


def detection_result_request(detect_task_id: str) -> CrunRequest:
    """Build the call that reads a face detection task."""
    return CrunRequest(
        name="detect-face-result",
        method="GET",
        path="/client/job/detect-face-result",
        params={"detect_task_id": detect_task_id},
    )


def create_task_request(model: str, input: Mapping[str, Any], callback_url: str | None = None) -> CrunRequest:
    """Build a ``CreateTask`` call; ``callback_url`` is left out of the body when ``None``."""
    body: dict[str, Any] = {"model": model, "input": dict(input)}
    if callback_url is not None:
        body["callback_url"] = callback_url
    return CrunRequest(
        name="CreateTask", method="POST", path="/client/job/CreateTask", body=body, creates_billable=True
    )


def task_info_request(task_id: str) -> CrunRequest:
    """Build the unified task query."""
    return CrunRequest(
        name="TaskInfo", method="GET", path="/client/job/TaskInfo", params={"task_id": task_id}
    )


def balance_request() -> CrunRequest:
    """Build the balance query: free, so it doubles as the connection test."""
    return CrunRequest(name="balance", method="GET", path="/client/account/balance")


def request_headers(api_key: str) -> dict[str, str]:
    """Headers for every call; the key travels only in ``x-api-key``."""
    return {"x-api-key": api_key, "User-Agent": USER_AGENT, "Accept": "application/json"}


# --------------------------------------------------------------------------------------------
# Connection settings


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

    Accepts ``https://api.crun.ai``, ``api.crun.ai`` or ``https://api.crun.ai/api/v1``; all give
    ``https://api.crun.ai/api/v1``. A plain ``http://`` URL is refused unless its host is
    loopback, because the API key would otherwise cross the network in clear text.

    :param host: The connection's host field; empty means Crun's public URL.
    :param port: The connection's port field, used when the host names none.
    :raises CrunConfigError: for an unusable scheme, or ``http://`` to a non-loopback host.
    """
    raw = (host or DEFAULT_BASE_URL).strip()
    if "://" not in raw:
        raw = f"https://{raw}"
    parts = urlsplit(raw)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise CrunConfigError(
            f"The crun connection's host {raw!r} is not an http(s) URL; set it to e.g. {DEFAULT_BASE_URL}."
        )
    if scheme == "http" and not _is_loopback(parts.hostname):
        raise CrunConfigError(
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


@dataclass(frozen=True)
class CrunConnectionSettings:
    """
    What a transport needs from the ``crun`` connection.

    :param base_url: Versioned base URL, from :func:`normalize_base_url`.
    :param api_key: The API key; kept out of ``repr()``.
    :param timeout: Seconds for one HTTP request.
    :param max_retries: Retries after the first attempt of a retryable failure.
    """

    base_url: str
    api_key: str = field(repr=False)
    timeout: float = DEFAULT_TIMEOUT
    max_retries: int = DEFAULT_MAX_RETRIES


def _number_extra(extra: Mapping[str, Any], name: str, default: float, minimum: float) -> float:
    value = extra.get(name)
    if value in (None, ""):
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise CrunConfigError(
            f"The crun connection's extra {name!r} must be a number, got {value!r}."
        ) from None
    if number < minimum:
        raise CrunConfigError(f"The crun connection's extra {name!r} must be >= {minimum:g}, got {value!r}.")
    return number


def connection_settings(
    *, conn_id: str, host: str | None, port: int | None, password: str | None, extra: Mapping[str, Any]
) -> CrunConnectionSettings:
    """
    Validate a ``crun`` connection's fields.

    :param conn_id: The connection id, named in error messages.
    :param host: Base URL (optional).
    :param port: Port (optional, normally part of the host).
    :param password: The API key.
    :param extra: The deserialized extra: ``timeout`` and ``max_retries`` are understood.
    :raises CrunConfigError: when the key is missing or a field is invalid.
    """
    if not password:
        raise CrunConfigError(
            f"The Airflow connection {conn_id!r} has no API key: put your Crun API key in its "
            "password field (shown as 'API key' in the UI)."
        )
    return CrunConnectionSettings(
        base_url=normalize_base_url(host, port),
        api_key=password,
        timeout=_number_extra(extra, "timeout", DEFAULT_TIMEOUT, minimum=0.001),
        max_retries=int(_number_extra(extra, "max_retries", DEFAULT_MAX_RETRIES, minimum=0)),
    )


# --------------------------------------------------------------------------------------------
# Responses


def _snippet(body: bytes) -> str:
    text = body[:BODY_SNIPPET_CHARS].decode("utf-8", errors="replace")
    return text + ("..." if len(body) > BODY_SNIPPET_CHARS else "")


def parse_retry_after(value: str | None) -> float | None:
    """Read a ``Retry-After`` header (seconds or an HTTP date), capped at a minute."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            from datetime import datetime, timezone

            seconds = (parsedate_to_datetime(value) - datetime.now(timezone.utc)).total_seconds()
        except (TypeError, ValueError):
            return None
    return max(0.0, min(seconds, RETRY_AFTER_CAP_SECONDS))


def error_for_code(
    code: int, message: str, *, http_status: int | None = None, retry_after: float | None = None
) -> CrunApiError:
    """Map a Crun error code to its exception; unknown 5xx codes are server errors."""
    error_class = ERROR_CLASSES.get(code)
    if error_class is None:
        error_class = CrunServerError if 500 <= code < 600 else CrunApiError
    return error_class(code, message, http_status=http_status, retry_after=retry_after)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None


def parse_response(status: int, body: bytes, headers: Mapping[str, str]) -> Any:
    """
    Turn an HTTP response into the envelope's ``data``, or raise the matching error.

    A non-200 ``code`` inside an HTTP-200 body raises exactly like the same HTTP status. An
    error status whose body is an envelope uses the body's code and message.

    :param status: HTTP status code.
    :param body: Raw response body.
    :param headers: Response headers (any case).
    :returns: The envelope's ``data`` (a dict, or ``None``).
    :raises CrunApiError: a subclass chosen by :data:`ERROR_CLASSES`.
    """
    retry_after = parse_retry_after(_header(headers, "Retry-After"))
    if 300 <= status < 400:
        location = urlsplit(_header(headers, "Location") or "")
        target = location.hostname or "an unknown location"
        raise CrunRedirectError(
            status,
            f"Crun answered with a redirect to {target}; redirects are refused so the API key is "
            "never sent to another host. Check the connection's base URL.",
        )
    try:
        envelope = json.loads(body)
    except ValueError:
        envelope = None
    if not isinstance(envelope, dict) or not isinstance(envelope.get("code"), int):
        description = f"HTTP {status} with a body that is not a Crun envelope: {_snippet(body)!r}"
        if status >= 400:
            raise error_for_code(status, description, http_status=status, retry_after=retry_after)
        raise CrunMalformedResponseError(status, description, http_status=status)
    code: int = envelope["code"]
    message = str(envelope.get("message") or "")
    if status >= 400 and code == SUCCESS_CODE:
        code = status
    if code != SUCCESS_CODE:
        raise error_for_code(code, message or f"HTTP {status}", http_status=status, retry_after=retry_after)
    return envelope.get("data")


def require_field(data: Any, name: str, request: CrunRequest) -> Any:
    """Read a required field of a response's ``data``, or raise a malformed-response error."""
    if not isinstance(data, dict) or data.get(name) in (None, ""):
        raise CrunMalformedResponseError(
            SUCCESS_CODE, f"{request.name} answered without {name!r}: {_snippet(json.dumps(data).encode())!r}"
        )
    return data[name]


# --------------------------------------------------------------------------------------------
# Retry policy


def is_retryable(error: BaseException, *, creates_billable: bool) -> bool:
    """
    Say whether a failed call may be sent again.

    Reads retry on 429, 455, 500/502/503/504, malformed bodies and any transport failure. A
    creation call costs credits and Crun has no idempotency key, so it is re-sent only when
    nothing can have been created: a 429 or 455 rejection, or a connection that never carried
    the request.

    :param error: What the last attempt raised.
    :param creates_billable: Whether the call creates a billed object.
    """
    if isinstance(error, CrunTransportError):
        return not error.request_sent if creates_billable else True
    if isinstance(error, CrunMalformedResponseError):
        return not creates_billable
    if isinstance(error, CrunApiError):
        if creates_billable:
            return error.code in REJECTION_CODES
        return error.code in RETRYABLE_READ_CODES
    return False


def backoff_seconds(
    attempt: int,
    error: BaseException | None = None,
    *,
    base: float = BACKOFF_BASE_SECONDS,
    cap: float = BACKOFF_CAP_SECONDS,
    rng: random.Random | None = None,
) -> float:
    """
    Seconds to wait before attempt ``attempt + 1``.

    ``Retry-After`` wins when the server sent one (capped); otherwise exponential backoff with
    "equal jitter", so many pollers that failed together do not retry together.

    :param attempt: The number of attempts made so far (1 after the first failure).
    :param error: The last error, read for ``retry_after``.
    """
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        return float(retry_after)
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))
    return (rng or random).uniform(ceiling / 2, ceiling)


# --------------------------------------------------------------------------------------------
# Status of tasks and detections


class CrunJobPhase(str, Enum):
    """Where a task or detection stands, whatever spelling the endpoint used."""

    SUCCEEDED = "success"
    FAILED = "failed"
    RUNNING = "running"
    UNKNOWN = "unknown"

    @property
    def is_terminal(self) -> bool:
        """Whether the job will not change any more."""
        return self in (CrunJobPhase.SUCCEEDED, CrunJobPhase.FAILED)


# Detections say "succeeded", tasks "success", a detection's result "succeed": accept all on both.
SUCCESS_STATUSES = frozenset({"success", "succeeded", "succeed"})
FAILED_STATUSES = frozenset({"failed"})
RUNNING_STATUSES = frozenset({"starting", "processing", "pending", "running"})


def job_phase(status: Any) -> CrunJobPhase:
    """Classify a raw status value case-insensitively; anything undocumented is ``UNKNOWN``."""
    word = str(status or "").strip().lower()
    if word in SUCCESS_STATUSES:
        return CrunJobPhase.SUCCEEDED
    if word in FAILED_STATUSES:
        return CrunJobPhase.FAILED
    if word in RUNNING_STATUSES:
        return CrunJobPhase.RUNNING
    return CrunJobPhase.UNKNOWN


def job_status(data: Any) -> str:
    """The raw ``status`` word of a task or detection ``data`` object."""
    return str(data.get("status") or "") if isinstance(data, dict) else ""


def failure_detail(data: Any) -> str:
    """Crun's explanation of a failed task or detection, as one line."""
    if not isinstance(data, dict):
        return "no detail"
    for candidate in (data.get("error"), data.get("result")):
        if isinstance(candidate, dict):
            code, message = candidate.get("code"), candidate.get("message") or candidate.get("error")
            if message:
                return f"{message} (code {code})" if code is not None else str(message)
        elif candidate:
            return str(candidate)
    return "no detail"


def media_urls(task_data: Any) -> list[str]:
    """The result URLs of a successful task (an empty list when there are none)."""
    result = task_data.get("result") if isinstance(task_data, dict) else None
    urls = result.get("media_urls") if isinstance(result, dict) else None
    return [str(url) for url in urls] if isinstance(urls, list) else []


@dataclass(frozen=True)
class DetectedFace:
    """One face found by a detection: Crun's ``id`` and the ``link`` to its crop."""

    id: int
    link: str


def detection_outcome(data: Any) -> tuple[str, list[DetectedFace]]:
    """
    Read the ``detect_id`` and faces of a successful detection.

    :raises CrunMalformedResponseError: when ``result.id`` is missing.
    """
    result = data.get("result") if isinstance(data, dict) else None
    detect_id = result.get("id") if isinstance(result, dict) else None
    if not detect_id:
        raise CrunMalformedResponseError(
            SUCCESS_CODE, f"a succeeded detection has no result.id: {_snippet(json.dumps(data).encode())!r}"
        )
    faces = [
        DetectedFace(id=int(face["id"]), link=str(face.get("link") or ""))
        for face in (result.get("faces") or [])  # type: ignore[union-attr]
        if isinstance(face, dict) and face.get("id") is not None
    ]
    return str(detect_id), faces


# --------------------------------------------------------------------------------------------
# Result media

# A face-swap result is an image; anything far larger is not what we asked for.
MAX_MEDIA_BYTES = 200 * 1024 * 1024


def media_file_name(url: str) -> str:
    """
    A safe local file name for a result URL: its last path segment, without directories.

    :raises CrunInputError: when the URL is not http(s).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CrunInputError(f"Cannot download {url!r}: only http(s) result URLs are supported.")
    name = parts.path.rstrip("/").rpartition("/")[2]
    safe = "".join(char if char.isalnum() or char in "-_." else "_" for char in name).lstrip(".")
    return safe or "crun-result"


# --------------------------------------------------------------------------------------------
# Multi-face swap input


def keep_unchanged_faces(targets: Mapping[int, str], detected: Iterable[DetectedFace]) -> dict[int, str]:
    """
    Complete the requested face targets with every detected face left out.

    Crun's rule for "leave this face as it is" is to send the face's own detected ``link`` as its
    ``target``, so a face the user did not mention still appears in the request.

    :param targets: New target image URL by face id.
    :param detected: The faces of the detection the swap uses.
    :returns: A target for every detected face (and every requested one), by face id.
    """
    completed = {face.id: face.link for face in detected}
    completed.update(targets)
    return completed


def multi_face_swap_input(
    detect_id: str, image_url: str, faces: Mapping[int, str], disable_safety_checker: bool = False
) -> dict[str, Any]:
    """
    Build the ``input`` of an ``image-face-swap-multi`` task.

    :param detect_id: The ``result.id`` of a detection younger than :data:`DETECT_ID_TTL_SECONDS`.
    :param image_url: The very image URL that was detected.
    :param faces: Target image URL by face id; listed in face id order.
    :param disable_safety_checker: Sent only when ``True``, so the API default applies otherwise.
    """
    swap_input: dict[str, Any] = {
        "detect_id": detect_id,
        "image_url": image_url,
        "faces": [{"face_id": face_id, "target": faces[face_id]} for face_id in sorted(faces)],
    }
    if disable_safety_checker:
        swap_input["disable_safety_checker"] = True
    return swap_input


# --------------------------------------------------------------------------------------------
# Watching a job


@dataclass(frozen=True)
class JobObservation:
    """
    One status read of a job, classified.

    :param phase: Where the job stands.
    :param status: The raw status word, lower-cased.
    :param change: A log line when the status differs from the previous read, else ``None``.
    :param warning: A log line the first time an undocumented status is seen, else ``None``.
    """

    phase: CrunJobPhase
    status: str
    change: str | None
    warning: str | None


@dataclass
class JobWatch:
    """
    What one poller has seen of one Crun task or detection.

    The trigger (async), the hook's blocking wait and the sensors all poll the same way; this
    holds the decisions they share, free of I/O: classify each read, say when the status
    changed, and warn once per undocumented status word.

    :param label: ``task`` or ``face detection``, for messages.
    :param job_id: The Crun id, for messages.
    """

    label: str
    job_id: str
    last_status: str | None = None
    unknown_seen: set[str] = field(default_factory=set)

    def observe(self, data: Any, elapsed: float | None = None) -> JobObservation:
        """Classify one read; ``elapsed`` (seconds since the wait began) goes into the change line."""
        status = job_status(data).strip().lower()
        phase = job_phase(status)
        change = warning = None
        if status != self.last_status:
            change = (
                f"Crun {self.label} {self.job_id}: {self.last_status or '(start)'} -> {status or '(empty)'}"
            )
            if elapsed is not None:
                change += f" after {elapsed:.1f} s"
            self.last_status = status
        if phase is CrunJobPhase.UNKNOWN and status not in self.unknown_seen:
            self.unknown_seen.add(status)
            warning = f"Crun {self.label} {self.job_id}: unknown status {status!r}, treating as not finished"
        return JobObservation(phase, status, change, warning)

    def failure_message(self, data: Any) -> str:
        """Why a job whose status is ``failed`` failed, naming it."""
        return f"Crun {self.label} {self.job_id} failed: {failure_detail(data)}"

    def generation_failed_message(self, error: CrunApiError) -> str:
        """A 501 answer to a status read: the generation itself failed."""
        return f"Crun {self.label} {self.job_id} failed: {error.message} (code {error.code})"
