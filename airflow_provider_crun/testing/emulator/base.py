"""The configuration, accounts, counters, face registry and ids that :class:`EmulatorState` builds on."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypedDict
from urllib.parse import urlsplit

from airflow_provider_crun.testing.emulator import media, urls
from airflow_provider_crun.testing.emulator.model import (
    ApiError,
    Counters,
    Detection,
    Task,
    TaskCreatedHook,
    id_source,
    key_fingerprint,
    number,
)


class StateOptions(TypedDict, total=False):
    """
    The :class:`StateBase` options that ``CrunEmulator`` takes and passes on unchanged.

    Typed here once, so the emulator forwards them without restating each default.
    """

    credits: float
    detection_cost: float
    task_cost: float
    detect_delays: tuple[float, float]
    task_delays: tuple[float, float]
    detect_ttl: float
    default_faces: int
    seed: int | None
    large_result_bytes: int | None


class StateBase:
    """
    Configuration, accounts, counters, the face registry and id generation of one emulator.

    The parameters are documented on :class:`~airflow_provider_crun.testing.emulator.state.EmulatorState`.
    """

    def __init__(
        self,
        api_keys: str | Sequence[str] = "test-key",
        *,
        credits: float = 1000,
        detection_cost: float = 1,
        task_cost: float = 6,
        detect_delays: tuple[float, float] = (0.2, 0.2),
        task_delays: tuple[float, float] = (0.2, 0.5),
        detect_ttl: float = 3600.0,
        default_faces: int = 2,
        seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        base_url: str = "http://127.0.0.1",
        on_task_created: TaskCreatedHook | None = None,
        large_result_bytes: int | None = None,
    ) -> None:
        keys = [api_keys] if isinstance(api_keys, str) else list(api_keys)
        if not keys or not all(isinstance(key, str) and key for key in keys):
            raise ValueError("at least one non-empty API key is required")
        self.api_keys: tuple[str, ...] = tuple(keys)
        self.initial_credits = credits
        self.detection_cost = detection_cost
        self.task_cost = task_cost
        self.detect_delays = detect_delays
        self.task_delays = task_delays
        self.detect_ttl = detect_ttl
        self.default_faces = default_faces
        self.clock = clock
        self.wall = wall
        self.base_url = base_url.rstrip("/")
        self.on_task_created = on_task_created
        self.large_result_bytes = large_result_bytes
        self._seed = seed
        self._lock = threading.Lock()
        self._rng: random.Random = id_source(seed)
        self._face_registry: dict[str, int] = {}
        self.counters = Counters()
        self._init_objects()

    @property
    def large_result_bytes(self) -> int | None:
        """Size of the streamed result of tasks created from now on (``None``: the plain picture)."""
        return self._large_result_bytes

    @large_result_bytes.setter
    def large_result_bytes(self, value: int | None) -> None:
        if value is not None and value < media.MIN_LARGE_RESULT:
            raise ValueError(f"large_result_bytes must be at least {media.MIN_LARGE_RESULT}")
        self._large_result_bytes = value

    def _init_objects(self) -> None:
        self._balances: dict[str, float] = dict.fromkeys(self.api_keys, self.initial_credits)
        self._detections: dict[str, Detection] = {}
        self._detect_ids: dict[str, Detection] = {}
        self._tasks: dict[str, Task] = {}

    # ---------------------------------------------------------------------------------------
    # Counters

    def count(self, endpoint: str) -> None:
        """Count one request to ``endpoint`` (faulted requests included)."""
        self.counters.count(endpoint)

    def counts(self) -> dict[str, int]:
        """A copy of the per-endpoint request counts."""
        return self.counters.counts

    def reset_counters(self) -> None:
        """Zero every counter."""
        self.counters.reset()

    def reset(self) -> None:
        """Forget every detection, task and face registration; restore balances and counters."""
        with self._lock:
            self._init_objects()
            self._face_registry = {}
            self._rng = id_source(self._seed)
        self.counters.reset()

    def snapshot(self) -> dict[str, Any]:
        """Return counters and balances (keyed by :func:`key_fingerprint`) as JSON-ready data."""
        with self._lock:
            return {
                **self.counters.as_dict(),
                "balances": {key_fingerprint(k): number(v) for k, v in self._balances.items()},
                "tasks": len(self._tasks),
                "detections": len(self._detections),
                # Crun's own concurrency: the most jobs of each kind between creation and their end.
                "peak_tasks_in_flight": peak_overlap(self._tasks.values()),
                "peak_detections_in_flight": peak_overlap(self._detections.values()),
            }

    # ---------------------------------------------------------------------------------------
    # Accounts

    def authenticate(self, api_key: str | None) -> str:
        """Return the key if it is accepted, else raise a 401 :class:`ApiError`."""
        if not api_key or api_key not in self._balances:
            raise ApiError(401, "API key missing or invalid")
        return api_key

    def get_balance(self, api_key: str) -> float:
        """Return the balance of an accepted key."""
        with self._lock:
            return self._balances[self.authenticate(api_key)]

    def balance(self, api_key: str) -> dict[str, Any]:
        """``GET /client/account/balance`` data."""
        return {"balance": number(self.get_balance(api_key))}

    def _charge(self, api_key: str, cost: float) -> None:
        # Caller holds the lock.
        if self._balances[api_key] < cost:
            raise ApiError(402, "insufficient credits")
        self._balances[api_key] -= cost

    # ---------------------------------------------------------------------------------------
    # Faces per image, and URLs

    def set_faces(self, image_url: str, faces: int) -> None:
        """Make every detection of ``image_url`` find ``faces`` faces."""
        if not 0 <= faces <= urls.MAX_FACES:
            raise ValueError(f"faces must be within [0, {urls.MAX_FACES}]")
        with self._lock:
            self._face_registry[image_url] = faces

    def faces_for(self, image_url: str) -> int:
        """Faces found in ``image_url``: registry, else its ``faces=N`` query, else the default."""
        with self._lock:
            registered = self._face_registry.get(image_url)
        if registered is not None:
            return registered
        return urls.faces_from_query(urlsplit(image_url).query, self.default_faces)

    def face_link(self, detect_id: str, index: int) -> str:
        """The URL of the crop of face ``index`` of a detection."""
        return self.base_url + urls.crop_path(detect_id, index)

    def input_image_url(self, name: str = "group", faces: int = 2) -> str:
        """The URL of a generated group picture served by the emulator."""
        return self.base_url + urls.input_path(name, faces)

    def face_image_url(self, name: str) -> str:
        """The URL of a portrait (one drawn face, distinct per name), e.g. as a swap target."""
        return self.base_url + urls.portrait_path(name)

    def _new_id(self, prefix: str, alphabet: str, length: int, taken: Mapping[str, object]) -> str:
        # Caller holds the lock.
        while True:
            candidate = prefix + "".join(self._rng.choice(alphabet) for _ in range(length))
            if candidate not in taken:
                return candidate


def peak_overlap(jobs: Iterable[Any]) -> int:
    """The most jobs whose ``[created, done_at)`` spans overlap at one moment."""
    edges = sorted(edge for job in jobs for edge in ((job.created, 1), (job.done_at, -1)))
    peak = current = 0
    for _, step in edges:  # at equal times an end (-1) sorts before a start: they do not overlap
        current += step
        peak = max(peak, current)
    return peak
