"""The gateway's listening socket: each client connection's requests parsed as they arrive
(httptools), admitted (admission.py), and either served as model requests through the
protocol-level relay (relay.py) or handed to the aiohttp application; answers go out in order.

Why not aiohttp end to end: its client costs about 120 us of CPU per relayed request
(bench/gateway), more than the whole budget of the gateway's speed goal on a small node. Here a
model request costs two httptools (llhttp) parses and a few socket writes, and a response body
goes from the replica's socket to the client's inside `data_received`, with no task switch per
chunk. A request that is not a POST to a JSON model route (listing, metrics, uploads, the generic
proxy) takes one more hop, over a socket pair, into the aiohttp application (app.py), which keeps
what needs a full framework (multipart scanning, any method, streamed request bodies).

HTTP/1.1 as RFC 9112 has it: keep-alive, pipelined requests answered in order, chunked bodies both
ways, HTTP/1.0 clients (answered close-delimited), `Expect: 100-continue` answered here. Parsing is
httptools'; the bytes the gateway writes itself are in http1.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Coroutine
from typing import Any, cast

import httptools
import structlog
from aiohttp import web

from maas.gateway import errors, http1
from maas.gateway.admission import Delegate, Facts, Refuse, Serve, admit
from maas.gateway.app import Call, Gateway
from maas.gateway.errors import BadRequest
from maas.gateway.forward import Outcome
from maas.gateway.http1 import Request
from maas.gateway.metrics import UNKNOWN
from maas.gateway.relay import Exchange, delegate, relay_model
from maas.gateway.requests import model_of_json
from maas.gateway.routing import Pick
from maas.gateway.upstream import ProtocolFactory, UpstreamPool

log = structlog.get_logger("maas.gateway")

KEEPALIVE_S = 75.0  # an idle client connection is closed after this long (aiohttp's default)
SWEEP_S = 5.0
LINGER_S = 2.0


class Front:
    """The listening socket's protocol factory and what its connections share."""

    def __init__(self, gateway: Gateway, application: ProtocolFactory) -> None:
        self.gateway = gateway
        self.pool = UpstreamPool(gateway.config.connect_timeout_s, application)
        self.connections: set[ClientConnection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    def __call__(self) -> ClientConnection:
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        return ClientConnection(self)

    def spawn(self, work: Coroutine[Any, Any, None], connection: ClientConnection) -> None:
        task = asyncio.get_running_loop().create_task(_guarded(work, connection))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_S)
            self.close_idle(KEEPALIVE_S)
            self.pool.close_idle(asyncio.get_running_loop().time())

    def close_idle(self, idle_s: float) -> None:
        now = asyncio.get_running_loop().time()
        for connection in list(self.connections):
            if connection.active is None and now - connection.last_active >= idle_s:
                connection.close()

    async def drain(self, timeout_s: float) -> None:
        """Let requests in flight finish (up to `timeout_s`), then close every connection."""
        self.close_idle(0)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.tasks or any(c.active is not None for c in self.connections):
            if loop.time() >= deadline:
                break
            await asyncio.sleep(0.05)
            self.close_idle(0)
        for connection in list(self.connections):
            connection.close()
        leftover = [*self.tasks, *([self._sweeper] if self._sweeper else [])]
        for task in leftover:
            task.cancel()
        await asyncio.gather(*leftover, return_exceptions=True)
        self.pool.close()


class ClientConnection(asyncio.Protocol):
    """One client's connection: requests are parsed as they arrive and answered in order."""

    def __init__(self, front: Front) -> None:
        self.front = front
        self.gateway = front.gateway
        self.config = front.gateway.config
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.peer = b""
        self.incoming: Request | None = None
        self.active: Request | None = None
        self.waiting: deque[Request] = deque()
        self.exchange: Exchange | None = None
        self.closed = False
        self.upgrade = False  # a request asked to switch protocols: read no further
        self.eof = False  # the client will send nothing more
        self.ending = False  # no further request is served on this connection
        self.last_active = 0.0

    # --- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]).encode() if isinstance(peer, tuple) else b""
        self.last_active = asyncio.get_running_loop().time()
        self.front.connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self.upgrade or self.ending:
            return  # nothing more is served here: what still arrives is dropped
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # llhttp took the request as bodiless and stopped after it; it is refused in turn
            # (_start) and nothing after it is read.
            self.upgrade = True
            self.pause_reading()
        except httptools.HttpParserError as exc:
            self._malformed(400, f"The request is not valid HTTP/1.1: {exc}.")

    def eof_received(self) -> bool:
        """The client sent its last byte: answer what it sent whole, then close."""
        self.eof = True
        return not self.ending and self.active is not None and self.active.complete

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.front.connections.discard(self)
        if self.exchange is not None:
            self.exchange.client_lost()

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.upstream.pause_reading()

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.upstream.resume_reading()

    # --- httptools callbacks -------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.incoming = Request()

    def on_url(self, url: bytes) -> None:
        assert self.incoming is not None
        self.incoming.url += url
        self._grow(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.incoming is not None
        self.incoming.headers.append((name, value))
        self._grow(len(name) + len(value))

    def on_headers_complete(self) -> None:
        request = self.incoming
        assert request is not None
        request.method = self.parser.get_method()
        request.http10 = self.parser.get_http_version() == "1.0"
        request.keep_alive = self.parser.should_keep_alive() and not request.http10
        request.upgrade = self.parser.should_upgrade()
        if self.active is None:
            self._start(request)
        else:  # pipelined: read no further until its turn
            self.waiting.append(request)
            self.pause_reading()

    def on_body(self, chunk: bytes) -> None:
        request = self.incoming
        assert request is not None
        request.size += len(chunk)
        if request.sink is not None:
            request.sink(chunk)
            return
        request.body.append(chunk)
        if request.limit and request.size > request.limit and request is self.active:
            request.keep_alive = False
            request.body, request.sink, request.on_complete = [], http1.discard, None
            self.reply(request, errors.too_large(request.limit))

    def on_message_complete(self) -> None:
        request = self.incoming
        assert request is not None
        self.incoming = None
        request.complete = True
        if request.on_complete is not None:
            request.on_complete()

    # --- requests ------------------------------------------------------------------------

    def _start(self, request: Request) -> None:
        if self.closed or self.ending:
            return
        self.active = request
        authorization = request.header(b"authorization")
        facts = Facts(
            request.method,
            request.path().decode("latin-1"),
            authorization.decode("latin-1") if authorization is not None else None,
            request.header(b"content-length"),
            request.upgrade,
        )
        decision = admit(facts, self.gateway.keys, self.config.max_body_bytes)
        if isinstance(decision, Serve):
            self._serve(request, decision)
        elif isinstance(decision, Delegate):
            self._continue(request)
            self.front.spawn(delegate(self, self.front.pool, request), self)
        else:
            self._refused(request, decision)

    def _serve(self, request: Request, serve: Serve) -> None:
        """Hold the body up to the limit; the model request is served once it is whole."""
        self._continue(request)
        request.limit = serve.limit
        if request.size > serve.limit:
            request.keep_alive = False
            self.reply(request, errors.too_large(serve.limit))
        elif request.complete:
            self.front.spawn(self._serve_model(request, serve.label), self)
        else:
            request.on_complete = lambda: self.front.spawn(
                self._serve_model(request, serve.label), self
            )

    def _refused(self, request: Request, refuse: Refuse) -> None:
        if refuse.reason is not None:
            self.gateway.metrics.error(UNKNOWN, "", refuse.reason)
        if refuse.at_once:
            request.keep_alive = False  # the body is left unread
            self.reply(request, refuse.reply)
        else:
            self._refuse(request, refuse.reply)

    def _refuse(self, request: Request, reply: errors.Reply) -> None:
        """Answer `reply` once the request's body is read (and dropped), so the connection stays
        usable; a large body is not read: the answer comes at once and the connection closes."""
        if not request.complete and not request.small_body():
            request.keep_alive = False
        if request.complete or not request.keep_alive:
            self.reply(request, reply)
            return
        request.sink = http1.discard
        request.on_complete = lambda: self.reply(request, reply)

    def _continue(self, request: Request) -> None:
        expect = request.header(b"expect")
        if expect is not None and expect.lower() == b"100-continue" and not request.complete:
            self.write(http1.CONTINUE)

    async def _serve_model(self, request: Request, label: str) -> None:
        if request is not self.active:
            return  # answered already (e.g. 413 for a body over the limit)
        body = b"".join(request.body)
        try:
            model = model_of_json(body)
        except BadRequest as exc:
            self.reply(request, exc.reply())
            return
        call = Call(label, body, request.url.decode("latin-1"), self.gateway.clock())

        async def attempt(pick: Pick) -> tuple[None, Outcome]:
            return None, await relay_model(self, self.front.pool, request, pick, body)

        await self.gateway.dispatch(call, model, attempt, lambda r: self.reply(request, r))

    # --- answers -------------------------------------------------------------------------

    def reply(self, request: Request, reply: errors.Reply) -> None:
        """Answer `request` with the gateway's own JSON response."""
        if request is not self.active:
            return
        keep_alive = request.keep_alive and request.complete
        self.write(http1.answer(reply, keep_alive))
        self.finished(request, keep_alive)

    def finished(self, request: Request, keep_alive: bool) -> None:
        """The response to `request` is written whole: on to the next request, or close."""
        if request is not self.active:
            return
        self.active = None
        self.exchange = None
        if not keep_alive or (self.eof and not self.waiting):
            self._end(linger=not request.complete or self.incoming is not None)
            return
        self.last_active = asyncio.get_running_loop().time()
        if self.waiting:
            self._start(self.waiting.popleft())
        if not self.waiting:
            self.resume_reading()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def pause_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Cut the connection: a clean end would pass a truncated answer as whole."""
        if self.transport is not None:
            self.transport.abort()

    def _grow(self, size: int) -> None:
        assert self.incoming is not None
        self.incoming.head_size += size
        if self.incoming.head_size > http1.MAX_HEAD_BYTES:
            self._malformed(431, "The request's headers are too large.")

    def _malformed(self, status: int, message: str) -> None:
        """A request that cannot be parsed on: answer it when nothing else is being answered,
        then close, since where the next request would start is unknown."""
        if self.active is None and not self.ending:
            request = self.incoming or Request()
            request.keep_alive = False
            self.active = request
            self.reply(request, errors.openai_error(status, message))
        else:
            self.abort()
        self.ending = True

    def _end(self, *, linger: bool) -> None:
        """Serve no more requests and close. With `linger` (the client may still be sending, e.g.
        a body left unread), stop writing but read on for a moment first: closing with unread data
        makes the kernel reset the connection, which can destroy the answer before it is read."""
        self.ending = True
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if not linger or not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        transport.resume_reading()
        asyncio.get_running_loop().call_later(LINGER_S, transport.close)


async def _guarded(work: Coroutine[Any, Any, None], connection: ClientConnection) -> None:
    """A request's task: a defect in it costs that connection, never the gateway."""
    try:
        await work
    except asyncio.CancelledError:
        connection.abort()
        raise
    except Exception:
        log.exception("request_failed")
        connection.abort()


@contextlib.asynccontextmanager
async def listening(
    gateway: Gateway, host: str, port: int, *, backlog: int = 1024
) -> AsyncIterator[tuple[str, int]]:
    """Serve `gateway` on host:port (port 0: any free one) until the block ends; yields the
    address bound. At the end, requests in flight get shutdown_timeout_s to finish."""
    # Cancelling the handler when its client disconnects is what stops a replica's work for a
    # client that went away (the upstream connection is closed with it).
    # The front has drained requests already when the application is stopped.
    runner = web.AppRunner(
        gateway.app(), handler_cancellation=True, access_log=None, shutdown_timeout=1.0
    )
    await runner.setup()
    assert runner.server is not None
    front = Front(gateway, runner.server)
    loop = asyncio.get_running_loop()
    try:
        server = await loop.create_server(front, host, port, backlog=backlog)
        try:
            bound = server.sockets[0].getsockname()
            yield str(bound[0]), int(bound[1])
        finally:
            server.close()
            await front.drain(gateway.config.shutdown_timeout_s)
    finally:
        await runner.cleanup()
