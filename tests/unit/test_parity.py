"""
One Crun answer, one outcome: the same exception class and retry meaning in every mode.

Each row is an HTTP answer Crun documents (or a malformed one). It answers the status read of a
task while the operator waits in blocking mode (the hook's sync transport, with retries), in
deferrable mode (the trigger's single-attempt reads over the real aiohttp path, from a loopback
server; its event is fed to ``execute_complete``),
and on the reattach read that every mode, submit-only included, makes for a stored id. A second
table answers the creation call itself, which is shared by every mode.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException, TaskDeferred

from airflow_provider_crun import exceptions as crun_exceptions
from airflow_provider_crun.exceptions import CrunError
from airflow_provider_crun.operators.task import CrunCreateTaskOperator
from airflow_provider_crun.protocol import calls
from airflow_provider_crun.triggers import crun as crun_triggers
from tests.support import sockets
from tests.support.connections import crun_connection_json
from tests.support.crun_answers import CREATE, IMAGE, TASK_ID, TASK_INFO, ok, task_data
from tests.support.fakes import FakeClock, FakeTaskStateStore, make_context

MODEL = "image-face-swap"
INPUT = {"image_url": IMAGE, "new_face": IMAGE}
FINGERPRINT = calls.create_task_request(MODEL, INPUT).fingerprint
OLD = "task_old"
# crun_conn allows 3 retries: 4 attempts in all.
ATTEMPTS_WHEN_RETRIED = 4


@pytest.fixture(autouse=True)
def _crun(crun_conn: str, no_backoff: list[float]) -> None:
    """Every test talks to the loopback connection, and no retry really sleeps."""


@dataclass(frozen=True)
class Answer:
    """One HTTP answer, for requests-mock and for the protocol parser alike."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    def mock(self) -> dict[str, Any]:
        return {"status_code": self.status, "content": self.body, "headers": self.headers}

    def serve(self, peer: sockets.Peer, server: sockets.LoopbackServer) -> None:
        """A loopback server's behaviour: this answer to every request (keep-alive)."""
        head = f"HTTP/1.1 {self.status} X\r\nContent-Type: application/json\r\n"
        head += f"Content-Length: {len(self.body)}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in self.headers.items())
        while True:
            server.record(peer.read_request())
            peer.send(head.encode() + b"\r\n" + self.body)


def crun_error(code: int, *, in_body: bool = False) -> Answer:
    body = json.dumps({"code": code, "message": f"crun error {code}", "data": None}).encode()
    return Answer(200 if in_body else code, body)


def success(data: Any) -> Answer:
    return Answer(200, json.dumps({"code": 200, "message": "success", "data": data}).encode())


@dataclass(frozen=True)
class Row:
    """
    An answer and what every mode must make of it.

    :param error: The exception class.
    :param retried: Whether the hook and the trigger read again before giving up.
    :param replaced_on_reattach: Whether a stored job answering this is replaced by a new one.
    """

    answer: Answer
    error: type[CrunError]
    retried: bool = False
    replaced_on_reattach: bool = False

    @property
    def attempts(self) -> int:
        return ATTEMPTS_WHEN_RETRIED if self.retried else 1


E = crun_exceptions
READ_CODES: dict[int, tuple[type[CrunError], bool, bool]] = {
    # code: (error, retried, replaced on reattach)
    401: (E.CrunAuthError, False, False),
    402: (E.CrunInsufficientCreditsError, False, False),
    404: (E.CrunNotFoundError, False, True),
    422: (E.CrunValidationError, False, False),
    429: (E.CrunRateLimitError, True, False),
    455: (E.CrunServiceUnavailableError, True, False),
    500: (E.CrunServerError, True, False),
    501: (E.CrunJobFailedError, False, True),
    505: (E.CrunFeatureDisabledError, False, False),
}
READ_ROWS: dict[str, Row] = {}
for _code, (_error, _retried, _replaced) in READ_CODES.items():
    for _in_body in (False, True):
        _where = "in an HTTP-200 body" if _in_body else "as HTTP status"
        _retry = "retried, then " if _retried else ""
        READ_ROWS[f"{_code} {_where} -> {_retry}{_error.__name__}"] = Row(
            crun_error(_code, in_body=_in_body), _error, _retried, _replaced
        )
READ_ROWS["malformed body (HTML) -> retried, then CrunMalformedResponseError"] = Row(
    Answer(200, b"<html>bad gateway</html>"), E.CrunMalformedResponseError, retried=True
)
READ_ROWS["malformed envelope (data is a list) -> retried, then CrunMalformedResponseError"] = Row(
    Answer(200, b'{"code": 200, "message": "ok", "data": [1]}'), E.CrunMalformedResponseError, retried=True
)
READ_ROWS["task status failed -> CrunJobFailedError"] = Row(
    success(task_data("failed")), E.CrunJobFailedError, replaced_on_reattach=True
)


def operator(mode: str, **kwargs: Any) -> CrunCreateTaskOperator:
    return CrunCreateTaskOperator(
        task_id="create",
        model=MODEL,
        input=INPUT,
        deferrable=mode == "deferrable",
        wait_for_completion=mode != "submit-only",
        **kwargs,
    )


def get_requests(requests_mock: Any) -> int:
    return sum(request.method == "GET" for request in requests_mock.request_history)


def post_requests(requests_mock: Any) -> int:
    return sum(request.method == "POST" for request in requests_mock.request_history)


def trigger_event(
    trigger: Any, monkeypatch: pytest.MonkeyPatch, answer: Answer
) -> tuple[dict[str, Any], FakeClock, int]:
    """
    Run the trigger to its one event, each poll answered by ``answer`` from a loopback server.

    The trigger's real path: connection lookup, pooled aiohttp session, transport, error map.

    :returns: The event, the trigger's clock, and how many reads the server answered.
    """
    clock = FakeClock(start=time.time())
    monkeypatch.setattr(crun_triggers, "SYSTEM_CLOCK", clock)

    async def collect() -> list[Any]:
        return [event async for event in trigger.run()]

    with sockets.LoopbackServer(answer.serve) as server:
        monkeypatch.setenv(
            "AIRFLOW_CONN_CRUN_DEFAULT", crun_connection_json(server.url(), timeout=5, max_retries=3)
        )
        events = asyncio.run(collect())
        reads = server.count("GET")
    assert len(events) == 1
    return dict(events[0].payload), clock, reads


def assert_same_meaning(error: BaseException, row: Row) -> None:
    assert type(error) is row.error
    assert isinstance(error, AirflowFailException) is not row.retried


# --------------------------------------------------------------------------------------------
# The status read, while waiting


@pytest.mark.parametrize("row", list(READ_ROWS.values()), ids=list(READ_ROWS))
def test_blocking_wait(requests_mock: Any, row: Row) -> None:
    requests_mock.post(CREATE, **ok({"task_id": TASK_ID}))
    requests_mock.get(TASK_INFO, **row.answer.mock())

    with pytest.raises(CrunError) as caught:
        operator("blocking").execute(make_context(FakeTaskStateStore()))

    assert_same_meaning(caught.value, row)
    assert get_requests(requests_mock) == row.attempts


@pytest.mark.parametrize("row", list(READ_ROWS.values()), ids=list(READ_ROWS))
def test_deferrable_wait_in_the_trigger(
    requests_mock: Any, monkeypatch: pytest.MonkeyPatch, row: Row
) -> None:
    """The check before deferring saw ``running``; then every poll of the trigger gets the answer."""
    requests_mock.post(CREATE, **ok({"task_id": TASK_ID}))
    requests_mock.get(TASK_INFO, **ok(task_data("running")))
    with pytest.raises(TaskDeferred) as deferral:
        operator("deferrable").execute(make_context(FakeTaskStateStore()))

    event, _, reads = trigger_event(deferral.value.trigger, monkeypatch, row.answer)

    with pytest.raises(CrunError) as caught:
        operator("deferrable").execute_complete(make_context(), event=event)
    assert_same_meaning(caught.value, row)
    assert reads == row.attempts
    assert caught.value.message == crun_exceptions.error_from_event(event["error"]).message


@pytest.mark.parametrize("row", list(READ_ROWS.values()), ids=list(READ_ROWS))
def test_deferrable_wait_from_the_first_read(
    requests_mock: Any, monkeypatch: pytest.MonkeyPatch, row: Row
) -> None:
    """Every read answers the same, the one before deferring included; the outcome does not change."""
    requests_mock.post(CREATE, **ok({"task_id": TASK_ID}))
    requests_mock.get(TASK_INFO, **row.answer.mock())
    try:
        operator("deferrable").execute(make_context(FakeTaskStateStore()))
    except TaskDeferred as deferral:
        assert row.retried, "only an answer worth retrying may still defer"
        event, _, _ = trigger_event(deferral.trigger, monkeypatch, row.answer)
        with pytest.raises(CrunError) as caught:
            operator("deferrable").execute_complete(make_context(), event=event)
        error: BaseException = caught.value
    except CrunError as raised:
        assert not row.retried, "a transient answer must not fail the try before the trigger had its go"
        error = raised
    assert_same_meaning(error, row)


def test_retry_after_is_honoured_alike_by_the_hook_and_the_trigger(
    requests_mock: Any, monkeypatch: pytest.MonkeyPatch, no_backoff: list[float]
) -> None:
    answer = Answer(429, crun_error(429).body, {"Retry-After": "7"})
    requests_mock.post(CREATE, **ok({"task_id": TASK_ID}))
    requests_mock.get(TASK_INFO, **answer.mock())
    with pytest.raises(E.CrunRateLimitError):
        operator("blocking").execute(make_context())

    requests_mock.get(TASK_INFO, **ok(task_data("running")))
    with pytest.raises(TaskDeferred) as deferral:
        operator("deferrable", poll_interval=10).execute(make_context())
    _, clock, _ = trigger_event(deferral.value.trigger, monkeypatch, answer)

    assert no_backoff == [7.0, 7.0, 7.0]
    assert clock.sleeps[1:] == no_backoff  # the first sleep is the trigger's start jitter


# --------------------------------------------------------------------------------------------
# The reattach read: every mode reads a stored id the same way


@pytest.mark.parametrize("mode", ["blocking", "deferrable", "submit-only"])
@pytest.mark.parametrize("row", list(READ_ROWS.values()), ids=list(READ_ROWS))
def test_reattach_read(requests_mock: Any, mode: str, row: Row) -> None:
    requests_mock.post(CREATE, **ok({"task_id": TASK_ID}))
    requests_mock.get(f"{TASK_INFO}?task_id={OLD}", **row.answer.mock())
    requests_mock.get(f"{TASK_INFO}?task_id={TASK_ID}", **ok(task_data("success")))
    store = FakeTaskStateStore(crun_task_id=OLD, crun_task_id_fingerprint=FINGERPRINT)

    try:
        outcome: Any = operator(mode).execute(make_context(store))
    except CrunError as error:
        outcome = error

    if row.replaced_on_reattach:
        assert outcome["crun_task_id"] == TASK_ID
        assert post_requests(requests_mock) == 1
    else:
        assert isinstance(outcome, CrunError), outcome
        assert_same_meaning(outcome, row)
        assert post_requests(requests_mock) == 0
        assert store.values["crun_task_id"] == OLD


# --------------------------------------------------------------------------------------------
# The creation call, shared by every mode


@dataclass(frozen=True)
class Creation:
    answer: Answer
    error: type[CrunError]
    attempts: int
    permanent: bool


CREATION_CODES: dict[int, tuple[type[CrunError], int]] = {
    401: (E.CrunAuthError, 1),
    402: (E.CrunInsufficientCreditsError, 1),
    404: (E.CrunNotFoundError, 1),
    422: (E.CrunValidationError, 1),
    429: (E.CrunRateLimitError, ATTEMPTS_WHEN_RETRIED),
    455: (E.CrunServiceUnavailableError, ATTEMPTS_WHEN_RETRIED),
    500: (E.CrunCreationUnknownError, 1),
    501: (E.CrunGenerationFailedError, 1),
    502: (E.CrunCreationUnknownError, 1),
    505: (E.CrunFeatureDisabledError, 1),
}
CREATION_ROWS: dict[str, Creation] = {}
for _code, (_error, _attempts) in CREATION_CODES.items():
    _retried = _attempts > 1
    for _in_body in (False, True):
        _where = "in an HTTP-200 body" if _in_body else "as HTTP status"
        _what = f"{_attempts} POSTs (a rejection), then" if _retried else "1 POST, then"
        CREATION_ROWS[f"{_code} {_where} -> {_what} {_error.__name__}"] = Creation(
            crun_error(_code, in_body=_in_body), _error, _attempts, permanent=not _retried
        )
CREATION_ROWS["malformed body (HTML) -> 1 POST, then CrunCreationUnknownError"] = Creation(
    Answer(200, b"<html>bad gateway</html>"), E.CrunCreationUnknownError, 1, True
)
CREATION_ROWS["HTTP 502 with an HTML body -> 1 POST, then CrunCreationUnknownError"] = Creation(
    Answer(502, b"<html>bad gateway</html>"), E.CrunCreationUnknownError, 1, True
)
CREATION_ROWS["success without a task_id -> 1 POST, then CrunCreationUnknownError"] = Creation(
    success({}), E.CrunCreationUnknownError, 1, True
)
CREATION_ROWS["success with data null -> 1 POST, then CrunCreationUnknownError"] = Creation(
    success(None), E.CrunCreationUnknownError, 1, True
)


@pytest.mark.parametrize("mode", ["blocking", "deferrable", "submit-only"])
@pytest.mark.parametrize("row", list(CREATION_ROWS.values()), ids=list(CREATION_ROWS))
def test_creation(requests_mock: Any, mode: str, row: Creation) -> None:
    requests_mock.post(CREATE, **row.answer.mock())
    store = FakeTaskStateStore()

    with pytest.raises(CrunError) as caught:
        operator(mode).execute(make_context(store))

    assert type(caught.value) is row.error
    assert isinstance(caught.value, AirflowFailException) is row.permanent
    assert post_requests(requests_mock) == row.attempts
    assert get_requests(requests_mock) == 0
    # No id is stored; the creation intent written before the call is withdrawn with its error.
    assert store.values == {}


@pytest.mark.parametrize("mode", ["blocking", "deferrable", "submit-only"])
@pytest.mark.parametrize("code", [429, 455], ids=["429", "455"])
def test_creation_rejected_then_accepted_creates_once(requests_mock: Any, mode: str, code: int) -> None:
    requests_mock.post(CREATE, [crun_error(code).mock(), ok({"task_id": TASK_ID})])
    requests_mock.get(TASK_INFO, **ok(task_data("success")))
    store = FakeTaskStateStore()

    outcome = operator(mode).execute(make_context(store))

    assert outcome["crun_task_id"] == TASK_ID
    assert post_requests(requests_mock) == 2
    assert store.values["crun_task_id"] == TASK_ID
