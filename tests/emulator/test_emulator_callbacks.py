"""Callback delivery to a real loopback receiver."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from airflow_provider_crun.testing.emulator import CrunEmulator, ManualClock


class _Receiver(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    received: list[dict[str, Any]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append(  # type: ignore[attr-defined]
            {"path": self.path, "type": self.headers["Content-Type"], "body": json.loads(body)}
        )
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.received = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def _wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def test_callback_posts_task_info_when_done(
    emu: CrunEmulator, api: Any, clock: ManualClock, receiver: ThreadingHTTPServer
) -> None:
    url = f"http://127.0.0.1:{receiver.server_address[1]}/hook?run=1"
    body = {"model": "other", "callback_url": url, "input": {}}
    task_id = api.create_task(body).json()["data"]["task_id"]
    clock.advance(3.0)
    _wait_for(lambda: emu.callbacks_delivered == 1)
    (call,) = receiver.received  # type: ignore[attr-defined]
    assert call["path"] == "/hook?run=1"
    assert call["type"] == "application/json"
    assert call["body"]["code"] == 200
    # Sent once the task finished, not when it was created: the payload is the final TaskInfo.
    assert call["body"]["data"]["status"] == "success"
    assert call["body"]["data"] == api.task(task_id)
    assert call["body"]["data"]["param"]["callback_url"] == url


def test_failed_callback_is_counted_and_harmless(emu: CrunEmulator, api: Any, clock: ManualClock) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    api.create_task({"model": "other", "callback_url": f"http://127.0.0.1:{closed_port}/", "input": {}})
    clock.advance(3.0)
    _wait_for(lambda: emu.callbacks_failed == 1)
    assert emu.callbacks_delivered == 0
    assert api.get("/client/account/balance").status_code == 200


def test_stop_drops_pending_callbacks(clock: ManualClock, receiver: ThreadingHTTPServer) -> None:
    url = f"http://127.0.0.1:{receiver.server_address[1]}/"
    before = threading.active_count()
    emu = CrunEmulator("k", clock=clock).start()
    dropped = emu.state.create_task("k", {"model": "x", "callback_url": url, "input": {}})["task_id"]
    emu.stop()
    assert threading.active_count() == before
    # Restarted, the emulator delivers only what was scheduled after the restart: the dropped
    # callback was due first, so it would arrive first if stop() had kept it.
    clock.advance(10.0)
    with emu.start():
        kept = emu.state.create_task("k", {"model": "x", "callback_url": url, "input": {}})["task_id"]
        clock.advance(10.0)
        _wait_for(lambda: emu.callbacks_delivered == 1)
    received = [call["body"]["data"]["task_id"] for call in receiver.received]  # type: ignore[attr-defined]
    assert received == [kept]
    assert dropped != kept
