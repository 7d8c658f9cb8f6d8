"""
The provider's exceptions: the protocol's errors, given their Airflow meaning.

Each class here subclasses its twin in :mod:`airflow_provider_crun.protocol.errors`, so code can
catch either. A permanent error (retrying cannot change Crun's answer) is also an
``AirflowFailException``: the task fails without a retry. :func:`airflow_error` is the one
mapping, used by the hook for what it raises and by the resume methods for what a trigger
reported, so a Crun answer raises the same class in every mode.
"""

from __future__ import annotations

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException

from airflow_provider_crun.protocol import errors


class CrunError(AirflowException):
    """Base class of every error this provider raises about Crun."""


class CrunUnclassifiedError(errors.CrunProtocolError, CrunError):
    """An error with no better class, e.g. an event written by a newer release; retryable."""


class CrunConfigError(errors.ConfigError, CrunError, AirflowFailException):
    """The ``crun`` connection is unusable (no API key, refused base URL); retrying cannot help."""


class CrunInputError(errors.InputError, CrunError, AirflowFailException):
    """An argument is invalid; raised before any request, so no credit is spent."""


class CrunTransportError(errors.TransportError, CrunError):
    """The HTTP exchange failed below the API: refused, reset, timed out, TLS."""


class CrunApiError(errors.ApiError, CrunError):
    """Crun answered with an error code; ``.code`` and ``.message`` say which."""


class CrunClientError(errors.ClientError, CrunApiError, AirflowFailException):
    """An undocumented 4xx; a retry would fail the same way."""


class CrunAuthError(errors.AuthError, CrunApiError, AirflowFailException):
    """401: the API key is missing or invalid; a retry would fail the same way."""


class CrunInsufficientCreditsError(errors.InsufficientCreditsError, CrunApiError, AirflowFailException):
    """402: the account has not enough credits; a retry would fail the same way."""


class CrunNotFoundError(errors.NotFoundError, CrunApiError, AirflowFailException):
    """404: the resource or endpoint does not exist; a retry would fail the same way."""


class CrunValidationError(errors.ValidationError, CrunApiError, AirflowFailException):
    """422: Crun rejected the request parameters; a retry would fail the same way."""


class CrunRateLimitError(errors.RateLimitError, CrunApiError):
    """429: rate limited; may carry ``retry_after``."""


class CrunServiceUnavailableError(errors.ServiceUnavailableError, CrunApiError):
    """455: the service is in maintenance."""


class CrunServerError(errors.ServerError, CrunApiError):
    """500, or another 5xx without a documented meaning."""


class CrunGenerationFailedError(errors.GenerationFailedError, CrunApiError, AirflowFailException):
    """501: the generation itself failed; a final answer."""


class CrunFeatureDisabledError(errors.FeatureDisabledError, CrunApiError, AirflowFailException):
    """505: the feature is disabled for this account; a retry would fail the same way."""


class CrunMalformedResponseError(errors.MalformedResponseError, CrunApiError):
    """An answer Crun does not document (not an envelope, or a field of the wrong shape)."""


class CrunRedirectError(errors.RedirectError, CrunApiError, AirflowFailException):
    """A redirect, refused so the API key never travels to another host."""


class CrunJobFailedError(errors.JobFailedError, CrunError, AirflowFailException):
    """A Crun task or face detection finished as ``failed``; ``.job_id`` names it."""


class CrunTimeoutError(errors.JobTimeoutError, CrunError):
    """
    The wait ended before the job did; ``.limit`` says whether ``timeout`` or ``execution_timeout``.

    Crun keeps running the job, and a retry of the task reattaches to it.
    """


class CrunCreationUnknownError(errors.CreationUnknownError, CrunError, AirflowFailException):
    """
    A creation call failed after it may have reached Crun (5xx, malformed answer, reset, timeout).

    Crun may have created and billed the job, and has no idempotency key, so the task fails
    without an Airflow retry: a retry could create and pay for a second job.
    """


class CrunJobNotStoredError(CrunError, AirflowFailException):
    """
    A job was created, but its id could not be stored in ``task_state_store``.

    A retry would not find the job and would pay for another one, so the task fails without a
    retry; the message names the job.
    """


class CrunOutputError(CrunError):
    """Storing a result file failed in a way another try may get past; that try skips complete files."""


class CrunOutputRejectedError(CrunOutputError, AirflowFailException):
    """A result file that can never be stored: a type that is not an image or video, or too large."""


class CrunBalanceTooLowError(CrunError, AirflowFailException):
    """The account's balance is below ``min_balance``; nothing was created."""


_AIRFLOW_CLASSES: dict[type[errors.CrunProtocolError], type[CrunError]] = {
    protocol_class: airflow_class
    for airflow_class in (
        CrunUnclassifiedError,
        CrunConfigError,
        CrunInputError,
        CrunTransportError,
        CrunApiError,
        CrunClientError,
        CrunAuthError,
        CrunInsufficientCreditsError,
        CrunNotFoundError,
        CrunValidationError,
        CrunRateLimitError,
        CrunServiceUnavailableError,
        CrunServerError,
        CrunGenerationFailedError,
        CrunFeatureDisabledError,
        CrunMalformedResponseError,
        CrunRedirectError,
        CrunJobFailedError,
        CrunTimeoutError,
        CrunCreationUnknownError,
    )
    # Each class's first base is its protocol twin.
    for protocol_class in (airflow_class.__mro__[1],)
}


def airflow_error(error: errors.CrunProtocolError) -> CrunError:
    """
    The Airflow twin of a protocol error: same fields, same message.

    An error that already is one is returned as it is.
    """
    if isinstance(error, CrunError):
        return error
    for protocol_class in type(error).__mro__:
        airflow_class = _AIRFLOW_CLASSES.get(protocol_class)
        if airflow_class is not None:
            twin = airflow_class.from_fields(error.fields())  # type: ignore[attr-defined]
            assert isinstance(twin, CrunError)
            return twin
    raise TypeError(f"no Airflow class for {type(error).__name__}")  # pragma: no cover


def error_from_event(fields: object) -> CrunError:
    """The Airflow error a trigger reported in its event's ``error`` fields."""
    return airflow_error(errors.error_from_fields(fields))
