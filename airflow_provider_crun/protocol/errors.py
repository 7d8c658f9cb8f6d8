"""
The protocol's own errors: plain Python exceptions, with no Airflow in sight.

Each class says two things about a failure, as data: its ``kind`` (a stable word that crosses
the metadata database inside a trigger event) and whether it is ``permanent`` (sending the
same request again cannot change the answer). :mod:`airflow_provider_crun.exceptions` maps
each class onto its Airflow twin, which gives ``permanent`` its Airflow meaning: no retry.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar


def _whole_number(value: Any) -> int | None:
    """``value`` as an int when it is a finite whole number (never a bool), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        return None
    return int(value)


def _seconds(value: Any) -> float | None:
    """``value`` as a float when it is a finite number (never a bool), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


#: Every protocol error class by its ``kind``: how an event's error fields find their class.
ERRORS_BY_KIND: dict[str, type[CrunProtocolError]] = {}


class CrunProtocolError(Exception):
    """
    Base of every error the protocol layer raises.

    :param message: What went wrong, for a human; never contains the API key.
    """

    kind: ClassVar[str] = "error"
    permanent: ClassVar[bool] = False
    #: Attributes carried in :meth:`fields` besides kind, message and permanence.
    extra_fields: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Only this module's classes: the Airflow twins in exceptions.py reuse their kinds.
        if cls.__module__ == __name__:
            assert cls.kind not in ERRORS_BY_KIND, f"two error classes of kind {cls.kind!r}"
            ERRORS_BY_KIND[cls.kind] = cls

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def fields(self) -> dict[str, Any]:
        """This error as plain JSON values; :func:`error_from_fields` rebuilds it."""
        extra = {name: getattr(self, name) for name in self.extra_fields}
        return {"kind": self.kind, "message": self.message, "permanent": self.permanent, **extra}

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> CrunProtocolError:
        """Rebuild an error of this class from :meth:`fields`."""
        return cls(str(fields.get("message") or "no message"))


ERRORS_BY_KIND[CrunProtocolError.kind] = CrunProtocolError


class ConfigError(CrunProtocolError):
    """The ``crun`` connection is unusable: no API key, a refused base URL, a bad extra."""

    kind = "config"
    permanent = True


class InputError(CrunProtocolError):
    """An argument is invalid; raised before any request, so no credit is spent."""

    kind = "input"
    permanent = True


class TransportError(CrunProtocolError):
    """
    The HTTP exchange failed below the API: refused, reset, timed out, TLS.

    :param request_sent: Whether the request may have reached Crun. A creation call is
        re-sent only when this is ``False``.
    """

    kind = "transport"
    extra_fields: ClassVar[tuple[str, ...]] = ("request_sent",)

    def __init__(self, message: str, *, request_sent: bool) -> None:
        super().__init__(message)
        self.request_sent = request_sent

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> TransportError:
        """Rebuild, ``request_sent`` included."""
        return cls(str(fields.get("message") or ""), request_sent=bool(fields.get("request_sent", True)))


class ApiError(CrunProtocolError):
    """
    Crun answered with an error code, as the HTTP status or inside an HTTP-200 envelope.

    :param code: Crun's code (or the HTTP status when the body had none).
    :param message: Crun's message, or a short description of the bad answer.
    :param http_status: The HTTP status of the response.
    :param retry_after: Seconds the server asked us to wait, if it said.
    """

    kind = "api"
    extra_fields: ClassVar[tuple[str, ...]] = ("code", "http_status", "retry_after")

    def __init__(
        self, code: int, message: str, *, http_status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.args = (f"Crun API error {code}: {message}",)
        self.code = code
        self.http_status = http_status if http_status is not None else code
        self.retry_after = retry_after

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> ApiError:
        """Rebuild, the code included."""
        code = _whole_number(fields.get("code")) or 0
        return cls(
            code,
            str(fields.get("message") or ""),
            http_status=_whole_number(fields.get("http_status")),
            retry_after=_seconds(fields.get("retry_after")),
        )


class ClientError(ApiError):
    """An undocumented 4xx: the request itself is wrong, so it fails the same way again."""

    kind = "client"
    permanent = True


class AuthError(ApiError):
    """401: the API key is missing or invalid."""

    kind = "auth"
    permanent = True


class InsufficientCreditsError(ApiError):
    """402: the account has not enough credits."""

    kind = "credits"
    permanent = True


class NotFoundError(ApiError):
    """404: the resource or endpoint does not exist."""

    kind = "not_found"
    permanent = True


class ValidationError(ApiError):
    """422: Crun rejected the request's parameters."""

    kind = "validation"
    permanent = True


class RateLimitError(ApiError):
    """429: rate limited; may carry ``retry_after``."""

    kind = "rate_limit"


class ServiceUnavailableError(ApiError):
    """455: maintenance."""

    kind = "unavailable"


class ServerError(ApiError):
    """500, or another 5xx with no documented meaning."""

    kind = "server"


class GenerationFailedError(ApiError):
    """501: the generation itself failed."""

    kind = "generation_failed"
    permanent = True


class FeatureDisabledError(ApiError):
    """505: the feature is disabled for this account."""

    kind = "feature_disabled"
    permanent = True


class MalformedResponseError(ApiError):
    """An answer that is not what Crun documents: not an envelope, or a field of the wrong shape."""

    kind = "malformed"

    def __init__(
        self, code: int, message: str, *, http_status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(code, message, http_status=http_status, retry_after=retry_after)
        # Not "Crun API error 200": Crun reported no error, the answer itself is unusable.
        self.args = (f"Malformed Crun answer: {message}",)


class RedirectError(ApiError):
    """A redirect, refused so the API key never travels to another host."""

    kind = "redirect"
    permanent = True


class JobFailedError(CrunProtocolError):
    """
    A Crun task or detection finished as ``failed``, or became unusable.

    :param job_id: The Crun id, also named in the message.
    """

    kind = "job_failed"
    extra_fields: ClassVar[tuple[str, ...]] = ("job_id",)
    permanent = True

    def __init__(self, message: str, *, job_id: str | None = None) -> None:
        super().__init__(message)
        self.job_id = job_id

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> JobFailedError:
        """Rebuild, the job id included."""
        job_id = fields.get("job_id")
        return cls(str(fields.get("message") or ""), job_id=str(job_id) if job_id is not None else None)


class JobTimeoutError(JobFailedError):
    """
    The wait ended before the job did. Crun keeps running it, so a retry reattaches.

    :param limit: Which limit ended the wait: ``timeout`` or ``execution_timeout``.
    """

    kind = "timeout"
    extra_fields: ClassVar[tuple[str, ...]] = ("job_id", "limit")
    permanent = False

    def __init__(self, message: str, *, job_id: str | None = None, limit: str = "timeout") -> None:
        super().__init__(message, job_id=job_id)
        self.limit = limit

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> JobTimeoutError:
        """Rebuild, the limit included."""
        job_id = fields.get("job_id")
        return cls(
            str(fields.get("message") or ""),
            job_id=str(job_id) if job_id is not None else None,
            limit=str(fields.get("limit") or "timeout"),
        )


class CreationUnknownError(CrunProtocolError):
    """
    A creation call failed after it may have reached Crun.

    Crun may have created and billed the job and has no idempotency key, so nothing may send
    the call again: not this try, not a retry.
    """

    kind = "creation_unknown"
    permanent = True


def error_from_fields(fields: Any) -> CrunProtocolError:
    """
    Rebuild an error from :meth:`CrunProtocolError.fields`, e.g. out of a trigger event.

    An unknown ``kind`` (an event written by a newer release) becomes the base class, which is
    not permanent: a retry can only reattach, never pay twice.
    """
    if not isinstance(fields, dict):
        return CrunProtocolError(f"an error without details: {fields!r}")
    return ERRORS_BY_KIND.get(str(fields.get("kind")), CrunProtocolError).from_fields(fields)
