"""Exceptions raised by the Crun provider."""

from __future__ import annotations

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException


class CrunError(AirflowException):
    """Base class of every error this provider raises about Crun."""


class CrunConfigError(CrunError, AirflowFailException):
    """The ``crun`` connection is unusable (no API key, refused base URL); retrying cannot help."""


class CrunInputError(CrunError, AirflowFailException):
    """
    An operator argument is invalid; raised before any request, so no credit is spent.

    It is an ``AirflowFailException``: the same input fails the same way on every retry.
    """


class CrunTransportError(CrunError):
    """
    The HTTP exchange failed below the API level: refused connection, timeout, reset.

    :param message: What went wrong, without the API key.
    :param request_sent: Whether the request may have reached the server. A creation call is
        only ever retried when this is ``False``, because Crun bills every created task.
    """

    def __init__(self, message: str, *, request_sent: bool) -> None:
        super().__init__(message)
        self.message = message
        self.request_sent = request_sent


class CrunApiError(CrunError):
    """
    Crun answered with an error, either as the HTTP status or as ``code`` in the envelope.

    :param code: Crun's error code (or the HTTP status when the body had none).
    :param message: Crun's message, or a short description of the bad response.
    :param http_status: The HTTP status of the response.
    :param retry_after: Seconds the server asked us to wait (``Retry-After``), if any.
    """

    def __init__(
        self,
        code: int,
        message: str,
        *,
        http_status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"Crun API error {code}: {message}")
        self.code = code
        self.message = message
        self.http_status = http_status if http_status is not None else code
        self.retry_after = retry_after


class CrunAuthError(CrunApiError, AirflowFailException):
    """401: the API key is missing or invalid; a retry would fail the same way."""


class CrunInsufficientCreditsError(CrunApiError, AirflowFailException):
    """402: the account has not enough credits; a retry would fail the same way."""


class CrunNotFoundError(CrunApiError, AirflowFailException):
    """404: the resource or endpoint does not exist; a retry would fail the same way."""


class CrunValidationError(CrunApiError, AirflowFailException):
    """422: Crun rejected the request parameters; a retry would fail the same way."""


class CrunRateLimitError(CrunApiError):
    """429: rate limited; may carry ``retry_after``."""


class CrunServiceUnavailableError(CrunApiError):
    """455: the service is in maintenance."""


class CrunServerError(CrunApiError):
    """500 or another 5xx without a documented meaning."""


class CrunGenerationFailedError(CrunApiError, AirflowFailException):
    """501: the generation itself failed; a final answer."""


class CrunFeatureDisabledError(CrunApiError, AirflowFailException):
    """505: the feature is disabled for this account; a retry would fail the same way."""


class CrunMalformedResponseError(CrunApiError):
    """The response body is not a Crun envelope (not JSON, or the wrong shape)."""


class CrunRedirectError(CrunApiError, AirflowFailException):
    """Crun answered with a redirect, which is refused so the API key never travels to another host."""


class CrunCreationUnknownError(CrunError, AirflowFailException):
    """
    A creation call failed after it may have reached Crun (5xx, malformed answer, reset, timeout).

    Crun may have created and billed the job, and has no idempotency key, so the task fails
    without an Airflow retry: a retry could create and pay for a second job.
    """


class CrunJobFailedError(CrunError, AirflowFailException):
    """
    A Crun task or face detection finished in the ``failed`` state.

    :param message: Crun's failure detail, prefixed with the job id.
    :param job_id: The Crun task id or detection task id.
    """

    def __init__(self, message: str, *, job_id: str | None = None) -> None:
        super().__init__(message)
        self.job_id = job_id
