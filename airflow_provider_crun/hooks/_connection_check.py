"""
The connection test behind ``CrunHook.test_connection``: one free balance call, one line of text.

A user clicks *Test* (or runs ``airflow connections test``) to learn what is wrong, so the check
makes exactly one attempt with a timeout of at most :data:`TEST_TIMEOUT_S` and says the cause in
the user's terms: refused, unknown host, TLS, wrong key, no answer. The text never quotes urllib3
and never names the connection id, because Airflow's UI tests a copy under a random temporary id.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import ssl
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3.exceptions

from airflow_provider_crun.hooks import _sync_transport
from airflow_provider_crun.protocol import calls, envelope, errors
from airflow_provider_crun.protocol.settings import CrunConnectionSettings, connection_settings, mask_secret

# The longest one test may wait for an answer, whatever the connection's own timeout says.
TEST_TIMEOUT_S = 5.0
# Stands in for the connection id, which the UI replaces by a random one while testing.
_THIS_CONNECTION = "this connection"


def _where(settings: CrunConnectionSettings) -> str:
    parts = urlsplit(settings.base_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.hostname}:{port}"


def transport_message(error: errors.TransportError, settings: CrunConnectionSettings) -> str:
    """One line naming why a request never got an answer: timeout, DNS, TLS, refused, or other."""
    # The transport raises from None: the causes hide in __context__ too.
    causes = list(_sync_transport.wrapped_errors(error, context=True))
    where = _where(settings)
    if any(isinstance(cause, (requests.Timeout, TimeoutError, socket.timeout)) for cause in causes):
        return f"Crun did not answer within {settings.timeout:g} s at {where}: check the Base URL."
    if any(isinstance(c, (socket.gaierror, urllib3.exceptions.NameResolutionError)) for c in causes):
        return f"The host {urlsplit(settings.base_url).hostname!r} cannot be resolved: check the Base URL."
    for cause in causes:
        if isinstance(cause, ssl.SSLCertVerificationError):
            reason = cause.verify_message or "it is not trusted"
            return (
                f"TLS to {where} failed: its certificate cannot be verified ({reason}). Behind a "
                "TLS-inspecting proxy, set the ca_bundle extra."
            )
    if any(isinstance(cause, (requests.exceptions.SSLError, ssl.SSLError)) for cause in causes):
        return f"TLS to {where} failed during the handshake: check that the Base URL speaks https."
    if any(isinstance(cause, ConnectionRefusedError) for cause in causes):
        return f"Connection refused by {where}: nothing listens there. Check the Base URL and port."
    if any(isinstance(cause, requests.exceptions.ProxyError) for cause in causes):
        return f"The proxy for {where} could not be used: check the proxy extra or HTTPS_PROXY."
    return f"Could not reach Crun at {where}: the connection broke before an answer arrived."


def api_message(error: errors.ApiError, settings: CrunConnectionSettings) -> str:
    """One line for an answer that was not a balance."""
    if isinstance(error, errors.AuthError):
        return "Crun rejected the API key (401 Unauthorized): check the connection's API key (password)."
    if isinstance(error, (errors.MalformedResponseError, errors.RedirectError)):
        return f"{settings.base_url} answered, but not as the Crun API: check the Base URL."
    message = mask_secret(" ".join(str(error.message).split()), settings.api_key)
    return f"Crun answered {error.code}: {message}"


def probe_settings(conn: Any) -> CrunConnectionSettings:
    """
    The connection's settings for a test: at most :data:`TEST_TIMEOUT_S` and no retries.

    :raises errors.ConfigError: the connection is unusable, in words that name no connection id.
    """
    if not conn.password:
        raise errors.ConfigError(
            "No API key: put your Crun API key in the connection's password field (shown as 'API key')."
        )
    settings = connection_settings(
        conn_id=_THIS_CONNECTION,
        host=conn.host,
        port=conn.port,
        password=conn.password,
        extra=conn.extra_dejson,
    )
    if settings.ca_bundle and not os.path.exists(settings.ca_bundle):
        raise errors.ConfigError(
            f"The ca_bundle extra names {settings.ca_bundle!r}, which does not exist on this machine."
        )
    return dataclasses.replace(settings, timeout=min(settings.timeout, TEST_TIMEOUT_S), max_retries=0)


def check_connection(conn: Any, session: requests.Session) -> tuple[bool, str]:
    """
    Test ``conn`` with one balance call through ``session``; never raises.

    :param conn: The Airflow connection (host, port, password, ``extra_dejson``).
    :returns: ``(True, "Connected ...")`` or ``(False, <one line naming the cause>)``.
    """
    try:
        settings = probe_settings(conn)
    except errors.CrunProtocolError as error:
        return False, str(error)
    request = calls.balance_request()
    try:
        data = _sync_transport.send_once(session, settings, request)
        balance = envelope.require_number(data, "balance", request.name)
    except errors.TransportError as error:
        return False, transport_message(error, settings)
    except errors.ApiError as error:
        return False, api_message(error, settings)
    except errors.CrunProtocolError as error:
        return False, mask_secret(" ".join(str(error).split()), settings.api_key)
    return True, f"Connected to Crun at {settings.base_url}; balance: {balance:g} credits."
