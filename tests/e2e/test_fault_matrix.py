"""
(b) The fault matrix: every case is one run of the swap flow against its own emulator.

All runs start together and are then checked one by one, so the matrix costs about as much wall
time as its slowest run. Each case asserts the run's final state, the task tries, the XCom or the
failure message, that every injected fault really fired, and what the emulator created.

"Exactly one CreateTask per swap" is asserted as: ``CreateTask`` requests minus the ones the
emulator rejected with 429/455 (which create nothing and may be re-sent) equals one, and the
emulator created exactly one task. A run that must fail before creating anything asserts zero.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.e2e.context import E2E
from tests.support.airflow.checks import (
    AIRFLOW_DEFER_RACE_ISSUE,
    SWAP_FLOW,
    accepted_creates,
    airflow_defer_races,
    all_success,
    by_task,
    faults_injected,
    fired,
    local_file,
    log_of,
    output_folder,
    task_states,
    unexplained_retries,
)
from tests.support.airflow.scenarios import FAULT_CASES, FaultCase

pytestmark = pytest.mark.e2e

MATRIX_TIMEOUT = 420
DOWNSTREAM = {"detect_faces": ("swap_faces", "report"), "swap_faces": ("report",)}


@dataclass
class Outcome:
    """A finished case: its run, task instances and the emulator's final state."""

    case: FaultCase
    dag_id: str
    run_id: str
    run: dict[str, Any]
    task_instances: list[dict[str, Any]]
    emulator_state: dict[str, Any]
    airflow_races: dict[tuple[str, int], int]


@pytest.fixture(scope="module")
def matrix(e2e: E2E, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Outcome]]:
    """Start every case's run at once, wait for all, and collect what each one did."""
    output_root = tmp_path_factory.mktemp("fault-matrix")
    started = time.monotonic()
    runs: dict[str, tuple[str, str]] = {}
    for case in FAULT_CASES:
        emulator = e2e.emulator(case.backend.conn_id)
        emulator.reset(everything=True)
        emulator.set_faults(case.faults)
        conf = {
            "image_url": e2e.media_url(case.backend.conn_id, f"fault-{case.slug}", 3),
            "output_path": output_folder(output_root / case.slug),
            **case.conf,
        }
        runs[case.id] = (case.dag.dag_id, e2e.api.trigger(case.dag.dag_id, conf))
    finished = e2e.api.wait_for_runs(list(runs.values()), timeout=MATRIX_TIMEOUT)
    wall = round(time.monotonic() - started, 1)
    outcomes = {
        case.id: Outcome(
            case=case,
            dag_id=runs[case.id][0],
            run_id=runs[case.id][1],
            run=finished[runs[case.id]],
            task_instances=e2e.api.task_instances(*runs[case.id]),
            emulator_state=e2e.emulator(case.backend.conn_id).state(),
            airflow_races=airflow_defer_races(e2e.api, *runs[case.id]),
        )
        for case in FAULT_CASES
    }
    per_case = {
        case_id: {
            "state": outcome.run["state"],
            "faults_injected": faults_injected(outcome.emulator_state),
            "create_task_requests": outcome.emulator_state["counts"]["CreateTask"],
            "create_task_rejected": fired(outcome.emulator_state, "CreateTask", ("429", "455", "body_error")),
            "tasks_created": outcome.emulator_state["tasks_created"],
            "detections_created": outcome.emulator_state["detections_created"],
        }
        for case_id, outcome in outcomes.items()
    }
    e2e.record(
        "fault_matrix",
        runs=len(outcomes),
        succeeded=sum(outcome.run["state"] == "success" for outcome in outcomes.values()),
        failed_fast=sum(outcome.run["state"] == "failed" for outcome in outcomes.values()),
        faults_injected=sum(figures["faults_injected"] for figures in per_case.values()),
        create_task_requests=sum(figures["create_task_requests"] for figures in per_case.values()),
        tasks_created=sum(figures["tasks_created"] for figures in per_case.values()),
        airflow_defer_races=sum(sum(outcome.airflow_races.values()) for outcome in outcomes.values()),
        wall_s=wall,
        cases=per_case,
    )
    return outcomes


# The first case also pays for starting every run of the matrix (the module fixture).
@pytest.mark.timeout(MATRIX_TIMEOUT + 180)
@pytest.mark.parametrize("case", FAULT_CASES, ids=[case.id for case in FAULT_CASES])
def test_fault_case(e2e: E2E, describe: Any, matrix: dict[str, Outcome], case: FaultCase) -> None:
    outcome = matrix[case.id]
    explain = describe(outcome.dag_id, outcome.run_id)
    state = outcome.emulator_state

    for rule in case.faults:
        times = fired(state, rule.endpoint, (rule.kind,))
        assert times == rule.times, f"{rule} fired {times} times; all: {state.get('faults_fired')}\n{explain}"

    if case.failed_task is None:
        assert outcome.run["state"] == "success", explain
        # Transient faults are absorbed inside the try: no task needed an Airflow retry.
        assert task_states(outcome.task_instances) == all_success(SWAP_FLOW), explain
        assert not unexplained_retries(outcome.task_instances, outcome.airflow_races), explain
        swap = e2e.api.xcom(outcome.dag_id, outcome.run_id, "swap_faces")
        assert swap["status"] == "success"
        assert len(swap["media_urls"]) == 1
        assert [local_file(path).is_file() for path in swap["stored_paths"]] == [True], swap
    else:
        # Never paid twice, whatever Airflow did: checked before the defer race may end the test.
        assert accepted_creates(state) == case.create_requests, f"{state}\n{explain}"
        assert state["tasks_created"] == case.tasks_created, f"{state}\n{explain}"
        assert state["detections_created"] == case.detections_created, f"{state}\n{explain}"
        if outcome.airflow_races.get((case.failed_task, -1)):
            pytest.xfail(f"Airflow's defer race ({AIRFLOW_DEFER_RACE_ISSUE}) retried {case.failed_task}")
        assert outcome.run["state"] == "failed", explain
        failed = by_task(outcome.task_instances)[case.failed_task]
        # Retries are configured (max_tries 2), but a permanent error must not use them.
        assert (failed["state"], failed["try_number"], failed["max_tries"]) == ("failed", 1, 2), explain
        for task_id in DOWNSTREAM[case.failed_task]:
            assert by_task(outcome.task_instances)[task_id]["state"] == "upstream_failed", explain
        log = log_of(e2e.api, outcome.dag_id, outcome.run_id, case.failed_task, 1)
        assert case.message is not None
        assert case.message in log, f"{case.message!r} not in the log of {case.failed_task}:\n{log[-3000:]}"

    for endpoint, count in case.requests.items():
        assert state["counts"][endpoint] == count, f"{endpoint}: {state['counts']}\n{explain}"
    assert accepted_creates(state) == case.create_requests, f"{state}\n{explain}"
    assert state["tasks_created"] == case.tasks_created, f"{state}\n{explain}"
    assert state["detections_created"] == case.detections_created, f"{state}\n{explain}"
