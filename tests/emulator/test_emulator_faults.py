"""Fault rules without sockets: validation, CLI specs, counting and seeded probabilities."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_crun.testing.emulator import FaultInjector, FaultRule, parse_fault_spec


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("CreateTask:429", FaultRule("CreateTask", "429")),
        ("CreateTask:429:times=2:retry_after=1", FaultRule("CreateTask", "429", times=2, retry_after=1.0)),
        ("*:500:p=0.05", FaultRule("*", "500", probability=0.05)),
        ("TaskInfo:slow:delay=0.5:n=1", FaultRule("TaskInfo", "slow", times=1, delay=0.5)),
        ("TaskInfo:body_error:code=455", FaultRule("TaskInfo", "body_error", code=455)),
        ("CreateTask:drop:after_create=0", FaultRule("CreateTask", "drop", after_create=False)),
    ],
    ids=["bare", "times", "probability", "slow", "body-error", "after-create"],
)
def test_parse_fault_spec(spec: str, expected: FaultRule) -> None:
    assert parse_fault_spec(spec) == expected
    assert FaultRule.from_dict(expected.to_dict()) == expected


@pytest.mark.parametrize(
    "spec",
    [
        "CreateTask",
        "Nope:429",
        "CreateTask:418x",
        "CreateTask:200",
        "TaskInfo:task_fail",
        "balance:429:times",
    ],
    ids=["no-kind", "unknown-endpoint", "unknown-kind", "not-an-error", "task-fail-on-read", "no-value"],
)
def test_invalid_fault_specs(spec: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        parse_fault_spec(spec)


@pytest.mark.parametrize(
    ("kind", "after_create", "expected"),
    [
        ("429", None, False),
        ("455", None, False),
        ("body_error", None, False),
        ("500", None, True),
        ("503", None, True),
        ("drop", None, True),
        ("slow", None, True),
        ("malformed", None, True),
        ("drop", False, False),
        ("429", True, True),
    ],
)
def test_creates_first_defaults(kind: str, after_create: bool | None, expected: bool) -> None:
    assert FaultRule("CreateTask", kind, after_create=after_create).creates_first() is expected


def test_times_then_stop_and_first_rule_wins() -> None:
    injector = FaultInjector([FaultRule("TaskInfo", "429", times=2), FaultRule("*", "500", times=1)])
    fired = [getattr(injector.match("TaskInfo"), "kind", None) for _ in range(4)]
    assert fired == ["429", "429", "500", None]
    assert injector.fired == {"TaskInfo:429": 2, "TaskInfo:500": 1}


def test_star_matches_api_endpoints_but_not_media() -> None:
    rule = FaultRule("*", "500")
    assert all(rule.applies_to(e) for e in ("CreateTask", "TaskInfo", "balance"))
    assert not rule.applies_to("media")
    fail = FaultRule("*", "task_fail")
    assert fail.applies_to("CreateTask")
    assert fail.applies_to("detect-face-image")
    assert not fail.applies_to("TaskInfo")


def _pattern(seed: int, **kwargs: Any) -> list[bool]:
    injector = FaultInjector([FaultRule("TaskInfo", "500", probability=0.3, **kwargs)], seed=seed)
    return [injector.match("TaskInfo") is not None for _ in range(200)]


def test_probability_is_reproducible_with_a_seed() -> None:
    first = _pattern(seed=1)
    assert first == _pattern(seed=1)
    assert first != _pattern(seed=2)
    assert 30 < sum(first) < 90
    assert sum(_pattern(seed=1, times=5)) == 5


def test_set_rules_restarts_counters() -> None:
    injector = FaultInjector([FaultRule("balance", "455", times=1)])
    assert injector.match("balance") is not None
    assert injector.match("balance") is None
    injector.set_rules(injector.rules)
    assert injector.match("balance") is not None
    injector.clear()
    assert injector.rules == []
