"""
The async transport for triggers: exactly one ``aiohttp`` exchange per call.

No retries here: the trigger's poll loop owns backoff, ``Retry-After`` and the deadline, so a
rate-limited API never sees nested retry loops. (aiohttp itself re-sends an idempotent ``GET``
once, at once, when the connection is lost before the answer's head, which RFC 9112 allows and
which mostly catches a keep-alive connection the server had closed; it never re-sends a
``POST``.)

Crun bills every job it creates and has no idempotency key, so :func:`request_was_sent` sorts
every exception aiohttp raises around a call; anything not in the "not written" column counts
as "may have reached Crun":

::

    exception (aiohttp 3.14)                            sent?  why
    --------------------------------------------------  -----  --------------------------------------------
    ClientConnectorError, ClientConnectorDNSError,      no     raised by the connector before the request:
      ClientProxyConnectionError,                              refused, DNS, no TCP connection to the proxy
      UnixClientConnectorError                                 or socket
    ClientConnectorSSLError,                            no     the TLS handshake failed; the connector
      ClientConnectorCertificateError                          raises these only there
    ConnectionTimeoutError                              no     the connect timeout (pool slot, TCP,
                                                               CONNECT, TLS handshake) expired
    ClientHttpProxyError                                no     the proxy answered CONNECT with an error
    ServerFingerprintMismatch                           no     checked right after the handshake
    InvalidURL, InvalidUrlClientError,                  no     refused before connecting
      NonHttpUrlClientError
    InvalidUrlRedirectClientError,                      YES    redirect variants: an answer came back
      NonHttpUrlRedirectClientError, TooManyRedirects
    ClientSSLError itself                               YES    aiohttp raises only its two connector
                                                               subclasses; of unknown origin
    ClientOSError (not a connector error)               YES    e.g. ssl.SSLError after the handshake, a
                                                               reset while reading
    ServerDisconnectedError                             YES    closed after (or while) the request was
                                                               written
    ClientConnectionResetError, ClientConnectionError   YES    broke while writing or reading
    SocketTimeoutError                                  YES    sock_read expired awaiting the answer (not
                                                               set here, listed for completeness)
    ServerTimeoutError, asyncio.TimeoutError            YES    the total timeout can fire at any stage
    ClientPayloadError                                  YES    broken answer body
    ClientResponseError, ContentTypeError,              YES    raised on (or after) an answer
      WSServerHandshakeError
    UploadAbortedError                                  YES    part of the body was sent
    any other ClientError or OSError                    YES    unknown, so conservatively sent

Timeouts: ``timeout`` seconds to connect (so a connect timeout is reported as such, never sent)
and twice that for the whole exchange. There is no separate timeout between reads, unlike
``requests``: aiohttp re-arms that timer on every chunk received, which cost a thousand pollers
two timer operations per poll, and a poll's answer is one small chunk that the overall cap
bounds anyway. The proxy comes from :func:`~airflow_provider_crun.hooks._session_pool.proxy_for`.
"""

from __future__ import annotations

import asyncio
import functools
import os
import ssl
from typing import Any

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy

from airflow_provider_crun.hooks._session_pool import proxy_for
from airflow_provider_crun.protocol import calls, envelope, errors
from airflow_provider_crun.protocol.settings import CrunConnectionSettings

# Raised before the request was written: the connection (or the proxy's tunnel) never opened.
NEVER_SENT_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.ClientConnectorError,  # DNS, proxy connection, TLS handshake subclasses included
    aiohttp.ConnectionTimeoutError,
    aiohttp.ClientHttpProxyError,
    aiohttp.ServerFingerprintMismatch,
    aiohttp.InvalidURL,
    aiohttp.NonHttpUrlClientError,
)
# Subclasses of the above that come after a first answer, or from nowhere aiohttp raises them.
_SENT_DESPITE_BASE: tuple[type[BaseException], ...] = (aiohttp.RedirectClientError,)
# All that an exchange may raise below the API; anything else is a programming error.
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (aiohttp.ClientError, asyncio.TimeoutError, OSError)
# The overall cap, in units of the connection's timeout: one to connect, one to read.
TOTAL_TIMEOUT_FACTOR = 2


def request_was_sent(error: BaseException) -> bool:
    """
    Whether a failed ``aiohttp`` call may have written its request (see the module's table).

    Conservative: an exception this does not recognise as "never written" counts as written.
    """
    if isinstance(error, _SENT_DESPITE_BASE) or type(error) is aiohttp.ClientSSLError:
        return True
    return not isinstance(error, NEVER_SENT_ERRORS)


@functools.lru_cache(maxsize=8)
def tls_context(ca_bundle: str) -> ssl.SSLContext:
    """
    A verifying TLS context that trusts the connection's ``ca_bundle`` (a file or a folder).

    It reads files: call it through ``asyncio.to_thread``, never on the event loop.

    :raises errors.ConfigError: when the bundle cannot be read.
    """
    try:
        if os.path.isdir(ca_bundle):
            return ssl.create_default_context(capath=ca_bundle)
        return ssl.create_default_context(cafile=ca_bundle)
    except (OSError, ssl.SSLError) as error:
        raise errors.ConfigError(
            f"The crun connection's ca_bundle {ca_bundle!r} is unusable: {error}"
        ) from None


def client_timeout(settings: CrunConnectionSettings) -> aiohttp.ClientTimeout:
    """``timeout`` to connect; twice that for the whole exchange."""
    return _client_timeout(settings.timeout)


@functools.lru_cache(maxsize=16)
def _client_timeout(seconds: float) -> aiohttp.ClientTimeout:
    # Cached: one immutable object per distinct timeout, not one per poll.
    return aiohttp.ClientTimeout(total=seconds * TOTAL_TIMEOUT_FACTOR, connect=seconds)


@functools.lru_cache(maxsize=16)
def _headers(api_key: str) -> CIMultiDictProxy[str]:
    # Cached and already case-insensitive: aiohttp would otherwise build a CIMultiDict per poll.
    return CIMultiDictProxy(CIMultiDict(calls.request_headers(api_key)))


async def send_once(
    session: aiohttp.ClientSession,
    settings: CrunConnectionSettings,
    request: calls.CrunRequest,
    tls: ssl.SSLContext | None = None,
    proxy_environment: tuple[str | None, ...] | None = None,
) -> dict[str, Any] | None:
    """
    One exchange: send, read, parse.

    :param tls: The context from :func:`tls_context` when the connection names a ``ca_bundle``;
        build it off the event loop (it reads the bundle).
    :param proxy_environment: The shared session's, or ``None`` to read the environment now.

    :raises errors.TransportError: below the API, with ``request_sent`` set.
    :raises errors.ApiError: Crun's answer was an error.
    """
    url = settings.base_url + request.path
    try:
        async with session.request(
            request.method,
            url,
            params=request.params,
            json=request.body,
            headers=_headers(settings.api_key),
            timeout=client_timeout(settings),
            allow_redirects=False,
            proxy=proxy_for(url, settings.proxy, proxy_environment),
            ssl=tls if tls is not None else True,
        ) as response:
            body = await response.read()
            status, headers = response.status, response.headers
    except TRANSPORT_ERRORS as error:
        raise errors.TransportError(
            f"Crun {request.name}: {type(error).__name__}: {error}", request_sent=request_was_sent(error)
        ) from None
    return envelope.parse_response(status, body, headers, call=request.description)
