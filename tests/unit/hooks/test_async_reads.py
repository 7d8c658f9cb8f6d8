"""The hook's async reads (``hooks/_async_reads.py``): one attempt each, over the pooled session."""

from __future__ import annotations

import pytest

from airflow_provider_crun.exceptions import (
    CrunConfigError,
    CrunError,
    CrunGenerationFailedError,
    CrunRateLimitError,
    CrunServerError,
    CrunValidationError,
)
from airflow_provider_crun.hooks.crun import CrunHook
from airflow_provider_crun.protocol import jobs
from tests.support.connections import TEST_API_KEY, crun_connection_json
from tests.support.crun_answers import DETECT_TASK_ID, TASK_ID, detection_data, task_data
from tests.support.loop_guard import guarded
from tests.support.scripted_server import ScriptedServer, fail
from tests.support.scripted_server import ok as served


@pytest.fixture
def no_sync_lookup(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The async path never runs the blocking connection lookup on the event loop."""
    calls: list[str] = []
    lookup = guarded("CrunHook.get_connection", CrunHook.get_connection, calls)
    monkeypatch.setattr(CrunHook, "get_connection", classmethod(lambda cls, *a, **k: lookup(*a, **k)))
    return calls


@pytest.mark.usefixtures("no_sync_lookup")
class TestAsyncReads:
    async def test_aget_task_returns_the_data_unchanged(self, scripted_crun: ScriptedServer) -> None:
        data = {**task_data("running"), "field_added_later": [1]}
        scripted_crun.script("/client/job/TaskInfo", served(data))

        assert await CrunHook().aget_task(TASK_ID) == data

        (sent,) = scripted_crun.requests
        assert (sent.method, sent.path, sent.query) == (
            "GET",
            "/api/v1/client/job/TaskInfo",
            {"task_id": TASK_ID},
        )
        assert sent.headers["x-api-key"] == TEST_API_KEY

    async def test_aget_face_detection_reads_the_detection(self, scripted_crun: ScriptedServer) -> None:
        scripted_crun.script("/client/job/detect-face-result", served(detection_data()))

        assert await CrunHook().aget_face_detection(DETECT_TASK_ID) == detection_data()
        assert scripted_crun.requests[0].query == {"detect_task_id": DETECT_TASK_ID}

    @pytest.mark.parametrize(
        ("answer", "twin"),
        [
            (fail(429, 429, {"Retry-After": "5"}), CrunRateLimitError),
            (fail(500, 500), CrunServerError),
            (fail(422, 200), CrunValidationError),
            (fail(501, 200), CrunGenerationFailedError),
        ],
        ids=["429", "500", "422-in-body", "501-in-body"],
    )
    async def test_aget_job_makes_exactly_one_attempt_and_raises_the_twin(
        self, scripted_crun: ScriptedServer, answer: tuple[int, bytes, dict[str, str]], twin: type[CrunError]
    ) -> None:
        scripted_crun.script("/client/job/TaskInfo", answer, served(task_data("success")))

        with pytest.raises(twin) as raised:
            await CrunHook().aget_job(jobs.TASK, TASK_ID)

        assert type(raised.value) is twin
        assert scripted_crun.count("/client/job/TaskInfo") == 1

    async def test_aget_job_keeps_retry_after_for_the_caller(self, scripted_crun: ScriptedServer) -> None:
        scripted_crun.script("/client/job/TaskInfo", fail(429, 429, {"Retry-After": "5"}))

        with pytest.raises(CrunRateLimitError) as raised:
            await CrunHook().aget_job(jobs.TASK, TASK_ID)

        assert raised.value.retry_after == 5.0

    async def test_aget_settings_reports_a_config_error(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("AIRFLOW_CONN_CRUN_DEFAULT", crun_connection_json(api_key=None))

        with pytest.raises(CrunConfigError, match="'crun_default' has no API key"):
            await CrunHook().aget_settings()

    async def test_reads_inside_async_session_share_one_connection(
        self, scripted_crun: ScriptedServer
    ) -> None:
        scripted_crun.script("/client/job/TaskInfo", served(task_data("running")))
        hook = CrunHook()

        async with hook.async_session():
            for _ in range(5):
                await hook.aget_job(jobs.TASK, TASK_ID)

        assert scripted_crun.count("/client/job/TaskInfo") == 5
        assert scripted_crun.connections == 1

    async def test_one_hook_reading_other_jobs_asks_for_each_of_them(
        self, scripted_crun: ScriptedServer
    ) -> None:
        """A hook keeps the request of the job it reads; another job or kind gets its own."""
        scripted_crun.script("/client/job/TaskInfo", served(task_data("running")))
        scripted_crun.script("/client/job/detect-face-result", served(detection_data()))
        hook = CrunHook()

        await hook.aget_job(jobs.TASK, "task_a")
        await hook.aget_job(jobs.TASK, "task_a")
        await hook.aget_job(jobs.TASK, "task_b")
        await hook.aget_job(jobs.DETECTION, "task_b")

        asked = [(request.path.rsplit("/", 1)[-1], request.query) for request in scripted_crun.requests]
        assert asked == [
            ("TaskInfo", {"task_id": "task_a"}),
            ("TaskInfo", {"task_id": "task_a"}),
            ("TaskInfo", {"task_id": "task_b"}),
            ("detect-face-result", {"detect_task_id": "task_b"}),
        ]
