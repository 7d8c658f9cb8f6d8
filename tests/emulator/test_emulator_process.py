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


def _wait_for_log(emu: EmulatorProcess, text: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while text not in (log := emu.stderr_text()):
        assert time.monotonic() < deadline, f"{text!r} not logged: {log}"
        time.sleep(0.02)
    return log


def _first_task_id(emu: EmulatorProcess) -> str:
    session = _session()
    session.headers["x-api-key"] = emu.api_key
    response = session.post(
        emu.api_url + "/client/job/CreateTask", json={"model": "x", "input": {}}, timeout=5
    )
    session.close()
    return str(response.json()["data"]["task_id"])


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
        log = _wait_for_log(emu, "/client/account/balance")
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
        (["--large-result-bytes", "300M"], "large_result_bytes", 300 << 20),
        (["--large-result-bytes", "2000000"], "large_result_bytes", 2_000_000),
        ([], "large_result_bytes", None),
    ],
    ids=["delays", "fault", "keys", "default-port", "large-suffix", "large-bytes", "large-default"],
)
def test_cli_arguments(argv: list[str], attribute: str, expected: object) -> None:
    assert getattr(build_parser().parse_args(argv), attribute) == expected


def test_cli_rejects_bad_fault(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--fault", "Nope:429"])
    assert "unknown endpoint" in capsys.readouterr().err


def test_cli_without_fault_injects_none() -> None:
    assert build_parser().parse_args([]).fault == []
    with EmulatorProcess(api_key=SECRET) as emu:
        assert emu.state()["faults"] == []
        session = _session()
        statuses = [
            session.get(emu.api_url + "/client/account/balance", timeout=5).status_code for _ in range(20)
        ]
        statuses.append(
            session.post(
                emu.api_url + "/client/job/CreateTask", json={"model": "x", "input": {}}, timeout=5
            ).status_code
        )
        session.close()
        assert set(statuses) == {200}
        assert emu.state()["faults_fired"] == {}


def test_cli_ids_are_random_unless_seeded() -> None:
    assert build_parser().parse_args([]).seed is None
    assert build_parser().parse_args(["--seed", "5"]).seed == 5
    seeded = []
    for _ in range(2):
        with EmulatorProcess(seed=5) as emu:
            seeded.append(_first_task_id(emu))
    unseeded = []
    for _ in range(2):
        with EmulatorProcess() as emu:
            unseeded.append(_first_task_id(emu))
    assert seeded[0] == seeded[1]
    assert unseeded[0] != unseeded[1]


@pytest.mark.parametrize("size", ["1000", "lots"])
def test_cli_rejects_bad_large_result_size(capsys: pytest.CaptureFixture[str], size: str) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--large-result-bytes", size])
    assert "--large-result-bytes" in capsys.readouterr().err
