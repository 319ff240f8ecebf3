"""The gateway's state and policy, and its aiohttp application.

`Gateway` holds what every request shares: routes (from a RouteSource; nothing here talks to
Docker), keys, the balancer, metrics, and the policy of one model request (`serve`: try replicas
until one answers, eject those that fail, record the outcome). Two transports carry requests to
it: the front (front.py) relays the model routes at the protocol level, and hands everything else
to the aiohttp application built here (listing, metrics, uploads, the generic proxy).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import structlog
from aiohttp import hdrs, web

from maas.compiler import MaasError
from maas.gateway import errors
from maas.gateway.admission import Refuse, admit_model
from maas.gateway.config import GatewayConfig
from maas.gateway.errors import (
    BadRequest,
    BodyTooLarge,
    GatewayError,
    UpstreamFailed,
    UpstreamUnreachable,
)
from maas.gateway.forward import Body, Outcome, StreamedBody, relay
from maas.gateway.keys import KeyRing
from maas.gateway.metrics import UNKNOWN, GatewayMetrics, RouteMetrics
from maas.gateway.requests import FormModelScanner, multipart_boundary
from maas.gateway.routing import Balancer, NoReadyReplica, Pick, Route
from maas.gateway.source import RouteSource
from maas.gateway.wake import REPORT_S, Waker
from maas.host.supervise import Supervisor

log = structlog.get_logger("maas.gateway")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
R = TypeVar("R")

FORM_ROUTES = ("/v1/audio/transcriptions", "/v1/audio/translations")
HOUSEKEEPING_S = 2.0
# The gateway forwards the client's headers as they are; aiohttp must not add its own (an
# Accept-Encoding the client never sent would bring back compressed bodies it cannot read).
SKIP_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")


class Gateway:
    """The application's state and policy: routes (from `source`), keys, balancer, metrics, and one
    pooled HTTP client session for the requests the aiohttp application relays."""

    def __init__(
        self,
        config: GatewayConfig,
        source: RouteSource,
        keys: KeyRing,
        *,
        metrics: GatewayMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.source = source
        self.keys = keys
        self.metrics = metrics or GatewayMetrics()
        self.clock = clock
        self.balancer = Balancer(eject_s=config.eject_s, retry_after_s=config.retry_after_s)
        self._session: aiohttp.ClientSession | None = None
        self._housekeeping: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self.supervisor = Supervisor(log)
        self.metrics.watch_tasks(self.supervisor)
        self.waker = Waker(
            source,
            timeout_s=config.wake_timeout_s,
            queue=config.wake_queue,
            retry_after_s=config.retry_after_s,
            clock=clock,
        )

    def app(self) -> web.Application:
        """The routes the front hands over, after it checked the key: it is reachable through
        the front only (front.py), so it does not check keys itself."""
        app = web.Application(client_max_size=self.config.max_body_bytes, middlewares=[self._guard])
        routes = [web.post(path, self._form_route) for path in FORM_ROUTES]
        routes += [
            web.get("/v1/models", self._models),
            web.get("/health", self._health),
            web.get("/metrics", self._metrics),
            web.route("*", "/proxy/{deployment}", self._generic_proxy),
            web.route("*", "/proxy/{deployment}/{tail:.*}", self._generic_proxy),
        ]
        app.add_routes(routes)
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)
        return app

    async def _start(self, app: web.Application) -> None:
        timeout = aiohttp.ClientTimeout(
            total=self.config.total_timeout_s,
            connect=self.config.connect_timeout_s,
            sock_read=self.config.read_timeout_s,
        )
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
            timeout=timeout,
            auto_decompress=False,
            skip_auto_headers=SKIP_AUTO_HEADERS,
            # One session serves every client: a cookie one replica sets must never reach
            # another client's request.
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        await self.source.start()
        self._housekeeping = [
            self.supervisor.spawn(name, body, stall_s=60.0, stopping=self._stopping)
            for name, body in (
                ("keys", self._reload_keys),
                ("housekeeping", self._housekeep),
                ("activity", self._report_activity),
            )
        ]

    async def _stop(self, app: web.Application) -> None:
        self._stopping.set()
        for task in self._housekeeping:
            task.cancel()
        await asyncio.gather(*self._housekeeping, return_exceptions=True)
        await self.waker.close()
        await self.source.close()
        if self._session is not None:
            await self._session.close()

    async def _reload_keys(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_S)
            with self.supervisor.guard("keys"):
                self.reload_keys()

    async def _housekeep(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_S)
            with self.supervisor.guard("housekeeping"):
                self.balancer.forget_except(self.source.table)

    async def _report_activity(self) -> None:
        while True:
            await asyncio.sleep(REPORT_S)
            with self.supervisor.guard("activity"):
                await self.waker.report()

    def reload_keys(self) -> None:
        try:
            if self.keys.reload():
                log.info("keys_reloaded", keys=len(self.keys.digests))
        except MaasError as exc:
            # The well-formed lines are in force (keys.py); say what is wrong with the others.
            self.metrics.keys_file_errors.inc()
            log.error(
                "keys_invalid",
                keys=len(self.keys.digests),
                problems=[d.render() for d in exc.diagnostics],
            )

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except GatewayError as exc:
            return exc.reply().response()
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            if exc.status == 413:
                return errors.too_large(self.config.max_body_bytes).response()
            return errors.openai_error(exc.status, exc.reason).response()

    # --- the policy of a model request, for either transport ------------------------------

    async def dispatch(self, call: Call, model: str, attempt: Attempt[R], answer: Answer[R]) -> R:
        decision = self._choose(model, call.started)
        if isinstance(decision, NoReadyReplica) and await self.source.recheck():
            # The table may be up to one poll old: a replica that became ready since is served.
            decision = self._choose(model, call.started)
        if isinstance(decision, NoReadyReplica) and self.waker.wants(decision.route):
            try:
                woke = await self._wake(call, decision.route)
                if isinstance(woke, errors.Reply):
                    return self._answer(call, decision.route.name, woke, answer)
                return await self.serve(call, woke, attempt, answer)
            finally:
                self.waker.woken.pop(id(call), None)
        if isinstance(decision, Refuse):
            self.metrics.error(UNKNOWN, call.label, decision.reason or "refused")
            return self._answer(call, UNKNOWN, decision.reply, answer)
        return await self.serve(call, decision, attempt, answer)

    def _choose(self, model: str, now: float) -> Refuse | Pick | NoReadyReplica:
        table, unreachable = self.source.table, self.source.unreachable
        admitted = admit_model(model, table, unreachable, self.config.retry_after_s)
        if isinstance(admitted, Refuse):
            return admitted
        return self.balancer.choose_in(admitted, now)

    async def _wake(self, call: Call, route: Route) -> Pick | NoReadyReplica | errors.Reply:
        """Hold the request while the agent starts the sleeping model (wake.py)."""
        held = self.metrics.wake_held.labels(route.name)
        held.inc()
        try:
            woke = await self.waker.wait(route, call.started, id(call))
        finally:
            held.dec()
        if isinstance(woke, errors.Reply):
            self.metrics.error(route.name, call.label, "wake_not_ready")
            return woke
        return self.balancer.choose_in(woke, self.clock())

    async def serve(
        self, call: Call, decision: Pick | NoReadyReplica, attempt: Attempt[R], answer: Answer[R]
    ) -> R:
        """Try replicas until one answers; a replica that cannot be reached is ejected and, while
        the body can still be sent again, the next one is tried."""
        tried: set[str] = set()
        while isinstance(decision, Pick):
            try:
                return await self._attempt(call, decision, attempt, answer)
            except UpstreamUnreachable as exc:
                now = self.clock()
                self._failed(call, decision, "upstream_unreachable", str(exc), now)
                tried.add(decision.replica.container_id)
                decision = self.balancer.choose_in(decision.route, now, frozenset(tried))
                if isinstance(decision, Pick) and (
                    len(tried) >= self.config.max_attempts or _consumed(call.body)
                ):
                    unreachable = errors.openai_error(
                        502,
                        "The model's replica could not be reached.",
                        code="upstream_unreachable",
                    )
                    return self._answer(call, decision.route.name, unreachable, answer)
        name = decision.route.name
        self.metrics.error(name, call.label, "no_ready_replica")
        refusal = errors.no_ready_replica(name, decision.route.state, decision.retry_after_s)
        return self._answer(call, name, refusal, answer)

    async def _attempt(self, call: Call, pick: Pick, attempt: Attempt[R], answer: Answer[R]) -> R:
        name, replica = pick.route.name, pick.replica
        self.balancer.started(replica)
        metrics = self.metrics.route(name, call.label)
        metrics.outstanding.inc()
        self.waker.activity.begin(name)
        try:
            response, outcome = await attempt(pick)
        except UpstreamFailed as exc:
            self._failed(call, pick, "upstream_failed", str(exc), self.clock())
            failed = errors.openai_error(
                502, "The model's replica failed to answer.", code="upstream_failed"
            )
            return self._answer(call, name, failed, answer)
        except BodyTooLarge as exc:
            return self._answer(call, name, exc.reply(), answer)
        except asyncio.CancelledError:
            metrics.error("client_disconnected")
            raise
        finally:
            self.balancer.finished(replica)
            metrics.outstanding.dec()
            self.waker.activity.end(name)
        self._record(call, pick, outcome, metrics)
        return response

    def _record(self, call: Call, pick: Pick, outcome: Outcome, metrics: RouteMetrics) -> None:
        metrics.first_byte.observe(outcome.first_byte_s)
        woken = self.waker.woken.pop(id(call), None)
        if woken is not None:
            waited = woken.at - call.started + outcome.first_byte_s
            self.metrics.woke(pick.route.name, waited, woken.backend_load_s)
        if outcome.usage is not None:
            metrics.used(outcome.usage)
        if outcome.broken is not None:
            self._failed(call, pick, "upstream_failed_mid_flight", outcome.broken, self.clock())
        elif outcome.client_gone:
            metrics.error("client_disconnected")
        elif outcome.status >= 500:
            metrics.error("upstream_status")
        metrics.answered(outcome.status, self.clock() - call.started)

    def _failed(self, call: Call, pick: Pick, reason: str, detail: str, now: float) -> None:
        self.balancer.failed(pick.replica, now)
        self.metrics.error(pick.route.name, call.label, reason)
        log.warning(
            reason,
            model=pick.route.name,
            replica=pick.replica.index,
            container=pick.replica.container_id,
            error=detail,
            ejected_s=self.config.eject_s,
        )

    def _answer(self, call: Call, name: str, reply: errors.Reply, answer: Answer[R]) -> R:
        self.metrics.answered(name, call.label, reply.status, self.clock() - call.started)
        return answer(reply)

    # --- the routes of the aiohttp application -------------------------------------------

    async def _form_route(self, request: web.Request) -> web.StreamResponse:
        limit = self.config.max_upload_bytes
        if request.content_length is not None and request.content_length > limit:
            return errors.too_large(limit).response()
        scanner = FormModelScanner(multipart_boundary(request.headers.get(hdrs.CONTENT_TYPE, "")))
        body = StreamedBody(prefix=[], rest=request.content, limit=limit)
        model = None
        while model is None:
            chunk = await request.content.readany()
            if not chunk:
                raise BadRequest("You must provide a model parameter.", "model")
            body.size += len(chunk)
            if body.size > limit:
                return errors.too_large(limit).response()
            body.prefix.append(chunk)
            model = scanner.feed(chunk)
        call = Call(request.path[4:], body, request.raw_path, self.clock())
        return await self.dispatch(call, model, self._relay(request, call), _response)

    async def _generic_proxy(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["deployment"]
        route = self.source.table.routes.get(name)
        if route is None or not route.generic_proxy:
            self.metrics.answered(UNKNOWN, "proxy", 404, 0.0)
            return errors.openai_error(
                404, f"No deployment `{name}` with generic_proxy enabled.", code="not_found"
            ).response()
        limit = self.config.max_upload_bytes
        if request.content_length is not None and request.content_length > limit:
            return errors.too_large(limit).response()
        body: Body = (
            StreamedBody(prefix=[], rest=request.content, limit=limit)
            if request.body_exists
            else None
        )
        # The name is matched decoded (`%65cho` is `echo`); the rest is passed on as it came.
        raw, mark, query = request.raw_path.partition("?")
        parts = raw.split("/", 3)  # "", "proxy", the name as sent, the rest
        path = "/" + (parts[3] if len(parts) > 3 else "") + mark + query
        call = Call("proxy", body, path, self.clock())
        decision = self.balancer.choose_in(route, call.started)
        return await self.serve(call, decision, self._relay(request, call), _response)

    def _relay(self, request: web.Request, call: Call) -> Attempt[web.StreamResponse]:
        async def attempt(pick: Pick) -> tuple[web.StreamResponse, Outcome]:
            assert self._session is not None, "the application has not started"
            return await relay(self._session, request, pick.replica.url, call.path, call.body)

        return attempt

    async def _models(self, request: web.Request) -> web.Response:
        data: list[dict[str, Any]] = []
        for route in sorted(self.source.table.routes.values(), key=lambda r: r.name):
            data.append(_model_entry(route.name, route))
            data.extend(_model_entry(alias, route) for alias in route.aliases)
        return web.json_response({"object": "list", "data": data})

    async def _health(self, request: web.Request) -> web.Response:
        tasks = self.supervisor.report()
        return web.json_response(
            {
                "status": "ok" if self.supervisor.healthy() else "degraded",
                "models": len(self.source.table.routes),
                "tasks": tasks,
            }
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        response = web.Response(body=self.metrics.render())
        response.content_type = "text/plain"
        response.charset = "utf-8"
        return response


@dataclass(frozen=True)
class Call:
    """One model request on its way through the gateway."""

    label: str  # the route, e.g. chat/completions, for metrics
    body: Body
    path: str  # what the replica is asked for, query string included
    started: float


# How one transport sends a request to a picked replica (its response and what happened), and
# how it answers a request itself.
Attempt = Callable[[Pick], Awaitable[tuple[R, Outcome]]]
Answer = Callable[[errors.Reply], R]


def _response(reply: errors.Reply) -> web.StreamResponse:
    return reply.response()


def _consumed(body: Body) -> bool:
    return isinstance(body, StreamedBody) and body.consumed


def _model_entry(model_id: str, route: Route) -> dict[str, Any]:
    return {
        "id": model_id,
        "object": "model",
        "created": 0,
        "owned_by": "maas",
        "root": route.name,
        "state": route.state,
        "replicas": route.replicas,
        "ready_replicas": len(route.ready),
        "backend": route.backend,
    }
