"""The emulator's records (detections, tasks, counters), its error type, clocks and small helpers."""

from __future__ import annotations

import hashlib
import json
import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_crun.testing.emulator.faults import ENDPOINTS
from airflow_provider_crun.testing.emulator.media import Swaps

TaskCreatedHook = Callable[[str, float, str], None]
"""Called with ``(task_id, finish time on the state's clock, callback_url)``."""


class ApiError(Exception):
    """
    A Crun error response: ``code`` is both the HTTP status and the envelope code.

    :param code: The error code, e.g. 422.
    :param message: A human-readable message (never containing the API key).
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ManualClock:
    """A monotonic clock for tests that only moves when :meth:`advance` is called."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``."""
        with self._lock:
            self._now += seconds


def id_source(seed: int | None) -> random.Random:
    """
    The generator of object ids: reproducible with a ``seed``, else drawn from the OS.

    Without a seed, two emulator runs (or a restart) never hand out the same ids.
    """
    return random.Random(seed) if seed is not None else random.SystemRandom()


def key_fingerprint(api_key: str) -> str:
    """Return a stable, non-reversible label for an API key (used instead of the key itself)."""
    return "sha256:" + hashlib.sha256(api_key.encode()).hexdigest()[:12]


def number(value: float) -> float | int:
    """``value`` as an int when it is whole (JSON ``6`` rather than ``6.0``)."""
    return int(value) if float(value).is_integer() else value


def timestamp(wall: float) -> str:
    """Crun's ``YYYY-MM-DD HH:MM:SS`` (UTC) form of a unix time."""
    return datetime.fromtimestamp(wall, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


@dataclass(frozen=True)
class Detection:
    """A face detection; times are on the state's monotonic clock."""

    detect_task_id: str
    detect_id: str
    owner: str
    image_url: str
    image_name: str
    face_count: int
    created: float
    created_wall: float
    processing_at: float
    done_at: float
    error: str | None


@dataclass(frozen=True)
class Task:
    """
    A generation task; times are on the state's monotonic clock.

    ``result_bytes`` is the size of a large, streamed result, or ``None`` for the plain picture.
    """

    task_id: str
    owner: str
    model: str
    callback_url: str | None
    input: dict[str, Any]
    cost: float
    created: float
    created_wall: float
    running_at: float
    done_at: float
    image_name: str
    face_count: int
    swaps: Swaps
    error: str | None
    result_bytes: int | None = None


class Counters:
    """Thread-safe request and object counters; ``counts`` is keyed by endpoint name."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Zero every counter."""
        with self._lock:
            self._counts = dict.fromkeys((*ENDPOINTS, "unknown"), 0)
            self.tasks_created = 0
            self.detections_created = 0
            self.connections_accepted = 0
            self.callbacks_delivered = 0
            self.callbacks_failed = 0

    def count(self, endpoint: str) -> None:
        """Count one request to ``endpoint`` (faulted requests included)."""
        with self._lock:
            self._counts[endpoint] = self._counts.get(endpoint, 0) + 1

    @property
    def counts(self) -> dict[str, int]:
        """A copy of the per-endpoint request counts."""
        with self._lock:
            return dict(self._counts)

    def add(self, name: str, delta: int = 1) -> None:
        """Add ``delta`` to the counter ``name`` (e.g. ``"tasks_created"``)."""
        with self._lock:
            setattr(self, name, getattr(self, name) + delta)

    def as_dict(self) -> dict[str, Any]:
        """Every counter as JSON-ready data."""
        with self._lock:
            return {
                "counts": dict(self._counts),
                "tasks_created": self.tasks_created,
                "detections_created": self.detections_created,
                "connections_accepted": self.connections_accepted,
                "callbacks_delivered": self.callbacks_delivered,
                "callbacks_failed": self.callbacks_failed,
            }


def json_body(body: bytes) -> Any:
    """A request body parsed as JSON, else a 422."""
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ApiError(422, "request body is not valid JSON") from None


def require_object(value: Any, name: str) -> dict[str, Any]:
    """``value`` if it is a JSON object, else a 422."""
    if not isinstance(value, dict):
        raise ApiError(422, f"{name} must be a JSON object")
    return value


def require_url(container: Mapping[str, Any], name: str) -> str:
    """The http(s) URL ``container[name]``, else a 422."""
    value = container.get(name)
    if not isinstance(value, str) or not value:
        raise ApiError(422, f"{name} is required")
    if urlsplit(value).scheme not in ("http", "https"):
        raise ApiError(422, f"{name} must be an http(s) URL")
    return value
