"""
The one retry predicate, and how long to wait.

Reads retry on 429, 455, 500/502/503/504, malformed answers and any transport failure. A
creation call costs credits and Crun has no idempotency key, so it is sent again only when
nothing can have been created: a 429 or 455 rejection, or a request that was never written.
"""

from __future__ import annotations

import random
from typing import Protocol

from airflow_provider_crun.protocol import errors

# 429 and 455 are rejections: nothing was created, so even a creation call may be re-sent.
REJECTION_CODES = frozenset({429, 455})
RETRYABLE_READ_CODES = frozenset({429, 455, 500, 502, 503, 504})
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 30.0


def is_retryable(error: BaseException, *, creates_billable: bool) -> bool:
    """
    Whether a failed call may be sent again.

    :param error: What the last attempt raised.
    :param creates_billable: Whether the call creates a billed job.
    """
    if isinstance(error, errors.TransportError):
        return not (creates_billable and error.request_sent)
    if isinstance(error, errors.MalformedResponseError):
        return not creates_billable
    if isinstance(error, errors.ApiError):
        return error.code in (REJECTION_CODES if creates_billable else RETRYABLE_READ_CODES)
    return False


def may_have_created(error: BaseException) -> bool:
    """
    Whether a failed creation call may still have created (and billed) the job.

    Only a rejection (429, 455, a documented permanent code) or an unsent request is certain
    to have created nothing.
    """
    if isinstance(error, errors.TransportError):
        return error.request_sent
    return isinstance(error, (errors.ServerError, errors.MalformedResponseError)) or (
        isinstance(error, errors.ApiError) and type(error) is errors.ApiError
    )


class RandomSource(Protocol):
    """Anything with ``uniform``: ``random``, a ``random.Random``, or a test's clock."""

    def uniform(self, a: float, b: float, /) -> float:
        """A number between ``a`` and ``b``."""


def backoff_seconds(
    attempt: int,
    error: BaseException | None = None,
    *,
    base: float = BACKOFF_BASE_SECONDS,
    cap: float = BACKOFF_CAP_SECONDS,
    rng: RandomSource | None = None,
) -> float:
    """
    Seconds to wait before attempt ``attempt + 1``.

    ``Retry-After`` wins when the server sent one; otherwise exponential backoff with "equal
    jitter", so pollers that failed together do not retry together.

    :param attempt: Attempts made so far (1 after the first failure).
    :param error: The last error, read for ``retry_after``.
    """
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        return float(retry_after)
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))
    return (rng or random).uniform(ceiling / 2, ceiling)
