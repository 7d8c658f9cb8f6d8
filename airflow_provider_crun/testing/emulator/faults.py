"""
Fault injection rules for the emulator.

A rule names an endpoint (or ``*`` for every API endpoint), a kind and how often it fires:
the first ``times`` matching requests, each matching request with ``probability`` (drawn from a
``random.Random`` per rule, derived from the emulator's seed, so a seeded run is reproducible),
or both (with probability, at most ``times`` times), or, with neither, every matching request.

Kinds:

``"429"``, ``"455"``, ``"500"``, ``"502"``, ``"503"`` (any HTTP status 400-599)
    That HTTP status with a ``{"code": <status>, ...}`` envelope. 429 always carries
    ``Retry-After`` (the rule's ``retry_after`` or the emulator default); other statuses carry it
    only when the rule sets ``retry_after``.
``"malformed"``
    HTTP 200 with an HTML body that is not JSON.
``"slow"``
    Sleep ``delay`` seconds, then answer normally.
``"drop"``
    Close the connection without sending any response.
``"body_error"``
    HTTP 200 whose envelope carries the non-200 ``code`` (default 429).
``"task_fail"``
    Only on the creation endpoints: the call succeeds, but the task (or detection) ends
    ``failed``; a task's result is ``{"code": 501, "message": "generation failed"}``.

On the creation endpoints (``detect-face-image``, ``CreateTask``), ``after_create`` says whether
the object is created and billed before the fault happens, modelling a request that reached
the server. It defaults to ``True`` for ``drop``, ``slow``, ``malformed`` and 5xx statuses, and to
``False`` for rejections (4xx such as 429 and 455, and ``body_error``), which create nothing.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

API_ENDPOINTS = ("detect-face-image", "detect-face-result", "CreateTask", "TaskInfo", "balance")
ENDPOINTS = (*API_ENDPOINTS, "media")
CREATION_ENDPOINTS = frozenset({"detect-face-image", "CreateTask"})
NAMED_KINDS = frozenset({"malformed", "slow", "drop", "body_error", "task_fail"})
DEFAULT_SLOW_DELAY = 1.0
DEFAULT_BODY_ERROR_CODE = 429


@dataclass(frozen=True)
class FaultRule:
    """
    One fault injection rule.

    :param endpoint: An endpoint name (see :data:`ENDPOINTS`) or ``"*"`` for every API endpoint
        (``media`` only when named).
    :param kind: A status code such as ``"429"`` or one of ``malformed``, ``slow``, ``drop``,
        ``body_error``, ``task_fail``.
    :param times: Fire on at most this many matching requests.
    :param probability: Fire on each matching request with this probability.
    :param retry_after: Seconds for the ``Retry-After`` header.
    :param delay: Seconds a ``slow`` fault waits (default 1).
    :param code: The envelope code of a ``body_error`` (default 429).
    :param after_create: On creation endpoints, create and bill the object before faulting.
        ``None`` picks the default described in the module docstring.
    """

    endpoint: str
    kind: str
    times: int | None = None
    probability: float | None = None
    retry_after: float | None = None
    delay: float | None = None
    code: int | None = None
    after_create: bool | None = None

    def __post_init__(self) -> None:
        if self.endpoint != "*" and self.endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {self.endpoint!r}; expected one of {ENDPOINTS} or '*'")
        if self.kind not in NAMED_KINDS:
            status = self.http_status
            if status is None or not 400 <= status <= 599:
                raise ValueError(f"unknown fault kind {self.kind!r}")
        if self.kind == "task_fail" and self.endpoint not in (*CREATION_ENDPOINTS, "*"):
            raise ValueError("task_fail applies only to detect-face-image and CreateTask")
        if self.times is not None and self.times < 0:
            raise ValueError("times must be >= 0")
        if self.probability is not None and not 0.0 <= self.probability <= 1.0:
            raise ValueError("probability must be within [0, 1]")

    @property
    def http_status(self) -> int | None:
        """The HTTP status of a status-code kind, else ``None``."""
        return int(self.kind) if self.kind.isdigit() else None

    def applies_to(self, endpoint: str) -> bool:
        """Whether this rule matches requests to ``endpoint``."""
        if self.kind == "task_fail" and endpoint not in CREATION_ENDPOINTS:
            return False
        if self.endpoint == "*":
            return endpoint in API_ENDPOINTS
        return self.endpoint == endpoint

    def creates_first(self) -> bool:
        """Whether, on a creation endpoint, the object is created before the fault happens."""
        if self.after_create is not None:
            return self.after_create
        if self.kind in ("drop", "slow", "malformed"):
            return True
        status = self.http_status
        return status is not None and status >= 500

    def to_dict(self) -> dict[str, Any]:
        """Return the rule as a JSON-ready dict without unset fields."""
        return {key: value for key, value in asdict(self).items() if value is not None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FaultRule:
        """Build a rule from a dict such as the admin endpoint receives."""
        if "endpoint" not in data or "kind" not in data:
            raise ValueError("a fault rule needs 'endpoint' and 'kind'")
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown fault rule fields: {sorted(unknown)}")
        return cls(
            endpoint=str(data["endpoint"]),
            kind=str(data["kind"]),
            times=_opt(data.get("times"), int),
            probability=_opt(data.get("probability"), float),
            retry_after=_opt(data.get("retry_after"), float),
            delay=_opt(data.get("delay"), float),
            code=_opt(data.get("code"), int),
            after_create=_opt(data.get("after_create"), _to_bool),
        )


def _opt(value: Any, convert: Any) -> Any:
    return None if value is None else convert(value)


def _to_bool(value: Any) -> bool:
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"not a boolean: {value!r}")
    return bool(value)


_SPEC_KEYS = {"p": "probability", "n": "times"}


def parse_fault_spec(spec: str) -> FaultRule:
    """
    Parse a CLI fault spec ``ENDPOINT:KIND[:key=value]...``.

    Keys are the :class:`FaultRule` fields, plus ``p`` for ``probability`` and ``n`` for
    ``times``; for example ``CreateTask:429:times=2:retry_after=1`` or ``*:500:p=0.05``.
    """
    parts = spec.split(":")
    if len(parts) < 2:
        raise ValueError(f"fault spec {spec!r} is not ENDPOINT:KIND[:key=value]...")
    data: dict[str, Any] = {"endpoint": parts[0], "kind": parts[1]}
    for option in parts[2:]:
        key, sep, value = option.partition("=")
        if not sep:
            raise ValueError(f"fault option {option!r} in {spec!r} is not key=value")
        data[_SPEC_KEYS.get(key, key)] = value
    return FaultRule.from_dict(data)


class _ActiveRule:
    def __init__(self, rule: FaultRule, seed: int | None, index: int) -> None:
        self.rule = rule
        self.remaining = rule.times
        self.rng = random.Random(f"{seed}:{index}") if seed is not None else random.Random()

    def fires(self) -> bool:
        if self.remaining is not None and self.remaining <= 0:
            return False
        if self.rule.probability is not None and self.rng.random() >= self.rule.probability:
            return False
        if self.remaining is not None:
            self.remaining -= 1
        return True


class FaultInjector:
    """
    Thread-safe, seeded set of fault rules; the first rule that fires wins.

    :param rules: Initial rules.
    :param seed: Seed of the per-rule random generators; ``None`` seeds them from the OS.
    """

    def __init__(self, rules: Iterable[FaultRule] = (), seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._seed = seed
        self._rules: list[_ActiveRule] = []
        self.fired: dict[str, int] = {}
        self.set_rules(rules)

    def set_rules(self, rules: Iterable[FaultRule]) -> None:
        """Replace all rules (their counters and random generators restart)."""
        with self._lock:
            self._rules = [_ActiveRule(rule, self._seed, index) for index, rule in enumerate(rules)]

    def add(self, rule: FaultRule) -> None:
        """Append a rule."""
        with self._lock:
            self._rules.append(_ActiveRule(rule, self._seed, len(self._rules)))

    def clear(self) -> None:
        """Remove every rule."""
        self.set_rules(())

    @property
    def rules(self) -> list[FaultRule]:
        """The current rules, in order."""
        with self._lock:
            return [active.rule for active in self._rules]

    def match(self, endpoint: str) -> FaultRule | None:
        """Return the rule that fires for this request to ``endpoint``, if any."""
        with self._lock:
            for active in self._rules:
                if active.rule.applies_to(endpoint) and active.fires():
                    key = f"{endpoint}:{active.rule.kind}"
                    self.fired[key] = self.fired.get(key, 0) + 1
                    return active.rule
        return None

    def reset_counters(self) -> None:
        """Forget how many faults fired (the rules keep their state)."""
        with self._lock:
            self.fired = {}
