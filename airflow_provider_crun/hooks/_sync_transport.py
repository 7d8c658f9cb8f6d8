"""
The sync transport: one ``requests`` exchange, and the tenacity loop that owns its retries.

Crun bills every job it creates and has no idempotency key, so a creation call may be sent again
only when its failed attempt certainly never wrote the request. Every exception ``requests``
(and urllib3 below it) raises around a call is sorted by :func:`request_was_sent`; anything not
in the "not written" column counts as "may have reached Crun".

::

    exception (requests 2.34, urllib3 2.x)              sent?  why
    --------------------------------------------------  -----  --------------------------------------------
    ConnectTimeout (MaxRetryError <                     no     the TCP connect never completed
      ConnectTimeoutError)
    ConnectionError < MaxRetryError <                   no     refused, unreachable, DNS failed
      NewConnectionError, NameResolutionError
    ProxyError                                          no     urllib3 raises it only before the connection
                                                               to the proxy is up (has_connected_to_proxy)
    ConnectionError < ProtocolError < OSError('Tunnel   no     the proxy refused CONNECT, inside connect(),
      connection failed: ...')                                 before a request byte
    SSLError < SSLCertVerificationError or urllib3      no     certificates are checked only in the
      CertificateError                                         handshake
    ConnectionError < ClosedPoolError; EmptyPoolError   no     no connection was taken from the pool
    InvalidURL, InvalidProxyURL, MissingSchema,         no     refused while preparing the request
      InvalidSchema, URLRequired
    InvalidHeader raised by requests (bad header        no     refused while preparing the request
      value)
    InvalidJSONError (but not JSONDecodeError)          no     the body could not be encoded
    SSLError, any other cause                           YES    urllib3 raises SSLError for a TLS failure in
                                                               the handshake and after the request was
                                                               written alike
    ReadTimeout                                         YES    written; a TLS-handshake or CONNECT timeout
                                                               looks the same
    ConnectionError < ProtocolError <                   YES    broke after (or while) the request was
      RemoteDisconnected, ConnectionResetError,                written
      BrokenPipeError, ...
    ConnectionError < ReadTimeoutError (reading the     YES    the answer was under way
      body)
    ChunkedEncodingError, ContentDecodingError          YES    broken answer body
    InvalidHeader < urllib3 InvalidHeader               YES    bad Content-Length in the answer
    RetryError, TooManyRedirects,                       YES    raised after an answer
      UnrewindableBodyError, JSONDecodeError,
      StreamConsumedError, HTTPError
    any other RequestException, urllib3 HTTPError,      YES    unknown, so conservatively sent
      http.client.HTTPException or OSError

("A < B": A wrapping B.)

Proxies follow :func:`~airflow_provider_crun.hooks._session_pool.proxy_for`, the rule shared with
the async transport; its answer is passed explicitly so ``requests``' own environment lookup
(which honours CIDR ``NO_PROXY`` entries and ``ALL_PROXY``, unlike aiohttp's) never overrides it.
"""

from __future__ import annotations

import http.client
import logging
import ssl
from collections.abc import Iterator
from typing import Any, Protocol

import requests
import tenacity
import urllib3.exceptions
from urllib3.util.ssl_match_hostname import CertificateError as Urllib3CertificateError

from airflow_provider_crun.hooks._clock import Clock
from airflow_provider_crun.hooks._session_pool import proxy_for
from airflow_provider_crun.protocol import calls, envelope, errors, retry
from airflow_provider_crun.protocol.settings import CrunConnectionSettings, mask_secret

# requests exceptions raised while the request is being prepared, before any connection.
_PREPARATION_ERRORS: tuple[type[BaseException], ...] = (
    requests.exceptions.InvalidURL,  # InvalidProxyURL too
    requests.exceptions.MissingSchema,
    requests.exceptions.InvalidSchema,
    requests.exceptions.URLRequired,
)
# urllib3 causes that are raised before a single byte of the request left this process.
NEVER_SENT_CAUSES: tuple[type[BaseException], ...] = (
    urllib3.exceptions.NewConnectionError,  # NameResolutionError too
    urllib3.exceptions.ProxyError,
    urllib3.exceptions.ClosedPoolError,
    urllib3.exceptions.EmptyPoolError,
)
# Certificate checks happen only during the TLS handshake, before the request is written.
_HANDSHAKE_ONLY_SSL_CAUSES: tuple[type[BaseException], ...] = (
    ssl.SSLCertVerificationError,
    Urllib3CertificateError,
)
# http.client's message when a proxy answers CONNECT with anything but 200 (urllib3 keeps it).
_TUNNEL_REFUSED = "Tunnel connection failed:"
# All that an exchange may raise below the API; anything else is a programming error.
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    requests.RequestException,
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
    OSError,
)


def wrapped_errors(error: BaseException, *, context: bool = False) -> Iterator[BaseException]:
    """
    ``error`` and what it wraps: ``args``, ``MaxRetryError.reason`` and ``__cause__``, depth first.

    :param context: Follow ``__context__`` too (for errors re-raised ``from None``).
    """
    seen: set[int] = set()
    stack = [error]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        inner = [arg for arg in current.args if isinstance(arg, BaseException)]
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException):
            inner.append(reason)
        if current.__cause__ is not None:
            inner.append(current.__cause__)
        if context and current.__context__ is not None:
            inner.append(current.__context__)
        stack.extend(reversed(inner))


def _tunnel_refused(error: BaseException) -> bool:
    return type(error) is OSError and error.errno is None and str(error).startswith(_TUNNEL_REFUSED)


def request_was_sent(error: BaseException) -> bool:
    """
    Whether a failed ``requests`` call may have written its request (see the module's table).

    Conservative: an exception this does not recognise as "never written" counts as written.
    """
    if isinstance(error, requests.exceptions.JSONDecodeError):
        return True
    if isinstance(error, (requests.exceptions.InvalidJSONError, *_PREPARATION_ERRORS)):
        return False
    if isinstance(error, requests.exceptions.InvalidHeader):
        # requests' own header check raises it with a message; the adapter wraps urllib3's,
        # which comes from the answer's headers.
        return any(isinstance(inner, urllib3.exceptions.HTTPError) for inner in wrapped_errors(error))
    if isinstance(error, (requests.exceptions.ConnectTimeout, requests.exceptions.ProxyError)):
        return False
    causes = list(wrapped_errors(error))
    if isinstance(error, requests.exceptions.SSLError):
        return not any(isinstance(cause, _HANDSHAKE_ONLY_SSL_CAUSES) for cause in causes)
    if isinstance(error, (requests.exceptions.ConnectionError, urllib3.exceptions.HTTPError)):
        return not any(isinstance(cause, NEVER_SENT_CAUSES) or _tunnel_refused(cause) for cause in causes)
    return True


def _proxies(settings: CrunConnectionSettings, url: str) -> dict[str, str | None]:
    # A None value also drops what requests would otherwise add from the environment.
    proxy = proxy_for(url, settings.proxy)
    return {"http": proxy, "https": proxy, "all": proxy}


def send_once(
    session: requests.Session, settings: CrunConnectionSettings, request: calls.CrunRequest
) -> dict[str, Any] | None:
    """
    One exchange: send, read, parse.

    The session's ``verify`` is passed on explicitly, so a CA bundle set on the session wins over
    ``REQUESTS_CA_BUNDLE`` (which ``requests`` otherwise lets override it).

    :raises errors.TransportError: below the API, with ``request_sent`` set.
    :raises errors.ApiError: Crun's answer was an error.
    """
    url = settings.base_url + request.path
    try:
        response = session.request(
            request.method,
            url,
            params=request.params,
            json=request.body,
            headers=calls.request_headers(settings.api_key),
            timeout=settings.timeout,
            allow_redirects=False,
            proxies=_proxies(settings, url),  # type: ignore[arg-type]
            verify=settings.ca_bundle or session.verify,
        )
        body = response.content
    except TRANSPORT_ERRORS as error:
        raise errors.TransportError(
            f"Crun {request.name}: {type(error).__name__}: {error}", request_sent=request_was_sent(error)
        ) from None
    return envelope.parse_response(response.status_code, body, response.headers, call=request.description)


class SendWatch(Protocol):
    """
    Told when a creation call goes on the wire and when it is off it again, between attempts.

    A creation intent must stand only while a request may be on its way to Crun: a try lost
    while it waits out a 429's ``Retry-After`` sent nothing that could have created a job.
    """

    def before_send(self) -> None:
        """Just before an attempt writes the request. Raising stops the call, unsent."""

    def before_wait(self) -> None:
        """After an attempt that created nothing (rejected, or never written), before the backoff."""


class AttemptCount:
    """A :class:`SendWatch` that counts a call's attempts (for a read: nothing to withdraw)."""

    def __init__(self) -> None:
        self.attempts = 0

    def before_send(self) -> None:
        self.attempts += 1

    def before_wait(self) -> None:
        """Nothing to do between the attempts of a read."""


class _CrunBackoff(tenacity.wait.wait_base):
    """
    Tenacity's wait over :func:`retry.backoff_seconds`, which honours ``Retry-After``.

    With a deadline, no wait runs past it: the next attempt is the last, right at the deadline.
    """

    def __init__(self, clock: Clock, deadline: float | None) -> None:
        self.clock = clock
        self.deadline = deadline

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        wait = retry.backoff_seconds(retry_state.attempt_number, error)
        if self.deadline is not None:
            wait = max(0.0, min(wait, self.deadline - self.clock.time()))
        return wait


class _PastDeadline(tenacity.stop.stop_base):
    """Stop once the deadline has passed (never, without one)."""

    def __init__(self, clock: Clock, deadline: float | None) -> None:
        self.clock = clock
        self.deadline = deadline

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return self.deadline is not None and self.clock.time() >= self.deadline


def call(
    session: requests.Session,
    settings: CrunConnectionSettings,
    request: calls.CrunRequest,
    *,
    clock: Clock,
    log: logging.Logger | Any,
    watch: SendWatch | None = None,
    deadline: float | None = None,
) -> dict[str, Any] | None:
    """
    Send a call, retrying what :func:`retry.is_retryable` allows, up to ``max_retries`` times.

    A creation call is re-sent only after an attempt that certainly never wrote the request.

    :param watch: Told before each attempt and before each backoff (see :class:`SendWatch`).
    :param deadline: Epoch seconds (on ``clock``) after which no attempt starts: a blocking wait
        ends at its deadline as the trigger's does, not ``max_retries`` ``Retry-After`` waits later.

    :raises errors.CrunProtocolError: the last attempt's error.
    """

    def announce(retry_state: tenacity.RetryCallState) -> None:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        wait = retry_state.next_action.sleep if retry_state.next_action else 0.0
        log.warning(
            "Crun %s failed (attempt %d of %d): %s. Retrying in %.1f s.",
            request.name,
            retry_state.attempt_number,
            settings.max_retries + 1,
            # Crun may echo the key back in a message; this line is logged before the hook masks it.
            mask_secret(str(error), settings.api_key),
            wait,
        )
        if watch is not None:
            watch.before_wait()

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(
            lambda error: retry.is_retryable(error, creates_billable=request.creates_billable)
        ),
        stop=tenacity.stop_after_attempt(settings.max_retries + 1) | _PastDeadline(clock, deadline),
        wait=_CrunBackoff(clock, deadline),
        before=(lambda retry_state: watch.before_send()) if watch is not None else tenacity.before_nothing,
        before_sleep=announce,
        sleep=clock.sleep,
        reraise=True,
    )
    return retrying(send_once, session, settings, request)
