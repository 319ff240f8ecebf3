"""Helpers for the gateway tests: a real local OpenAI-shaped replica (an aiohttp server on a real
port), status documents in the agent's format, and servers started and stopped per test."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import socket
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import uvloop
from aiohttp import web

from maas.compiler import ContainerStatus, DeploymentStatus, NodeStatus, ReplicaStatus
from maas.compiler.status import Phase
from maas.gateway import Gateway, GatewayConfig, KeyRing, StaticRouteSource
from maas.gateway.front import listening


def status(*deployments: DeploymentStatus) -> dict[str, Any]:
    """A status document as the agent serves it (the contract's JSON)."""
    return NodeStatus(node="test", deployments=list(deployments)).document()


def deployment(
    name: str,
    ports: list[int],
    *,
    ready: bool = True,
    state: Phase = "running",
    aliases: tuple[str, ...] = (),
    generic_proxy: bool = False,
) -> DeploymentStatus:
    spec_hash = f"v1:{name}"
    containers = [
        ContainerStatus(
            id=f"{name}-{i}", replica=i, state="running", port=p, ready=ready, spec_hash=spec_hash
        )
        for i, p in enumerate(ports)
    ]
    return DeploymentStatus(
        name=name,
        state=state,
        replicas=len(ports),
        ready_replicas=len(ports) if ready else 0,
        backend="custom",
        image="example.invalid/replica:1",
        aliases=list(aliases),
        generic_proxy=generic_proxy,
        spec_hash=spec_hash,
        containers=containers,
        replica_states=[
            ReplicaStatus(replica=i, phase=state, spec_hash=spec_hash) for i in range(len(ports))
        ],
    )


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """Serve `app` on a free port of 127.0.0.1 the way maas-gateway does; yields its base URL."""
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


@asynccontextmanager
async def gateway(
    status_doc: dict[str, Any], keys: Path | None = None, **settings: Any
) -> AsyncIterator[tuple[str, Gateway]]:
    gw = Gateway(GatewayConfig(**settings), StaticRouteSource(status_doc), KeyRing(keys))
    async with serving_gateway(gw) as url:
        yield url, gw


@asynccontextmanager
async def serving_gateway(gw: Gateway) -> AsyncIterator[str]:
    """Serve `gw` as maas-gateway does (its front on a free port); yields its base URL."""
    async with listening(gw, "127.0.0.1", 0) as (host, port):
        yield f"http://{host}:{port}"


def sse_event(data: object) -> bytes:
    return f"data: {json.dumps(data)}\n\n".encode()


class Replica:
    """An OpenAI-shaped backend that answers at once and records what it was sent.

    Chat bodies steer it: `stream` (SSE), `chunks`, `hold` (wait for `gate` after the first
    chunk), `forever` (stream until the client goes away, then set `cancelled`), `break` (cut the
    connection after the first chunk).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.seen: list[dict[str, Any]] = []
        self.gate = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.upload_arrived = asyncio.Event()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.add_routes(
            [
                web.post("/v1/chat/completions", self.chat),
                web.post("/v1/completions", self.chat),
                web.post("/v1/embeddings", self.embeddings),
                web.post("/v1/audio/transcriptions", self.transcription),
                web.route("*", "/{tail:.*}", self.echo),
            ]
        )
        return app

    def _record(self, request: web.Request, body: bytes) -> None:
        assert request.transport is not None
        self.seen.append(
            {
                "path": request.path_qs,
                "method": request.method,
                "headers": dict(request.headers),
                "size": len(body),
                "peer": request.transport.get_extra_info("peername"),
            }
        )

    async def chat(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        self._record(request, raw)
        body = json.loads(raw)
        usage = {"prompt_tokens": 5, "completion_tokens": body.get("chunks", 3)}
        if not body.get("stream"):
            message = {"role": "assistant", "content": f"from {self.name}"}
            return web.json_response(
                {
                    "object": "chat.completion",
                    "replica": self.name,
                    "choices": [{"index": 0, "message": message}],
                    "usage": usage,
                }
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if body.get("forever"):
            return await self._forever(response)
        for i in range(body.get("chunks", 3)):
            await response.write(sse_event({"choices": [{"delta": {"content": f"t{i}"}}]}))
            if i == 0 and body.get("break"):
                assert request.transport is not None
                request.transport.close()
                return response
            if i == 0 and body.get("hold"):
                await self.gate.wait()
        await response.write(sse_event({"choices": [], "usage": usage}))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _forever(self, response: web.StreamResponse) -> web.StreamResponse:
        try:
            while True:
                await response.write(sse_event({"choices": [{"delta": {"content": "x"}}]}))
                await asyncio.sleep(0.02)
        except (asyncio.CancelledError, ConnectionResetError):
            self.cancelled.set()
            raise

    async def embeddings(self, request: web.Request) -> web.Response:
        raw = await request.read()
        self._record(request, raw)
        return web.json_response(
            {
                "object": "list",
                "usage": {"prompt_tokens": 4, "total_tokens": 4},
                "data": [{"embedding": [0.0] * 8}],
            }
        )

    async def transcription(self, request: web.Request) -> web.Response:
        self.upload_arrived.set()  # the headers are here; the body may still be on its way
        form = await request.post()
        upload = form["file"]
        assert isinstance(upload, web.FileField)
        data = upload.file.read()
        self.seen.append({"path": request.path, "model": form["model"], "size": len(data)})
        return web.json_response(
            {"text": "hello", "model": form["model"], "sha256": hashlib.sha256(data).hexdigest()}
        )

    async def echo(self, request: web.Request) -> web.Response:
        raw = await request.read()
        self._record(request, raw)
        return web.json_response(
            {
                "method": request.method,
                "path": request.path_qs,
                "size": len(raw),
                "sha256": hashlib.sha256(raw).hexdigest(),
            }
        )


RUNNERS: list[Callable[[Coroutine[Any, Any, None]], None]] = [asyncio.run, uvloop.run]


def asynctest(
    timeout: float = 30, runners: list[Callable[[Coroutine[Any, Any, None]], None]] = RUNNERS
) -> Callable[[Callable[..., Coroutine[Any, Any, None]]], Callable[..., None]]:
    """Run an async test function in its own event loop (each of `runners`), bounded by
    `timeout` seconds."""

    def decorate(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> None:
            # maas-gateway runs on uvloop where it is installed, on asyncio's loop otherwise:
            # every test runs on both.
            for runner in runners:
                runner(asyncio.wait_for(fn(*args, **kwargs), timeout=timeout))

        return run

    return decorate


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def metric(text: str, name: str, **labels: str) -> float:
    """One sample of the Prometheus text format (labels compared exactly)."""
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        raw = line[len(name) + 1 : line.index("}")]
        found = dict(part.split("=", 1) for part in raw.split(",")) if raw else {}
        if {k: v.strip('"') for k, v in found.items()} == labels:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def metrics_text(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url + "/metrics") as response:
        return await response.text()
