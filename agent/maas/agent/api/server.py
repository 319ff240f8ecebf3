"""The agent's JSON HTTP API on its unix socket (aiohttp): status, plan, apply, delete, logs.

Every failure is a JSON error with a 4xx/5xx status; a request can never crash the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import socket
import struct
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from maas.agent.api.demand import DemandApi
from maas.agent.desired.sources import source_key
from maas.compiler import Diagnostic, MaasError

if TYPE_CHECKING:
    from maas.agent.daemon import Agent

log = structlog.get_logger("maas.agent")
MAX_BODY = 8 * 1024 * 1024
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error(
    status: int, message: str, diagnostics: list[dict[str, Any]] | None = None
) -> web.Response:
    return web.json_response({"error": message, "diagnostics": diagnostics or []}, status=status)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status == 413:
            return error(413, f"the request is larger than {MAX_BODY >> 20} MiB, one apply's limit")
        return error(exc.status, exc.reason)
    except MaasError as exc:
        status = 503 if exc.retryable else 422
        return error(status, exc.diagnostics[0].message, [d.as_dict() for d in exc.diagnostics])
    except Exception as exc:
        # A bug: the journal gets the traceback, the client a JSON error (never a traceback).
        log.error("request_crashed", method=request.method, path=request.path, exc_info=exc)
        return error(500, f"internal error ({type(exc).__name__}); the agent's journal has details")


class Api:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent  # not imported at run time: the daemon imports us
        # Followed log streams block a thread each for as long as a client reads; they get their
        # own pool so that they can never starve the reconcile loop's threads.
        self.log_threads = ThreadPoolExecutor(max_workers=64, thread_name_prefix="logs")
        self.streams: set[Iterator[bytes]] = set()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[json_errors])
        app.add_routes(
            [
                web.get("/v1/status", self.status),
                web.get("/v1/plan", self.plan),
                web.post("/v1/apply", self.apply),
                web.delete("/v1/deployments/{name}", self.delete),
                web.get("/v1/logs/{name}", self.logs),
                *DemandApi(self.agent, self._body).routes(),
            ]
        )
        return app

    async def status(self, request: web.Request) -> web.Response:
        return web.json_response(self.agent.status().document())

    async def plan(self, request: web.Request) -> web.Response:
        """The desired plan as last accepted (what the next pass works towards)."""
        reconciler = self.agent.reconciler
        plan = await asyncio.to_thread(reconciler.stored_plan) or reconciler.snapshot.plan
        return web.json_response(plan.model_dump(mode="json") if plan else None)

    async def _body(self, request: web.Request) -> dict[str, Any]:
        limit = self.agent.config.request_timeout_s
        try:
            async with asyncio.timeout(limit):
                body = await request.json()
        except TimeoutError:
            raise web.HTTPRequestTimeout(
                reason=f"the body did not arrive within {limit:g} s"
            ) from None
        except RecursionError:
            raise web.HTTPBadRequest(reason="the body is nested too deeply") from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise web.HTTPBadRequest(reason="the body is not JSON") from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(reason="the body must be a JSON object")
        return body

    async def apply(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        sources = body.get("sources")
        if not isinstance(sources, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in sources.items()
        ):
            raise web.HTTPBadRequest(reason="'sources' must map file names to YAML text")
        dry_run = bool(body.get("dry_run"))
        refusal = self._pull_mode_refusal(body, "apply")
        if refusal is not None:
            return refusal
        user = _peer_user(request)
        sources = {source_key(k, v, user): v for k, v in sources.items()}
        result = await asyncio.to_thread(self._apply, sources, dry_run)
        if not dry_run:
            self.agent.wake()
        return web.json_response(result)

    def _apply(self, sources: dict[str, str], dry_run: bool) -> dict[str, Any]:
        plan, actions = self.agent.reconciler.apply(sources, dry_run=dry_run)
        return {"plan": plan.model_dump(mode="json"), "actions": [a.__dict__ for a in actions]}

    def _pull_mode_refusal(self, body: dict[str, Any], what: str) -> web.Response | None:
        """A local change to an agent that follows a repository is lost at the next commit, and
        replaces the repository's state meanwhile: refused unless forced."""
        source = getattr(self.agent, "source", None)
        if source is None or body.get("force") is True:
            return None
        diagnostic = Diagnostic(
            "pull-mode",
            f"this agent follows {source.url} ({source.branch}); a local {what} would replace "
            "the repository's deployments until its next commit",
            hints=(
                "commit the change to the repository instead",
                f"or force it: maasctl {what} --force ...",
            ),
        )
        return error(409, diagnostic.message, [diagnostic.as_dict()])

    async def delete(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        refusal = self._pull_mode_refusal({"force": request.query.get("force") == "1"}, "delete")
        if refusal is not None:
            return refusal
        found = await asyncio.to_thread(self.agent.reconciler.delete, name)
        if not found:
            return error(404, f"no deployment named '{name}'")
        self.agent.wake()
        return web.json_response({"deleted": name})

    async def logs(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        try:
            replica = int(request.query.get("replica", "0"))
            tail = int(request.query["tail"]) if "tail" in request.query else None
        except ValueError:
            raise web.HTTPBadRequest(reason="replica and tail must be integers") from None
        follow = request.query.get("follow") in ("1", "true")
        container = self.agent.reconciler.snapshot.container(name, replica)
        if container is None:
            return error(404, f"no container for deployment '{name}' replica {replica}")
        loop = asyncio.get_running_loop()
        stream = await loop.run_in_executor(
            self.log_threads, lambda: self.agent.engine.logs(container.id, tail=tail, follow=follow)
        )
        self.streams.add(stream)
        response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
        try:
            await response.prepare(request)
            while chunk := await loop.run_in_executor(self.log_threads, _next_chunk, stream):
                await response.write(chunk)
        except ConnectionResetError:
            pass  # the client went away
        finally:
            # A client that left (the handler is cancelled) or an agent that stops: closing the
            # stream unblocks the thread that waits in it.
            self.streams.discard(stream)
            _close(stream)
        return response

    def close_streams(self) -> None:
        """Ends every log stream (the agent is stopping)."""
        for stream in list(self.streams):
            _close(stream)
        self.log_threads.shutdown(wait=False, cancel_futures=True)


def _peer_user(request: web.Request) -> str | None:
    """Who is on the other end of the unix socket (SO_PEERCRED): None for root and the agent's
    own user, else the user's name (or uid)."""
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return None
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (AttributeError, OSError):
        return None
    uid = struct.unpack("3i", creds)[1]
    if uid in (0, os.geteuid()):
        return None
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _next_chunk(stream: Iterator[bytes]) -> bytes:
    """The next chunk, or b"" when the stream ended or was closed under the waiting thread."""
    try:
        return next(stream, b"")
    except (OSError, ValueError, AttributeError, MaasError):
        return b""


def _close(stream: Iterator[bytes]) -> None:
    close = getattr(stream, "close", None)
    if close is not None:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            close()
