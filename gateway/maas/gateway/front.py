"""The gateway's listening socket: model requests relayed at the protocol level, everything else
handed to the aiohttp application.

Why not aiohttp end to end: its client costs about 120 us of CPU per relayed request
(bench/gateway), more than the whole budget of the gateway's speed goal on a small node. Here a
model request costs two httptools (llhttp) parses and a few socket writes, and a response body
goes from the replica's socket to the client's inside `data_received`, with no task switch per
chunk. A request that is not a POST to a JSON model route (listing, metrics, uploads, the generic
proxy) takes one more hop, over a socket pair, into the aiohttp application (app.py), which keeps
what needs a full framework (multipart scanning, any method, streamed request bodies).

HTTP/1.1 as RFC 9112 has it: keep-alive, pipelined requests answered in order, chunked bodies both
ways, HTTP/1.0 clients (answered close-delimited), `Expect: 100-continue` answered here. Parsing is
httptools'; this module only writes status lines, header lines and chunk sizes.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine
from http import HTTPStatus
from typing import Any, cast

import httptools
import structlog
from aiohttp import web

from maas.gateway import errors
from maas.gateway.app import JSON_ROUTES, Call, Gateway
from maas.gateway.forward import Outcome, UpstreamFailed, UpstreamUnreachable
from maas.gateway.requests import BadRequest, model_of_json
from maas.gateway.routing import Pick
from maas.gateway.upstream import (
    INTERNAL,
    ProtocolFactory,
    StaleConnection,
    UpstreamConnection,
    UpstreamPool,
)
from maas.gateway.usage import UsageTap

log = structlog.get_logger("maas.gateway")

MODEL_ROUTES = {path.encode(): path[4:] for path in JSON_ROUTES}
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# The gateway frames bodies itself, names the client itself, and its credentials never travel on.
NOT_FORWARDED = HOP_BY_HOP | {b"host", b"authorization", b"expect", b"content-length"}
MAX_HEAD_BYTES = 64 * 1024
DISCARD_BYTES = (
    64 * 1024
)  # a refused request's body up to this size is read, to keep the connection
KEEPALIVE_S = 75.0  # an idle client connection is closed after this long (aiohttp's default)
SWEEP_S = 5.0
LINGER_S = 2.0
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
LAST_CHUNK = b"0\r\n\r\n"

# How a response body is framed towards the client.
LENGTH, CHUNKED, UNTIL_CLOSE, NO_BODY = range(4)


class Request:
    """One client request as it is parsed; its body either collects in `body` or, once the
    request is relayed as it arrives, goes to `sink`."""

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_size = 0
        self.method = b""
        self.keep_alive = True
        self.http10 = False
        self.complete = False
        self.body: list[bytes] = []
        self.size = 0
        self.limit = 0  # > 0: the body is held, up to this size
        self.sink: Callable[[bytes], None] | None = None
        self.on_complete: Callable[[], None] | None = None
        self.upgrade = False

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def path(self) -> bytes:
        return self.url.partition(b"?")[0]


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
            request.body, request.sink, request.on_complete = [], _discard, None
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
        path = request.path()
        authorization = request.header(b"authorization")
        refusal = self.gateway.refusal(
            path.decode("latin-1"), authorization.decode("latin-1") if authorization else None
        )
        if refusal is not None:
            self._refuse(request, refusal)
            return
        if request.upgrade:
            request.keep_alive = False
            message = "The gateway does not switch protocols; send the request without Upgrade."
            self.reply(request, errors.openai_error(400, message))
            return
        label = MODEL_ROUTES.get(path)
        if label is None:
            self._continue(request)
            self.front.spawn(self._delegate(request), self)
            return
        if request.method != b"POST":
            self._refuse(request, errors.openai_error(405, "Method Not Allowed"))
            return
        limit = self.gateway.config.max_body_bytes
        length = request.header(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            request.keep_alive = False  # the body is left unread
            self.reply(request, errors.too_large(limit))
            return
        self._continue(request)
        request.limit = limit
        if request.size > limit:
            request.keep_alive = False
            self.reply(request, errors.too_large(limit))
        elif request.complete:
            self.front.spawn(self._serve_model(request, label), self)
        else:
            request.on_complete = lambda: self.front.spawn(self._serve_model(request, label), self)

    def _refuse(self, request: Request, reply: errors.Reply) -> None:
        """Answer `reply` once the request's body is read (and dropped), so the connection stays
        usable; a large body is not read: the answer comes at once and the connection closes."""
        if not request.complete and not _small_body(request):
            request.keep_alive = False
        if request.complete or not request.keep_alive:
            self.reply(request, reply)
            return
        request.sink = _discard
        request.on_complete = lambda: self.reply(request, reply)

    def _continue(self, request: Request) -> None:
        expect = request.header(b"expect")
        if expect is not None and expect.lower() == b"100-continue" and not request.complete:
            self._write(CONTINUE)

    async def _serve_model(self, request: Request, label: str) -> None:
        if request is not self.active:
            return  # answered already (e.g. 413 for a body over the limit)
        body = b"".join(request.body)
        try:
            model = model_of_json(body)
        except BadRequest as exc:
            self.reply(request, errors.openai_error(400, exc.message, param=exc.param))
            return
        call = Call(label, body, request.url.decode("latin-1"), self.gateway.clock())

        async def attempt(pick: Pick) -> tuple[None, Outcome]:
            return None, await self._relay_model(request, pick, body)

        await self.gateway.dispatch(call, model, attempt, lambda r: self.reply(request, r))

    async def _relay_model(self, request: Request, pick: Pick, body: bytes) -> Outcome:
        host_port, address = _address(pick.replica.url)
        head = [b"POST ", request.url, b" HTTP/1.1\r\nHost: ", host_port, b"\r\n"]
        head += self._forwarded_headers(request)
        head.append(b"Content-Length: %d\r\n\r\n" % len(body))
        message = b"".join(head) + body
        upstream = await self.front.pool.acquire(address)
        try:
            return await Exchange(self, request, upstream, UsageTap()).run(message)
        except StaleConnection:
            # A pooled connection the replica had closed: nothing reached it, so send again.
            upstream = await self.front.pool.acquire(address, fresh=True)
            return await Exchange(self, request, upstream, UsageTap()).run(message)

    async def _delegate(self, request: Request) -> None:
        """Relay a request that is not a model request into the aiohttp application, its body
        streamed as it arrives."""
        head, chunked = self._delegated_head(request)
        try:
            upstream = await self.front.pool.acquire(INTERNAL)
        except UpstreamUnreachable as exc:
            self.reply(request, errors.openai_error(502, f"The gateway failed: {exc}"))
            return
        transport = upstream.transport
        assert transport is not None

        def send(chunk: bytes) -> None:
            if chunk and not transport.is_closing():
                transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)

        def sent() -> None:
            if chunked and not transport.is_closing():
                transport.write(LAST_CHUNK)

        exchange = Exchange(self, request, upstream, None)
        buffered, request.body = request.body, []
        request.sink, request.on_complete = send, sent
        transport.write(head)
        for chunk in buffered:
            send(chunk)
        if request.complete:
            sent()
        try:
            await exchange.run(b"")
        except UpstreamFailed as exc:
            self.reply(request, errors.openai_error(502, f"The gateway failed: {exc}"))

    def _delegated_head(self, request: Request) -> tuple[bytes, bool]:
        """The request line and headers for the aiohttp application, and whether the body is
        sent chunked (as it arrives, length unknown)."""
        length = request.header(b"content-length")
        encoding = request.header(b"transfer-encoding")
        chunked = encoding is not None and b"chunked" in encoding.lower()
        head = [request.method, b" ", request.url, b" HTTP/1.1\r\nHost: gateway\r\n"]
        head += self._forwarded_headers(request)
        if chunked:
            head.append(b"Transfer-Encoding: chunked\r\n")
        elif length is not None:
            head.append(b"Content-Length: " + length + b"\r\n")
        head.append(b"\r\n")
        return b"".join(head), chunked

    def _forwarded_headers(self, request: Request) -> list[bytes]:
        lines: list[bytes] = []
        forwarded: list[bytes] = []
        for name, value in request.headers:
            lower = name.lower()
            if lower == b"x-forwarded-for":
                forwarded.append(value)
            elif lower not in NOT_FORWARDED:
                lines += (name, b": ", value, b"\r\n")
        forwarded.append(self.peer)
        lines += (b"X-Forwarded-For: ", b", ".join(forwarded), b"\r\n")
        return lines

    # --- answers -------------------------------------------------------------------------

    def reply(self, request: Request, reply: errors.Reply) -> None:
        """Answer `request` with the gateway's own JSON response."""
        if request is not self.active:
            return
        keep_alive = request.keep_alive and request.complete
        head = [
            b"HTTP/1.1 %d %s\r\n" % (reply.status, _phrase(reply.status)),
            b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(reply.body),
            b"Date: " + email.utils.formatdate(usegmt=True).encode() + b"\r\n",
        ]
        head += [f"{name}: {value}\r\n".encode("latin-1") for name, value in reply.headers.items()]
        if not keep_alive:
            head.append(b"Connection: close\r\n")
        head.append(b"\r\n")
        self._write(b"".join(head) + reply.body)
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

    def _write(self, data: bytes) -> None:
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
        if self.incoming.head_size > MAX_HEAD_BYTES:
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


class Exchange:
    """One request relayed over one upstream connection and its response written to the client
    as each piece arrives."""

    def __init__(
        self,
        client: ClientConnection,
        request: Request,
        upstream: UpstreamConnection,
        tap: UsageTap | None,
    ) -> None:
        self.client = client
        self.request = request
        self.upstream = upstream
        self.tap = tap
        self.outcome = Outcome(0, 0.0)
        loop = asyncio.get_running_loop()
        self.started = self.last_seen = loop.time()
        self.done: asyncio.Future[None] = loop.create_future()
        self.timer: asyncio.TimerHandle | None = None
        self.head = b""
        self.body: list[bytes] = []
        self.framing = NO_BODY
        self.until_close = False  # the replica ends the body by closing the connection
        self.keep_alive = False
        self.ended = False
        self.seen = False  # any byte of the response arrived

    async def run(self, message: bytes) -> Outcome:
        """Send `message` (the request, or what is left of it) and wait for the response to be
        written to the client; UpstreamFailed when it failed before its status line."""
        if self.client.closed:
            self.upstream.close()
            self.outcome.status, self.outcome.client_gone = 499, True
            return self.outcome
        self.client.exchange = self
        self.upstream.exchange = self
        if message:
            self.upstream.write(message)
        config = self.client.gateway.config
        first_check = min(config.read_timeout_s, config.total_timeout_s)
        self.timer = asyncio.get_running_loop().call_later(first_check, self._check)
        try:
            await self.done
        finally:
            self.timer.cancel()
            if self.upstream.exchange is self:  # released, it may serve another request now
                self.upstream.exchange = None
        return self.outcome

    def _check(self) -> None:
        """The read and total timeouts, checked when they could first have passed."""
        config = self.client.gateway.config
        loop = asyncio.get_running_loop()
        now = loop.time()
        idle_left = config.read_timeout_s - (now - self.last_seen)
        total_left = config.total_timeout_s - (now - self.started)
        if idle_left > 0 and total_left > 0:
            self.timer = loop.call_later(min(idle_left, total_left), self._check)
            return
        self.upstream.close()
        self.broken("timed out" if self.outcome.status else "timed out before the response")

    # --- what the upstream connection reports --------------------------------------------

    def headers(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.outcome.status = status
        self.outcome.first_byte_s = asyncio.get_running_loop().time() - self.started
        request = self.request
        self.framing, self.until_close = _framing(request, status, headers)
        self.keep_alive = request.keep_alive and self.framing != UNTIL_CLOSE
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, reason or _phrase(status))]
        for name, value in headers:
            if name.lower() not in HOP_BY_HOP:
                lines += (name, b": ", value, b"\r\n")
        if self.framing == CHUNKED:
            lines.append(b"Transfer-Encoding: chunked\r\n")
        if not self.keep_alive:
            lines.append(b"Connection: close\r\n")
        lines.append(b"\r\n")
        self.head = b"".join(lines)
        if request.method == b"HEAD":
            self.upstream.reusable = False  # the parser would wait for the body HEAD has not
            self.end()

    def piece(self, chunk: bytes) -> None:
        self.body.append(chunk)
        if self.tap is not None:
            self.tap.feed(chunk)

    def end(self) -> None:
        self.ended = True

    def flush(self) -> None:
        """Write what the last read brought, in one write: the head, the body pieces, the end."""
        self.seen = True
        self.last_seen = asyncio.get_running_loop().time()
        parts = []
        if self.head:
            parts.append(self.head)
            self.head = b""
        if self.body:
            data = b"".join(self.body) if len(self.body) > 1 else self.body[0]
            self.body = []
            if self.framing == CHUNKED:
                parts += (b"%x\r\n" % len(data), data, b"\r\n")
            elif self.framing != NO_BODY:
                parts.append(data)
        if self.ended and self.framing == CHUNKED:
            parts.append(LAST_CHUNK)
        if parts:
            self.client._write(b"".join(parts))
        if self.ended:
            self._complete()

    def upstream_lost(self) -> None:
        if self.done.done():
            return
        if self.until_close and self.outcome.status:
            self.ended = True
            self.flush()
        elif not self.outcome.status:
            if self.upstream.reused and not self.seen:
                self._fail_before(StaleConnection("the pooled connection was closed"))
            else:
                self._fail_before(UpstreamFailed("the connection closed before the response"))
        else:
            self.broken("the connection closed mid-response")

    def pause_request(self) -> None:
        self.client.pause_reading()

    def resume_request(self) -> None:
        self.client.resume_reading()

    def client_lost(self) -> None:
        if self.done.done():
            return
        self.outcome.client_gone = True
        if not self.outcome.status:
            self.outcome.status = 499
        self.upstream.close()  # stops the replica's work (e.g. generation) for a lost client
        self.done.set_result(None)

    # --- endings -------------------------------------------------------------------------

    def _complete(self) -> None:
        if self.done.done():
            return
        if self.tap is not None:
            self.outcome.usage = self.tap.usage()
        request = self.request
        if not request.complete:
            # The replica answered before the whole body was sent (e.g. 413): the rest of it
            # goes nowhere, and the connection, left mid-request, is not reused.
            request.sink = _discard
            self.upstream.reusable = False
        self.upstream.release()
        self.done.set_result(None)
        self.client.finished(request, self.keep_alive and request.complete)

    def _fail_before(self, exc: UpstreamFailed) -> None:
        self.upstream.close()
        if not self.done.done():
            self.done.set_exception(exc)

    def broken(self, why: str) -> None:
        """The response broke off after its head: cut the client's connection."""
        if not self.outcome.status:
            self._fail_before(UpstreamFailed(why))
            return
        self.outcome.broken = why
        self.upstream.close()
        self.client.abort()
        if not self.done.done():
            self.done.set_result(None)


def _framing(request: Request, status: int, headers: list[tuple[bytes, bytes]]) -> tuple[int, bool]:
    """How the response's body goes to the client, and whether the replica ends it by closing
    the connection (no length, not chunked)."""
    if request.method == b"HEAD" or status in (204, 304):
        return NO_BODY, False
    has_length = False
    chunked = False
    for name, value in headers:
        lower = name.lower()
        if lower == b"content-length":
            has_length = True
        elif lower == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
    if has_length and not chunked:
        return LENGTH, False
    return (UNTIL_CLOSE if request.http10 else CHUNKED), not chunked


def _small_body(request: Request) -> bool:
    length = request.header(b"content-length")
    if request.header(b"transfer-encoding") is not None:
        return False
    return length is None or (length.isdigit() and int(length) <= DISCARD_BYTES)


def _discard(chunk: bytes) -> None:
    pass


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


@functools.lru_cache(maxsize=4096)
def _address(url: str) -> tuple[bytes, tuple[str, int]]:
    """`http://host:port` -> the Host header value and the address to connect to."""
    host_port = url.removeprefix("http://").rstrip("/")
    host, _, port = host_port.rpartition(":")
    return host_port.encode(), (host.strip("[]"), int(port))


def _phrase(status: int) -> bytes:
    with contextlib.suppress(ValueError):
        return HTTPStatus(status).phrase.encode()
    return b"Unknown"


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
