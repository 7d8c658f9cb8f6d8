"""Run the emulator as a subprocess and control it through its ``/_emulator`` admin endpoints."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from airflow_provider_crun.testing.emulator import urls
from airflow_provider_crun.testing.emulator.faults import FaultRule
from airflow_provider_crun.testing.emulator.lifecycle import StartStop
from airflow_provider_crun.testing.emulator.model import key_fingerprint

URL_LINE_PREFIX = "CRUN_EMULATOR_URL="
# The directory holding the airflow_provider_crun package, so the child imports the same code.
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[3])
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class EmulatorProcess(StartStop):
    """
    ``python -m airflow_provider_crun.testing.emulator`` in a child process.

    The child is killed by pid on exit, also when startup fails.

    :param port: Port to bind; 0 picks a free one.
    :param args: Extra CLI arguments, e.g. ``["--task-delays", "0.1,0.2", "--fault", "..."]``.
    :param api_key: The API key the child accepts (passed through the environment, not argv).
    :param startup_timeout: Seconds to wait for the URL line.
    :param env: Extra environment variables for the child.
    :param seed: Make the child's ids and probabilistic faults reproducible (``--seed``);
        ``None`` (default) gives random ids.
    :param large_result_bytes: Serve every task result as a PNG of exactly this many bytes,
        streamed in chunks (``--large-result-bytes``).
    """

    def __init__(
        self,
        port: int = 0,
        args: Sequence[str] = (),
        *,
        api_key: str = "test-key",
        startup_timeout: float = 20.0,
        env: Mapping[str, str] | None = None,
        seed: int | None = None,
        large_result_bytes: int | None = None,
    ) -> None:
        self.port = port
        self.args = list(args)
        if seed is not None:
            self.args += ["--seed", str(seed)]
        if large_result_bytes is not None:
            self.args += ["--large-result-bytes", str(large_result_bytes)]
        self.api_key = api_key
        self.startup_timeout = startup_timeout
        self.extra_env = dict(env or {})
        self.url = ""
        self.process: subprocess.Popen[str] | None = None
        self._stderr: IO[str] | None = None

    @property
    def api_url(self) -> str:
        """The API base URL (``url + "/api/v1"``)."""
        return self.url + "/api/v1"

    def start(self) -> EmulatorProcess:
        """Launch the child and wait for its URL line."""
        env = dict(os.environ)
        env.update(self.extra_env)
        env["CRUN_EMULATOR_API_KEY"] = self.api_key
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        command = [sys.executable, "-m", "airflow_provider_crun.testing.emulator", "--port", str(self.port)]
        self._stderr = tempfile.TemporaryFile(mode="w+", prefix="crun-emulator-")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            [*command, *self.args],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            stdin=subprocess.DEVNULL,
            env=env,
            text=True,
        )
        try:
            line = self._first_line(self.process)
            if not line.startswith(URL_LINE_PREFIX):
                raise RuntimeError(f"emulator did not start: {line!r}; stderr: {self.stderr_text()}")
            self.url = line[len(URL_LINE_PREFIX) :].strip()
        except BaseException:
            self.stop()
            raise
        return self

    def _first_line(self, process: subprocess.Popen[str]) -> str:
        assert process.stdout is not None
        lines: queue.Queue[str] = queue.Queue()
        stdout = process.stdout

        def pump() -> None:
            # Keep reading so the child never blocks on a full pipe.
            for line in stdout:
                lines.put(line)
            lines.put("")

        threading.Thread(target=pump, name="crun-emulator-stdout", daemon=True).start()
        try:
            return lines.get(timeout=self.startup_timeout)
        except queue.Empty:
            raise RuntimeError(
                f"emulator printed no URL within {self.startup_timeout}s; stderr: {self.stderr_text()}"
            ) from None

    def stderr_text(self) -> str:
        """The last 2000 characters the child wrote to stderr (its log)."""
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read()[-2000:]

    def stop(self) -> None:
        """Terminate the child (kill it if it does not exit promptly)."""
        process, self.process = self.process, None
        if process is not None:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(5)
            if process.stdout is not None:
                process.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    # ---------------------------------------------------------------------------------------
    # Admin client

    def _admin(self, method: str, path: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(
            f"{self.url}/_emulator/{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with _OPENER.open(request, timeout=10) as response:
            return json.loads(response.read())

    def state(self) -> dict[str, Any]:
        """Counters, balances (by key fingerprint), faults and open connections."""
        result: dict[str, Any] = self._admin("GET", "state")
        return result

    def balance(self, api_key: str | None = None) -> float:
        """The balance of ``api_key`` (default: :attr:`api_key`)."""
        return float(self.state()["balances"][key_fingerprint(api_key or self.api_key)])

    def set_faults(self, rules: Iterable[FaultRule | Mapping[str, Any]]) -> None:
        """Replace the child's fault rules."""
        payload = [rule.to_dict() if isinstance(rule, FaultRule) else dict(rule) for rule in rules]
        self._admin("POST", "faults", payload)

    def reset(self, *, everything: bool = False) -> None:
        """Zero counters; with ``everything``, also forget tasks, restore balances, drop faults."""
        self._admin("POST", "reset", {"all": everything})

    def set_faces(self, image_url: str, faces: int) -> None:
        """Make the child's detections of ``image_url`` find ``faces`` faces."""
        self._admin("POST", "faces", {"image_url": image_url, "faces": faces})

    def set_large_result_bytes(self, size: int | None) -> None:
        """Serve the results of tasks created from now on as ``size``-byte PNGs (``None``: plain)."""
        self._admin("POST", "options", {"large_result_bytes": size})

    def input_image_url(self, name: str = "group", faces: int = 2) -> str:
        """URL of a generated group picture with ``faces`` faces, served by the child."""
        return self.url + urls.input_path(name, faces)

    def face_image_url(self, name: str) -> str:
        """URL of a portrait (one drawn face, distinct per ``name``) to use as a swap target."""
        return self.url + urls.portrait_path(name)

    def connection_uri(self) -> str:
        """A JSON Airflow connection for ``AIRFLOW_CONN_CRUN_DEFAULT``."""
        return json.dumps({"conn_type": "crun", "host": self.url, "password": self.api_key})
