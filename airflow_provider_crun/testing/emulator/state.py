"""
The emulator's protocol logic: accounts, detections, tasks, media lookups and counters.

Nothing here touches a socket. Status progressions are computed lazily from an injected
monotonic clock, so tests can drive a :class:`ManualClock` and check every transition without
sleeping. All public methods are thread-safe; the lock is held only for dictionary work.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
import string
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from airflow_provider_crun.testing.emulator import media
from airflow_provider_crun.testing.emulator.faults import ENDPOINTS

MODEL_MULTI = "image-face-swap-multi"
MODEL_SINGLE = "image-face-swap"
PROVIDER_NAME = "crun-emulator"
GENERATION_FAILED = "generation failed"
DETECTION_FAILED = "face detection failed"
NO_FACE = "no face detected"
_LOWER_ALNUM = string.ascii_lowercase + string.digits
_ALNUM = string.ascii_letters + string.digits

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


def key_fingerprint(api_key: str) -> str:
    """Return a stable, non-reversible label for an API key (used instead of the key itself)."""
    return "sha256:" + hashlib.sha256(api_key.encode()).hexdigest()[:12]


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


def _timestamp(wall: float) -> str:
    return datetime.fromtimestamp(wall, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


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
    """A generation task; times are on the state's monotonic clock."""

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
    swaps: media.Swaps
    error: str | None


@dataclass
class Counters:
    """Request and object counters; ``counts`` is keyed by endpoint name."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys((*ENDPOINTS, "unknown"), 0))
    tasks_created: int = 0
    detections_created: int = 0
    connections_accepted: int = 0
    callbacks_delivered: int = 0
    callbacks_failed: int = 0


class EmulatorState:
    """
    Accounts, detections and tasks of one emulator instance.

    :param api_keys: The accepted API key, or several.
    :param credits: Starting balance of every key.
    :param detection_cost: Credits a detection costs.
    :param task_cost: Credits a task costs.
    :param detect_delays: Seconds a detection spends ``starting`` and ``processing``.
    :param task_delays: Seconds a task spends ``pending`` and ``running``.
    :param detect_ttl: Seconds after submission during which a detect_id can be swapped.
    :param default_faces: Faces found in an image URL without ``faces=N`` or a registry entry.
    :param seed: Seed of the id generator.
    :param clock: Monotonic clock driving status progressions.
    :param wall: Wall clock for the unix and date fields.
    :param base_url: Origin used in media links (``http://host:port``).
    :param on_task_created: Hook told about tasks that have a ``callback_url``.
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
        seed: int = 0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        base_url: str = "http://127.0.0.1",
        on_task_created: TaskCreatedHook | None = None,
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
        self._seed = seed
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._face_registry: dict[str, int] = {}
        self.counters = Counters()
        self._init_objects()

    def _init_objects(self) -> None:
        self._balances: dict[str, float] = dict.fromkeys(self.api_keys, self.initial_credits)
        self._detections: dict[str, Detection] = {}
        self._detect_ids: dict[str, Detection] = {}
        self._tasks: dict[str, Task] = {}

    # ---------------------------------------------------------------------------------------
    # Counters

    def count(self, endpoint: str) -> None:
        """Count one request to ``endpoint`` (faulted requests included)."""
        with self._lock:
            self.counters.counts[endpoint] = self.counters.counts.get(endpoint, 0) + 1

    def counts(self) -> dict[str, int]:
        """A copy of the per-endpoint request counts."""
        with self._lock:
            return dict(self.counters.counts)

    def note_connection(self, delta: int = 1) -> None:
        """Count an accepted TCP connection (``delta=-1`` takes back an admin-only one)."""
        with self._lock:
            self.counters.connections_accepted += delta

    def note_callback(self, delivered: bool) -> None:
        """Count one callback delivery attempt."""
        with self._lock:
            if delivered:
                self.counters.callbacks_delivered += 1
            else:
                self.counters.callbacks_failed += 1

    def reset_counters(self) -> None:
        """Zero every counter."""
        with self._lock:
            self.counters = Counters()

    def reset(self) -> None:
        """Forget every detection, task and face registration; restore balances and counters."""
        with self._lock:
            self._init_objects()
            self._face_registry = {}
            self._rng = random.Random(self._seed)
            self.counters = Counters()

    def snapshot(self) -> dict[str, Any]:
        """Return counters and balances (keyed by :func:`key_fingerprint`) as JSON-ready data."""
        with self._lock:
            counters = self.counters
            return {
                "counts": dict(counters.counts),
                "tasks_created": counters.tasks_created,
                "detections_created": counters.detections_created,
                "connections_accepted": counters.connections_accepted,
                "callbacks_delivered": counters.callbacks_delivered,
                "callbacks_failed": counters.callbacks_failed,
                "balances": {key_fingerprint(k): _number(v) for k, v in self._balances.items()},
                "tasks": len(self._tasks),
                "detections": len(self._detections),
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
        return {"balance": _number(self.get_balance(api_key))}

    def _charge(self, api_key: str, cost: float) -> None:
        # Caller holds the lock.
        if self._balances[api_key] < cost:
            raise ApiError(402, "insufficient credits")
        self._balances[api_key] -= cost

    # ---------------------------------------------------------------------------------------
    # Faces per image

    def set_faces(self, image_url: str, faces: int) -> None:
        """Make every detection of ``image_url`` find ``faces`` faces."""
        if not 0 <= faces <= media.MAX_FACES:
            raise ValueError(f"faces must be within [0, {media.MAX_FACES}]")
        with self._lock:
            self._face_registry[image_url] = faces

    def faces_for(self, image_url: str) -> int:
        """Faces found in ``image_url``: registry, else its ``faces=N`` query, else the default."""
        with self._lock:
            registered = self._face_registry.get(image_url)
        if registered is not None:
            return registered
        return faces_from_query(urlsplit(image_url).query, self.default_faces)

    def face_link(self, detect_id: str, index: int) -> str:
        """The URL of the crop of face ``index`` of a detection."""
        return f"{self.base_url}/media/faces/{detect_id}/{index}.png"

    def input_image_url(self, name: str = "group", faces: int = 2) -> str:
        """The URL of a generated input image served by the emulator."""
        return f"{self.base_url}/media/input/{quote(name, safe='')}.png?faces={faces}"

    # ---------------------------------------------------------------------------------------
    # Ids

    def _new_id(self, prefix: str, alphabet: str, length: int, taken: Mapping[str, object]) -> str:
        # Caller holds the lock.
        while True:
            candidate = prefix + "".join(self._rng.choice(alphabet) for _ in range(length))
            if candidate not in taken:
                return candidate

    # ---------------------------------------------------------------------------------------
    # Detections

    def create_detection(self, api_key: str, body: Any, *, fail: bool = False) -> dict[str, Any]:
        """
        ``POST /client/job/detect-face-image``: validate, bill and create a detection.

        :param fail: Make the detection end ``failed`` (fault injection).
        """
        self.authenticate(api_key)
        image_url = _require_url(_require_object(body, "body"), "image_url")
        faces = self.faces_for(image_url)
        now, wall = self.clock(), self.wall()
        starting_s, processing_s = self.detect_delays
        error = DETECTION_FAILED if fail else (NO_FACE if faces == 0 else None)
        with self._lock:
            self._charge(api_key, self.detection_cost)
            detection = Detection(
                detect_task_id=self._new_id("dit", _LOWER_ALNUM, 15, self._detections),
                detect_id=self._new_id("", _ALNUM, 11, self._detect_ids),
                owner=api_key,
                image_url=image_url,
                image_name=media.image_name_for_url(image_url),
                face_count=faces,
                created=now,
                created_wall=wall,
                processing_at=now + starting_s,
                done_at=now + starting_s + processing_s,
                error=error,
            )
            self._detections[detection.detect_task_id] = detection
            self._detect_ids[detection.detect_id] = detection
            self.counters.detections_created += 1
        return {"detect_task_id": detection.detect_task_id}

    def detection_result(self, api_key: str, detect_task_id: str | None) -> dict[str, Any]:
        """``GET /client/job/detect-face-result`` data."""
        self.authenticate(api_key)
        if not detect_task_id:
            raise ApiError(422, "detect_task_id is required")
        with self._lock:
            detection = self._detections.get(detect_task_id)
        if detection is None or detection.owner != api_key:
            raise ApiError(404, "detect task not found")
        now = self.clock()
        data: dict[str, Any] = {
            "detect_task_id": detection.detect_task_id,
            "status": "starting",
            "error": None,
            "result": None,
        }
        if now < detection.processing_at:
            return data
        if now < detection.done_at:
            data["status"] = "processing"
            return data
        if detection.error is not None:
            data.update(status="failed", error=detection.error)
            return data
        data["status"] = "succeeded"
        data["result"] = {
            "id": detection.detect_id,
            "status": "succeed",
            "type": "face_detect",
            "hair_id": None,
            "faces": [
                {"id": i, "link": self.face_link(detection.detect_id, i)} for i in range(detection.face_count)
            ],
            "started_at": _timestamp(detection.created_wall + (detection.processing_at - detection.created)),
            "finished_at": _timestamp(detection.created_wall + (detection.done_at - detection.created)),
            "error": None,
        }
        return data

    def _usable_detection(self, api_key: str, detect_id: str) -> Detection:
        with self._lock:
            detection = self._detect_ids.get(detect_id)
        now = self.clock()
        if detection is None or detection.owner != api_key or detection.error is not None:
            raise ApiError(422, f"detect_id {detect_id!r} not found")
        if now < detection.done_at:
            raise ApiError(422, f"detect_id {detect_id!r} is not ready yet")
        if now >= detection.created + self.detect_ttl:
            raise ApiError(422, "detect_id expired")
        return detection

    # ---------------------------------------------------------------------------------------
    # Tasks

    def create_task(self, api_key: str, body: Any, *, fail: bool = False) -> dict[str, Any]:
        """
        ``POST /client/job/CreateTask``: validate, bill and create a task.

        :param fail: Make the task end ``failed`` with code 501 (fault injection).
        """
        self.authenticate(api_key)
        request = _require_object(body, "body")
        model = request.get("model")
        if not isinstance(model, str) or not model:
            raise ApiError(422, "model is required")
        callback_url = None if request.get("callback_url") is None else _require_url(request, "callback_url")
        task_input = _require_object(request.get("input"), "input")
        if model == MODEL_MULTI:
            image_name, faces, swaps = self._plan_multi(api_key, task_input)
        elif model == MODEL_SINGLE:
            image_url = _require_url(task_input, "image_url")
            new_face = _require_url(task_input, "new_face")
            faces = self.faces_for(image_url)
            image_name, swaps = media.image_name_for_url(image_url), ((0, new_face),) if faces else ()
        else:
            # Any other model echoes its input image (or a picture named after the model).
            echoed = task_input.get("image_url")
            if isinstance(echoed, str) and echoed:
                image_name, faces = media.image_name_for_url(echoed), self.faces_for(echoed)
            else:
                image_name, faces = f"model:{model}", self.default_faces
            swaps = ()
        now, wall = self.clock(), self.wall()
        pending_s, running_s = self.task_delays
        with self._lock:
            self._charge(api_key, self.task_cost)
            task = Task(
                task_id=self._new_id("task_", string.digits, 8, self._tasks),
                owner=api_key,
                model=model,
                callback_url=callback_url,
                input=json.loads(json.dumps(task_input)),
                cost=self.task_cost,
                created=now,
                created_wall=wall,
                running_at=now + pending_s,
                done_at=now + pending_s + running_s,
                image_name=image_name,
                face_count=faces,
                swaps=swaps,
                error=GENERATION_FAILED if fail else None,
            )
            self._tasks[task.task_id] = task
            self.counters.tasks_created += 1
        if callback_url is not None and self.on_task_created is not None:
            self.on_task_created(task.task_id, task.done_at, callback_url)
        return {"task_id": task.task_id}

    def _plan_multi(self, api_key: str, task_input: dict[str, Any]) -> tuple[str, int, media.Swaps]:
        detect_id = task_input.get("detect_id")
        if not isinstance(detect_id, str) or not detect_id:
            raise ApiError(422, "input.detect_id is required")
        image_url = _require_url(task_input, "image_url")
        faces = task_input.get("faces")
        if not isinstance(faces, list) or not faces:
            raise ApiError(422, "input.faces must be a non-empty list")
        safety = task_input.get("disable_safety_checker")
        if safety is not None and not isinstance(safety, bool):
            raise ApiError(422, "input.disable_safety_checker must be a boolean")
        targets: dict[int, str] = {}
        for entry in faces:
            if not isinstance(entry, dict):
                raise ApiError(422, "every entry of input.faces must be an object")
            face_id, target = entry.get("face_id"), entry.get("target")
            if not isinstance(face_id, int) or isinstance(face_id, bool):
                raise ApiError(422, "face_id must be an integer")
            if not isinstance(target, str) or not target:
                raise ApiError(422, f"target of face {face_id} must be a non-empty string")
            if face_id in targets:
                raise ApiError(422, f"face {face_id} listed twice")
            targets[face_id] = target
        detection = self._usable_detection(api_key, detect_id)
        if image_url != detection.image_url:
            raise ApiError(422, "image_url does not match the detected image")
        for face_id in targets:
            if not 0 <= face_id < detection.face_count:
                raise ApiError(422, f"face {face_id} not found in detection")
        for face_id in range(detection.face_count):
            if face_id not in targets:
                raise ApiError(422, f"face {face_id} missing")
        own_path = "/media/faces/{}/{}.png"
        swaps = tuple(
            (face_id, target)
            for face_id, target in sorted(targets.items())
            if urlsplit(target).path != own_path.format(detection.detect_id, face_id)
        )
        return detection.image_name, detection.face_count, swaps

    def _task_data(self, task: Task, now: float) -> dict[str, Any]:
        data: dict[str, Any] = {
            "task_id": task.task_id,
            "provider": PROVIDER_NAME,
            "model_version": f"{task.model}-emulator-1",
            "status": "pending",
            "param": {
                "model": task.model,
                "callback_url": task.callback_url,
                "input": copy.deepcopy(task.input),
            },
            "create_at": int(task.created_wall),
            "result": None,
            "duration_s": None,
            "complete_at": None,
            "source": "api",
        }
        if now < task.running_at:
            return data
        if now < task.done_at:
            data["status"] = "running"
            return data
        if task.error is not None:
            data["status"] = "failed"
            data["result"] = {"code": 501, "message": task.error}
        else:
            data["status"] = "success"
            data["result"] = {"media_urls": [f"{self.base_url}/media/results/{task.task_id}.png"]}
        data["duration_s"] = round(task.done_at - task.created, 3)
        data["complete_at"] = int(task.created_wall + (task.done_at - task.created))
        data["credits"] = _number(task.cost)
        return data

    def task_info(self, api_key: str, task_id: str | None) -> dict[str, Any]:
        """``GET /client/job/TaskInfo`` data."""
        self.authenticate(api_key)
        if not task_id:
            raise ApiError(422, "task_id is required")
        with self._lock:
            task = self._tasks.get(task_id)
        if task is None or task.owner != api_key:
            raise ApiError(404, "task not found")
        return self._task_data(task, self.clock())

    def callback_payload(self, task_id: str) -> dict[str, Any]:
        """The envelope POSTed to a task's ``callback_url`` (its TaskInfo ``data``)."""
        with self._lock:
            task = self._tasks.get(task_id)
        if task is None:
            raise ApiError(404, "task not found")
        return {"code": 200, "message": "success", "data": self._task_data(task, self.clock())}

    # ---------------------------------------------------------------------------------------
    # Media

    def face_image(self, detect_id: str, index: int) -> bytes:
        """PNG of face ``index`` of a detection (404 if unknown)."""
        with self._lock:
            detection = self._detect_ids.get(detect_id)
        if detection is None or not 0 <= index < detection.face_count:
            raise ApiError(404, "face not found")
        return media.face_png(detection.image_name, detection.face_count, index)

    def result_image(self, task_id: str) -> bytes:
        """PNG result of a task that finished with success (404 otherwise)."""
        with self._lock:
            task = self._tasks.get(task_id)
        if task is None or task.error is not None or self.clock() < task.done_at:
            raise ApiError(404, "result not found")
        return media.result_png(task.image_name, task.face_count, task.swaps)


def faces_from_query(query: str, default: int) -> int:
    """Read ``faces=N`` from a URL query, falling back to ``default`` when absent or invalid."""
    values = parse_qs(query).get("faces")
    if values:
        try:
            faces = int(values[0])
        except ValueError:
            return default
        if 0 <= faces <= media.MAX_FACES:
            return faces
    return default


def _require_object(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ApiError(422, f"{name} must be a JSON object")
    return value


def _require_url(container: Mapping[str, Any], name: str) -> str:
    value = container.get(name)
    if not isinstance(value, str) or not value:
        raise ApiError(422, f"{name} is required")
    if urlsplit(value).scheme not in ("http", "https"):
        raise ApiError(422, f"{name} must be an http(s) URL")
    return value
