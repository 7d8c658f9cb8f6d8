"""The emulator as a subprocess: CLI, URL line, admin client and cleanup."""

from __future__ import annotations

import time

import pytest
import requests

from airflow_provider_crun.testing.emulator import EmulatorProcess, FaultRule
from airflow_provider_crun.testing.emulator.cli import build_parser

SECRET = "process-secret-key"


def _session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    session.headers["x-api-key"] = SECRET
    return session


def test_emulator_process_end_to_end() -> None:
    args = [
        "--detect-delays", "0.05,0.05",
        "--task-delays", "0.05,0.05",
        "--fault", "balance:429:times=1:retry_after=0.5",
        "--verbose",
    ]  # fmt: skip
    with EmulatorProcess(args=args, api_key=SECRET) as emu:
        assert emu.url.startswith("http://127.0.0.1:")
        process = emu.process
        assert process is not None
        session = _session()
        first = session.get(emu.api_url + "/client/account/balance", timeout=5)
        assert (first.status_code, first.headers["Retry-After"]) == (429, "0.5")
        assert session.get(emu.api_url + "/client/account/balance", timeout=5).json()["data"] == {
            "balance": 1000
        }

        emu.set_faults([FaultRule("CreateTask", "500", times=1), {"endpoint": "TaskInfo", "kind": "455"}])
        body = {"model": "other", "input": {}}
        assert session.post(emu.api_url + "/client/job/CreateTask", json=body, timeout=5).status_code == 500
        assert session.get(emu.api_url + "/client/job/TaskInfo?task_id=x", timeout=5).status_code == 455
        state = emu.state()
        assert state["tasks_created"] == 1
        assert state["counts"]["balance"] == 2
        assert state["connections_accepted"] == 1
        assert emu.balance() == 994
        assert SECRET not in repr(state)

        emu.reset()
        assert emu.state()["counts"]["balance"] == 0
        assert emu.state()["tasks"] == 1
        emu.reset(everything=True)
        assert (emu.state()["tasks"], emu.balance()) == (0, 1000)
        emu.set_faces("https://e.x/a.png", 4)
        session.close()
        time.sleep(0.1)
        log = emu.stderr_text()
        assert "/client/account/balance" in log
        assert SECRET not in log
    assert process.poll() is not None
    assert emu.process is None


def test_startup_failure_reports_stderr_and_reaps_the_child() -> None:
    emu = EmulatorProcess(args=["--detect-delays", "nonsense"])
    with pytest.raises(RuntimeError, match="expected two comma-separated seconds"):
        emu.start()
    assert emu.process is None


def test_sigterm_stops_cleanly() -> None:
    emu = EmulatorProcess().start()
    process = emu.process
    assert process is not None
    process.terminate()
    assert process.wait(10) == 0
    emu.stop()


@pytest.mark.parametrize(
    ("argv", "attribute", "expected"),
    [
        (["--task-delays", "0.1,0.3"], "task_delays", (0.1, 0.3)),
        (["--fault", "*:500:p=0.5"], "fault", [FaultRule("*", "500", probability=0.5)]),
        (["--api-key", "a", "--api-key", "b"], "api_keys", ["a", "b"]),
        ([], "port", 8089),
    ],
    ids=["delays", "fault", "keys", "default-port"],
)
def test_cli_arguments(argv: list[str], attribute: str, expected: object) -> None:
    assert getattr(build_parser().parse_args(argv), attribute) == expected


def test_cli_rejects_bad_fault(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--fault", "Nope:429"])
    assert "unknown endpoint" in capsys.readouterr().err
