"""
The emulator's protocol logic: accounts, detections, tasks, media lookups and counters.

Nothing here touches a socket. Status progressions are computed lazily from an injected
monotonic clock, so tests can drive a :class:`ManualClock` and check every transition without
sleeping. All public methods are thread-safe; the lock is held only for dictionary work.
"""

from __future__ import annotations

import json
import string
from collections.abc import Mapping
from typing import Any, TypeVar

from airflow_provider_crun.testing.emulator import media, urls, views
from airflow_provider_crun.testing.emulator.base import StateBase
from airflow_provider_crun.testing.emulator.media import Media, Target
from airflow_provider_crun.testing.emulator.model import (
    ApiError,
    Detection,
    ManualClock,
    Task,
    key_fingerprint,
    require_object,
    require_url,
)
from airflow_provider_crun.testing.emulator.plans import MODEL_MULTI, MODEL_SINGLE, Lookups, plan_task

__all__ = ["MODEL_MULTI", "MODEL_SINGLE", "ApiError", "EmulatorState", "ManualClock", "key_fingerprint"]

GENERATION_FAILED = "generation failed"
DETECTION_FAILED = "face detection failed"
NO_FACE = "no face detected"
_LOWER_ALNUM = string.ascii_lowercase + string.digits
_ALNUM = string.ascii_letters + string.digits
_Job = TypeVar("_Job", Detection, Task)


class EmulatorState(StateBase):
    """
    Accounts, detections, tasks and media of one emulator instance.

    :param api_keys: The accepted API key, or several.
    :param credits: Starting balance of every key.
    :param detection_cost: Credits a detection costs.
    :param task_cost: Credits a task costs.
    :param detect_delays: Seconds a detection spends ``starting`` and ``processing``.
    :param task_delays: Seconds a task spends ``pending`` and ``running``.
    :param detect_ttl: Seconds after submission during which a detect_id can be swapped.
    :param default_faces: Faces found in an image URL without ``faces=N`` or a registry entry.
    :param seed: Seed of the id generator; ``None`` (default) draws ids from the OS, so they
        differ on every run.
    :param clock: Monotonic clock driving status progressions.
    :param wall: Wall clock for the unix and date fields.
    :param base_url: Origin used in media links (``http://host:port``).
    :param on_task_created: Hook told about tasks that have a ``callback_url``.
    :param large_result_bytes: Make the result of every task created from now on a PNG of
        exactly this many bytes, streamed in chunks (see :func:`media.large_png`).
    """

    # ---------------------------------------------------------------------------------------
    # Detections

    def create_detection(self, api_key: str, body: Any, *, fail: bool = False) -> dict[str, Any]:
        """
        ``POST /client/job/detect-face-image``: validate, bill and create a detection.

        :param fail: Make the detection end ``failed`` (fault injection).
        """
        self.authenticate(api_key)
        image_url = require_url(require_object(body, "body"), "image_url")
        faces = self.faces_for(image_url)
        now, wall = self.clock(), self.wall()
        starting_s, processing_s = self.detect_delays
        with self._lock:
            self._charge(api_key, self.detection_cost)
            detection = Detection(
                detect_task_id=self._new_id("dit", _LOWER_ALNUM, 15, self._detections),
                detect_id=self._new_id("", _ALNUM, 11, self._detect_ids),
                owner=api_key,
                image_url=image_url,
                image_name=urls.image_name_for_url(image_url),
                face_count=faces,
                created=now,
                created_wall=wall,
                processing_at=now + starting_s,
                done_at=now + starting_s + processing_s,
                error=DETECTION_FAILED if fail else (NO_FACE if faces == 0 else None),
            )
            self._detections[detection.detect_task_id] = detection
            self._detect_ids[detection.detect_id] = detection
        self.counters.add("detections_created")
        return {"detect_task_id": detection.detect_task_id}

    def detection_result(self, api_key: str, detect_task_id: str | None) -> dict[str, Any]:
        """``GET /client/job/detect-face-result`` data."""
        detection = self._owned(api_key, self._detections, "detect_task_id", detect_task_id, "detect task")
        return views.detection_data(detection, self.clock(), self.base_url)

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

    def _owned(
        self, api_key: str, table: Mapping[str, _Job], id_name: str, job_id: str | None, what: str
    ) -> _Job:
        # Another key's job answers 404 like a missing one, so ids never reveal other accounts.
        self.authenticate(api_key)
        if not job_id:
            raise ApiError(422, f"{id_name} is required")
        with self._lock:
            job = table.get(job_id)
        if job is None or job.owner != api_key:
            raise ApiError(404, f"{what} not found")
        return job

    # ---------------------------------------------------------------------------------------
    # Tasks

    def create_task(self, api_key: str, body: Any, *, fail: bool = False) -> dict[str, Any]:
        """
        ``POST /client/job/CreateTask``: validate, bill and create a task.

        :param fail: Make the task end ``failed`` with code 501 (fault injection).
        """
        self.authenticate(api_key)
        request = require_object(body, "body")
        model = request.get("model")
        if not isinstance(model, str) or not model:
            raise ApiError(422, "model is required")
        callback_url = None if request.get("callback_url") is None else require_url(request, "callback_url")
        task_input = require_object(request.get("input"), "input")
        lookups = Lookups(
            faces_for=self.faces_for,
            detection=lambda detect_id: self._usable_detection(api_key, detect_id),
            target=self.resolve_target,
            default_faces=self.default_faces,
        )
        plan = plan_task(model, task_input, lookups)
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
                image_name=plan.image_name,
                face_count=plan.face_count,
                swaps=plan.swaps,
                error=GENERATION_FAILED if fail else None,
                result_bytes=self.large_result_bytes,
            )
            self._tasks[task.task_id] = task
        self.counters.add("tasks_created")
        if callback_url is not None and self.on_task_created is not None:
            self.on_task_created(task.task_id, task.done_at, callback_url)
        return {"task_id": task.task_id}

    def task_info(self, api_key: str, task_id: str | None) -> dict[str, Any]:
        """``GET /client/job/TaskInfo`` data."""
        task = self._owned(api_key, self._tasks, "task_id", task_id, "task")
        return views.task_data(task, self.clock(), self.base_url)

    def callback_payload(self, task_id: str) -> dict[str, Any]:
        """The envelope POSTed to a task's ``callback_url`` (its TaskInfo ``data``)."""
        with self._lock:
            task = self._tasks.get(task_id)
        if task is None:
            raise ApiError(404, "task not found")
        return {"code": 200, "message": "success", "data": views.task_data(task, self.clock(), self.base_url)}

    # ---------------------------------------------------------------------------------------
    # Media

    def resolve_target(self, target_url: str) -> Target:
        """
        What a swap target URL shows, without any network access.

        One of the emulator's own media URLs (on any host) stands for the picture it serves: a
        portrait, a detected face, the first face of a group picture, or a task's result. Any
        other URL, or an own URL that names nothing, becomes a face drawn from a hash of the URL.
        """
        ref = urls.parse_media(target_url)
        if ref is None:
            return Target("portrait", target_url)
        if ref.kind == urls.PORTRAIT:
            return Target("portrait", ref.name)
        if ref.kind == urls.INPUT:
            faces = urls.faces_from_query(ref.query, self.default_faces)
            return Target("crop", ref.name, faces, 0) if faces else Target("picture", ref.name)
        if ref.kind == urls.CROP:
            detection = self.find_detection(ref.name)
            if detection is not None and ref.index < detection.face_count:
                return Target("crop", detection.image_name, detection.face_count, ref.index)
        else:
            task = self.find_task(ref.name)
            if task is not None:
                return Target("picture", task.image_name, task.face_count, swaps=task.swaps)
        return Target("portrait", target_url)

    def media(self, url: str) -> Media:
        """The file behind one of the emulator's media URLs or paths (404 if there is none)."""
        ref = urls.parse_media(url)
        if ref is None:
            raise ApiError(404, "media not found")
        if ref.kind == urls.INPUT:
            faces = urls.faces_from_query(ref.query, self.default_faces)
            return Media.of(media.input_png(ref.name, faces))
        if ref.kind == urls.PORTRAIT:
            return Media.of(media.portrait_png(ref.name))
        if ref.kind == urls.CROP:
            detection = self.find_detection(ref.name)
            if detection is None or not 0 <= ref.index < detection.face_count:
                raise ApiError(404, "face not found")
            return Media.of(media.face_png(detection.image_name, detection.face_count, ref.index))
        task = self.find_task(ref.name)
        if task is None or task.error is not None or self.clock() < task.done_at:
            raise ApiError(404, "result not found")
        png = media.result_png(task.image_name, task.face_count, task.swaps)
        return Media.of(png) if task.result_bytes is None else media.large_png(png, task.result_bytes)

    def find_detection(self, detect_id: str) -> Detection | None:
        """The detection with this detect_id (any owner), if any."""
        with self._lock:
            return self._detect_ids.get(detect_id)

    def find_task(self, task_id: str) -> Task | None:
        """The task with this id (any owner), if any."""
        with self._lock:
            return self._tasks.get(task_id)
