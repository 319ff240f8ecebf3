"""The front's protocol-level relay: one request sent over one upstream connection (to a replica,
or into the aiohttp application) and its response written to the client as each piece arrives,
in `data_received`, with no task switch per chunk. Headers follow the policy in headers.py.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from maas.gateway import errors, http1
from maas.gateway.config import GatewayConfig
from maas.gateway.errors import StaleConnection, UpstreamFailed, UpstreamUnreachable
from maas.gateway.forward import Outcome
from maas.gateway.headers import request_lines, response_lines
from maas.gateway.http1 import Request
from maas.gateway.routing import Pick
from maas.gateway.upstream import INTERNAL, UpstreamConnection, UpstreamPool
from maas.gateway.usage import UsageTap


class Client(Protocol):
    """The client's connection as an exchange sees it (front.ClientConnection)."""

    config: GatewayConfig
    peer: bytes
    closed: bool
    exchange: Exchange | None

    def write(self, data: bytes) -> None: ...
    def reply(self, request: Request, reply: errors.Reply) -> None: ...
    def finished(self, request: Request, keep_alive: bool) -> None: ...
    def abort(self) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...


async def relay_model(
    client: Client, pool: UpstreamPool, request: Request, pick: Pick, body: bytes
) -> Outcome:
    """Send a model request, its body held whole, to the picked replica."""
    host_port, address = http1.address(pick.replica.url)
    head = [b"POST ", request.url, b" HTTP/1.1\r\nHost: ", host_port, b"\r\n"]
    head += request_lines(request.headers, client.peer)
    head.append(b"Content-Length: %d\r\n\r\n" % len(body))
    message = b"".join(head) + body
    upstream = await pool.acquire(address)
    try:
        return await Exchange(client, request, upstream, UsageTap()).run(message)
    except StaleConnection:
        # A pooled connection the replica had closed: nothing reached it, so send again.
        upstream = await pool.acquire(address, fresh=True)
        return await Exchange(client, request, upstream, UsageTap()).run(message)


async def delegate(client: Client, pool: UpstreamPool, request: Request) -> None:
    """Relay a request that is not a model request into the aiohttp application, its body
    streamed as it arrives."""
    head, chunked = _delegated_head(client, request)
    try:
        upstream = await pool.acquire(INTERNAL)
    except UpstreamUnreachable as exc:
        client.reply(request, exc.reply())
        return
    transport = upstream.transport
    assert transport is not None

    def send(chunk: bytes) -> None:
        if chunk and not transport.is_closing():
            transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)

    def sent() -> None:
        if chunked and not transport.is_closing():
            transport.write(http1.LAST_CHUNK)

    exchange = Exchange(client, request, upstream, None)
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
        client.reply(request, exc.reply())


def _delegated_head(client: Client, request: Request) -> tuple[bytes, bool]:
    """The request line and headers for the aiohttp application, and whether the body is
    sent chunked (as it arrives, length unknown)."""
    length = request.header(b"content-length")
    encoding = request.header(b"transfer-encoding")
    chunked = encoding is not None and b"chunked" in encoding.lower()
    head = [request.method, b" ", request.url, b" HTTP/1.1\r\nHost: gateway\r\n"]
    head += request_lines(request.headers, client.peer)
    if chunked:
        head.append(b"Transfer-Encoding: chunked\r\n")
    elif length is not None:
        head.append(b"Content-Length: " + length + b"\r\n")
    head.append(b"\r\n")
    return b"".join(head), chunked


class Exchange:
    """One request relayed over one upstream connection and its response written to the client
    as each piece arrives."""

    def __init__(
        self,
        client: Client,
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
        self.framing = http1.NO_BODY
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
        config = self.client.config
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
        config = self.client.config
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
        self.framing, self.until_close = http1.framing(request, status, headers)
        self.keep_alive = request.keep_alive and self.framing != http1.UNTIL_CLOSE
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, reason or http1.phrase(status))]
        lines += response_lines(headers)
        if self.framing == http1.CHUNKED:
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
            if self.framing == http1.CHUNKED:
                parts += (b"%x\r\n" % len(data), data, b"\r\n")
            elif self.framing != http1.NO_BODY:
                parts.append(data)
        if self.ended and self.framing == http1.CHUNKED:
            parts.append(http1.LAST_CHUNK)
        if parts:
            self.client.write(b"".join(parts))
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
            request.sink = http1.discard
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
