"""The one tenacity retry policy shared by the sync and async transports."""

from __future__ import annotations

import logging
from typing import Any

import tenacity

from airflow_provider_crun import protocol


class _CrunBackoff(tenacity.wait.wait_base):
    """Tenacity wait strategy over :func:`protocol.backoff_seconds` (honours ``Retry-After``)."""

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        return protocol.backoff_seconds(retry_state.attempt_number, error)


def retry_kwargs(
    request: protocol.CrunRequest, *, max_retries: int, log: logging.Logger | Any
) -> dict[str, Any]:
    """
    Keyword arguments for ``tenacity.Retrying`` / ``AsyncRetrying`` for one call.

    :param request: The call, whose ``creates_billable`` narrows what may be retried.
    :param max_retries: Retries after the first attempt.
    :param log: Where each retry is announced, with its reason and wait.
    """

    def announce(retry_state: tenacity.RetryCallState) -> None:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        wait = retry_state.next_action.sleep if retry_state.next_action else 0.0
        log.warning(
            "Crun %s failed (attempt %d of %d): %s. Retrying in %.1f s.",
            request.name,
            retry_state.attempt_number,
            max_retries + 1,
            error,
            wait,
        )

    return {
        "retry": tenacity.retry_if_exception(
            lambda error: protocol.is_retryable(error, creates_billable=request.creates_billable)
        ),
        "stop": tenacity.stop_after_attempt(max_retries + 1),
        "wait": _CrunBackoff(),
        "before_sleep": announce,
        "reraise": True,
    }
