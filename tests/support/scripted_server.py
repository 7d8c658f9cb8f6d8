"""A loopback aiohttp server that answers from a per-path script: the async tests' transport."""

from __future__ import annotations

import json
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

DROP = "drop"


def ok(data: object) -> tuple[int, bytes, dict[str, str]]:
    return 200, json.dumps({"code": 200, "message": "success", "data": data}).encode(), {}


def fail(
    code: int, status: int = 200, headers: dict[str, str] | None = None
) -> tuple[int, bytes, dict[str, str]]:
    body = json.dumps({"code": code, "message": f"crun error {code}"}).encode()
    return status, body, headers or {}


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


@dataclass
class ScriptedServer:
    """Answers each path with the next scripted response; the last one repeats."""

    scripts: dict[str, deque[Any]] = field(default_factory=lambda: defaultdict(deque))
    requests: list[RecordedRequest] = field(default_factory=list)
    transports: set[Any] = field(default_factory=set)
    url: str = ""
    _runner: web.AppRunner | None = None

    def script(self, path: str, *responses: Any) -> None:
        self.scripts[path].extend(responses)

    @property
    def connections(self) -> int:
        """TCP connections that carried at least one request."""
        return len(self.transports)

    def count(self, path: str) -> int:
        return sum(1 for request in self.requests if request.path.endswith(path))

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.transports.add(request.transport)
        self.requests.append(
            RecordedRequest(
                request.method,
                request.path,
                dict(request.query),
                dict(request.headers),
                json.loads(body) if body else None,
            )
        )
        script = self.scripts.get(request.path.removeprefix("/api/v1"))
        if not script:
            return web.Response(status=404, body=json.dumps({"code": 404, "message": "no script"}))
        answer = script.popleft() if len(script) > 1 else script[0]
        if answer == DROP:
            assert request.transport is not None
            request.transport.close()
            return web.Response()
        status, payload, headers = answer
        return web.Response(status=status, body=payload, headers=headers)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        server = site._server
        assert server is not None
        port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
