"""The ``/_emulator/*`` admin endpoints, which a test (or :class:`EmulatorProcess`) drives."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_crun.testing.emulator.faults import FaultRule
from airflow_provider_crun.testing.emulator.model import ApiError, json_body

if TYPE_CHECKING:
    from airflow_provider_crun.testing.emulator.server import EmulatorHTTPServer


def handle_admin(server: EmulatorHTTPServer, method: str, path: str, body: bytes) -> Any:
    """
    Run one admin request and return its JSON answer.

    ``GET /_emulator/state``, ``POST /_emulator/faults`` (a list of rules),
    ``POST /_emulator/reset`` (``{"all": true}`` to forget everything),
    ``POST /_emulator/faces`` (``{"image_url", "faces"}``) and ``POST /_emulator/options``
    (``{"large_result_bytes": N or null}``).
    """
    state = server.state
    if (method, path) == ("GET", "/_emulator/state"):
        snapshot = state.snapshot()
        snapshot["faults"] = [rule.to_dict() for rule in server.faults.rules]
        snapshot["faults_fired"] = dict(server.faults.fired)
        snapshot["open_connections"] = server.open_connections
        return snapshot
    if (method, path) == ("POST", "/_emulator/faults"):
        rules = json_body(body) if body else []
        if not isinstance(rules, list):
            raise ApiError(422, "expected a JSON list of fault rules")
        try:
            parsed = [FaultRule.from_dict(rule) for rule in rules]
        except (TypeError, ValueError, AttributeError) as error:
            raise ApiError(422, f"invalid fault rule: {error}") from None
        server.faults.set_rules(parsed)
        return {"faults": [rule.to_dict() for rule in parsed]}
    if (method, path) == ("POST", "/_emulator/reset"):
        options = json_body(body) if body else {}
        if isinstance(options, dict) and options.get("all"):
            state.reset()
            server.faults.clear()
        else:
            state.reset_counters()
        server.faults.reset_counters()
        return {"reset": True}
    if (method, path) == ("POST", "/_emulator/faces"):
        request = json_body(body)
        try:
            state.set_faces(str(request["image_url"]), int(request["faces"]))
        except (KeyError, TypeError, ValueError) as error:
            raise ApiError(422, f"expected {{'image_url', 'faces'}}: {error}") from None
        return {"ok": True}
    if (method, path) == ("POST", "/_emulator/options"):
        request = json_body(body)
        try:
            size = request["large_result_bytes"]
            state.large_result_bytes = None if size is None else int(size)
        except (KeyError, TypeError, ValueError) as error:
            raise ApiError(422, f"expected {{'large_result_bytes': N or null}}: {error}") from None
        return {"large_result_bytes": state.large_result_bytes}
    raise ApiError(404, "admin endpoint not found")
