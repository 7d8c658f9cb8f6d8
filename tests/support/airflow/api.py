"""A client of the api-server's public REST API (``/api/v2``), for the deployment suites."""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import requests

from tests.support.airflow.processes import wait_until

FINISHED_RUN_STATES = frozenset({"success", "failed"})


class AirflowApi:
    """
    A small client for the api-server's public REST API.

    The deployment runs the SimpleAuthManager with ``simple_auth_manager_all_admins``. Airflow
    3.3 then treats every request as an admin's; 3.1 still wants a token, which that mode hands
    out without credentials (``GET /auth/token``), so a 401 fetches one and sends the request again.

    :param base_url: ``http://127.0.0.1:<port>``.
    """

    PAGE = 100
    ATTEMPTS = 4

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        self.session.trust_env = False  # never a proxy: the tests talk only to 127.0.0.1
        self.session.hooks["response"].append(self._authorize_on_401)

    def _authorize_on_401(self, response: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
        if response.status_code != 401 or "Authorization" in response.request.headers:
            return response
        with requests.Session() as plain:
            plain.trust_env = False
            token = plain.get(f"{self.base_url}/auth/token", timeout=10).json()["access_token"]
        self.session.headers["Authorization"] = f"Bearer {token}"
        again = response.request.copy()
        again.headers["Authorization"] = f"Bearer {token}"
        return self.session.send(again, timeout=kwargs.get("timeout"))

    def close(self) -> None:
        self.session.close()

    def request(
        self, method: str, path: str, *, ok: Iterable[int] = (200,), idempotent: bool = False, **kwargs: Any
    ) -> Any:
        """
        Send a request to ``/api/v2`` + ``path``; return the JSON body of an ``ok`` status.

        A GET, or a request the caller calls ``idempotent``, is sent again after a 5xx (on SQLite a
        busy moment surfaces as "database is locked", which the api-server answers with HTTP 500)
        or after a timeout or a broken connection (an api-server starved of CPU by a loaded machine).
        """
        kwargs.setdefault("timeout", 30)
        attempts = self.ATTEMPTS if method == "GET" or idempotent else 1
        for attempt in range(1, attempts + 1):
            try:
                response = self.session.request(method, f"{self.base_url}/api/v2{path}", **kwargs)
            except (requests.Timeout, requests.ConnectionError):
                if attempt == attempts:
                    raise
                time.sleep(attempt)
                continue
            if response.status_code < 500 or attempt == attempts:
                break
            time.sleep(attempt)
        if response.status_code not in set(ok):
            raise AssertionError(f"{method} {path} -> HTTP {response.status_code}: {response.text[:2000]}")
        return response.json() if response.content else None

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params or None)

    # -- health and DAGs ------------------------------------------------------------------------

    def health(self) -> dict[str, Any] | None:
        """``/api/v2/monitor/health``, or ``None`` while the api-server is not answering."""
        try:
            response = self.session.get(f"{self.base_url}/api/v2/monitor/health", timeout=5)
        except requests.RequestException:
            return None
        return response.json() if response.status_code == 200 else None

    def dag_exists(self, dag_id: str) -> bool:
        response = self.session.get(f"{self.base_url}/api/v2/dags/{dag_id}", timeout=10)
        return response.status_code == 200

    def import_errors(self) -> list[dict[str, Any]]:
        return list(self.get("/importErrors", limit=self.PAGE)["import_errors"])

    # -- runs -----------------------------------------------------------------------------------

    def trigger(
        self, dag_id: str, conf: Mapping[str, Any] | None = None, *, run_id: str | None = None
    ) -> str:
        """
        Start a manual run of ``dag_id`` with ``conf``; return its run id.

        The run id is chosen here, so sending the request again after a 5xx is safe: a run that was
        created after all answers 409, which counts as created.
        """
        run_id = run_id or f"e2e__{time.strftime('%Y%m%dT%H%M%S')}_{secrets.token_hex(4)}"
        body: dict[str, Any] = {"logical_date": None, "conf": dict(conf or {}), "dag_run_id": run_id}
        self.request("POST", f"/dags/{dag_id}/dagRuns", ok=(200, 201, 409), idempotent=True, json=body)
        return run_id

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(self.get(f"/dags/{dag_id}/dagRuns/{run_id}"))

    def runs(self, dag_id: str, **filters: Any) -> list[dict[str, Any]]:
        """The runs of ``dag_id`` matching ``filters`` (e.g. ``run_type="asset_triggered"``), oldest first."""
        page = self.get(f"/dags/{dag_id}/dagRuns", limit=self.PAGE, order_by="id", **filters)
        return list(page["dag_runs"])

    def wait_for_run(self, dag_id: str, run_id: str, *, timeout: float) -> dict[str, Any]:
        """Poll the run until it succeeds or fails; return it."""
        return wait_until(
            lambda: (run := self.run(dag_id, run_id))["state"] in FINISHED_RUN_STATES and run,
            timeout=timeout,
            interval=1.0,
            what=f"run {dag_id}/{run_id} to finish",
        )

    def wait_for_runs(
        self, runs: Sequence[tuple[str, str]], *, timeout: float
    ) -> dict[tuple[str, str], dict[str, Any]]:
        """Wait for several runs; one poll round per second for all of them."""
        done: dict[tuple[str, str], dict[str, Any]] = {}

        def all_finished() -> bool:
            for key in runs:
                if key not in done:
                    run = self.run(*key)
                    if run["state"] in FINISHED_RUN_STATES:
                        done[key] = run
            return len(done) == len(runs)

        try:
            wait_until(all_finished, timeout=timeout, interval=1.0, what=f"{len(runs)} runs to finish")
        except TimeoutError as error:
            pending = [f"{dag_id}/{run_id}" for dag_id, run_id in runs if (dag_id, run_id) not in done]
            raise TimeoutError(f"{error}; still running: {pending}") from None
        return done

    # -- task instances, XCom, logs ---------------------------------------------------------------

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Every task instance of a run (mapped ones included), across pages."""
        items: list[dict[str, Any]] = []
        while True:
            page = self.get(
                f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances",
                limit=self.PAGE,
                offset=len(items),
                order_by="map_index",
            )
            items.extend(page["task_instances"])
            if len(items) >= page["total_entries"] or not page["task_instances"]:
                return items

    def task_instance(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[str, Any]:
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"
        if map_index >= 0:
            path += f"/{map_index}"
        return dict(self.get(path))

    def xcom(
        self, dag_id: str, run_id: str, task_id: str, map_index: int = -1, key: str = "return_value"
    ) -> Any:
        """An XCom value as stored (Airflow 3 keeps JSON-serializable values as JSON)."""
        entry = self.get(
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}", map_index=map_index
        )
        value = entry["value"]
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return json.loads(value)
        return value

    def set_xcom(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        value: Any,
        map_index: int = -1,
        key: str = "return_value",
    ) -> Any:
        """Replace an existing XCom's value (``PATCH .../xcomEntries/{key}``); return the stored entry."""
        return self.request(
            "PATCH",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}",
            idempotent=True,
            json={"value": value, "map_index": map_index},
        )

    def event_logs(self, **filters: Any) -> list[dict[str, Any]]:
        """Audit log entries (``/eventLogs``) matching ``filters``, e.g. ``event="state mismatch"``."""
        return list(self.get("/eventLogs", limit=self.PAGE, **filters)["event_logs"])

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1) -> str:
        """The log of one try, as text (one line per structured log record), or why there is none."""
        try:
            response = self.session.get(
                f"{self.base_url}/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
                params={"map_index": map_index, "full_content": True},
                headers={"Accept": "application/json"},
                timeout=30,
            )
        except (requests.Timeout, requests.ConnectionError):
            return "<log unavailable: the api-server did not answer>"
        if response.status_code != 200:
            return f"<log unavailable: HTTP {response.status_code} {response.text[:300]}>"
        content = response.json().get("content")
        if isinstance(content, list):
            return "\n".join(
                json.dumps(record, default=str) if not isinstance(record, str) else record
                for record in content
            )
        return str(content)
