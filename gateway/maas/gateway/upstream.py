"""Keep-alive connections from the gateway's front to replicas (and into its aiohttp
application), pooled per address, and their protocol: the response is parsed with httptools and
each piece handed at once to the `Receiver` (relay.py's Exchange) that the connection carries.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Protocol, cast

import httptools

from maas.gateway.errors import UpstreamUnreachable

ProtocolFactory = Callable[[], asyncio.BaseProtocol]
UPSTREAM_IDLE_S = 30.0  # a pooled connection idle longer is not reused
# Idle connections kept per address: a burst of a thousand requests must not leave a thousand
# sockets (and their peers in the aiohttp application) open afterwards.
MAX_IDLE_PER_KEY = 32
INTERNAL = "internal"  # the pool key of connections into the aiohttp application


class Receiver(Protocol):
    """Whom an upstream connection reports to while it carries one request: the response's head,
    its pieces and its end, failures, and back-pressure on the request's body."""

    def headers(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None: ...
    def piece(self, chunk: bytes) -> None: ...
    def end(self) -> None: ...
    def flush(self) -> None:
        """After each read: what it brought may be written on."""

    def broken(self, why: str) -> None: ...
    def upstream_lost(self) -> None: ...
    def pause_request(self) -> None:
        """The replica reads the request more slowly than it arrives: stop reading it."""

    def resume_request(self) -> None: ...


class UpstreamConnection(asyncio.Protocol):
    """One connection to a replica (or into the aiohttp application), kept for the next request
    while the replica keeps it alive."""

    def __init__(self, pool: UpstreamPool, key: str | tuple[str, int]) -> None:
        self.pool = pool
        self.key = key
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.exchange: Receiver | None = None
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.interim = False
        self.lost = False
        self.reused = False
        self.reusable = True
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:  # nothing was asked: a confused replica; never reuse it
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.reusable = False
            exchange.flush()
            exchange.broken(f"malformed response: {exc}")
            return
        exchange.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.pool.forget(self)
        if self.exchange is not None:
            self.exchange.upstream_lost()

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.pause_request()

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.resume_request()

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        # An interim response (100 Continue) is the replica's to the gateway: not relayed.
        self.interim = 100 <= status < 200
        if not self.interim and self.exchange is not None:
            self.exchange.headers(status, self.reason, self.headers)
        self.reason, self.headers = b"", []

    def on_body(self, chunk: bytes) -> None:
        if self.exchange is not None:
            self.exchange.piece(chunk)

    def on_message_complete(self) -> None:
        if self.interim:
            return
        self.reusable = self.reusable and self.parser.should_keep_alive()
        if self.exchange is not None:
            self.exchange.end()

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def pause_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def release(self) -> None:
        self.exchange = None
        if self.reusable and not self.lost:
            self.pool.release(self)
        else:
            self.close()

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.close()


class UpstreamPool:
    """Idle keep-alive connections per replica address, most recently used first."""

    def __init__(self, connect_timeout_s: float, application: ProtocolFactory) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.application = application
        self.idle: dict[str | tuple[str, int], list[UpstreamConnection]] = {}

    async def acquire(
        self, key: str | tuple[str, int], *, fresh: bool = False
    ) -> UpstreamConnection:
        idle = self.idle.get(key)
        now = asyncio.get_running_loop().time()
        while idle and not fresh:
            connection = idle.pop()
            if not connection.lost and now - connection.idle_since < UPSTREAM_IDLE_S:
                connection.reused = True
                return connection
            connection.close()
        return await self._connect(key)

    async def _connect(self, key: str | tuple[str, int]) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        try:
            if isinstance(key, tuple):
                async with asyncio.timeout(self.connect_timeout_s):
                    _, connection = await loop.create_connection(
                        lambda: UpstreamConnection(self, key), key[0], key[1]
                    )
                return connection
            # Into the aiohttp application over a socket pair: nothing listens, so nothing but
            # the front reaches it, and it may trust the front's key check.
            ours, theirs = socket.socketpair()
            try:
                await loop.connect_accepted_socket(self.application, theirs)
                _, connection = await loop.create_unix_connection(
                    lambda: UpstreamConnection(self, key), sock=ours
                )
            except BaseException:
                ours.close()
                theirs.close()
                raise
            return connection
        except (OSError, TimeoutError) as exc:
            raise UpstreamUnreachable(str(exc) or type(exc).__name__) from exc

    def release(self, connection: UpstreamConnection) -> None:
        connection.reused = False
        connection.idle_since = asyncio.get_running_loop().time()
        idle = self.idle.setdefault(connection.key, [])
        if len(idle) >= MAX_IDLE_PER_KEY:
            connection.close()
            return
        idle.append(connection)

    def close_idle(self, now: float) -> None:
        """Close the connections idle for UPSTREAM_IDLE_S or longer (acquire only ever looks at
        the most recent ones, so older ones would stay open for good)."""
        idle_s = UPSTREAM_IDLE_S
        for key, idle in list(self.idle.items()):
            stale = [c for c in idle if c.lost or now - c.idle_since >= idle_s]
            for connection in stale:
                idle.remove(connection)
                connection.close()
            if not idle:
                del self.idle[key]

    def forget(self, connection: UpstreamConnection) -> None:
        idle = self.idle.get(connection.key)
        if idle and connection in idle:
            idle.remove(connection)

    def close(self) -> None:
        for idle in self.idle.values():
            for connection in idle:
                connection.close()
        self.idle.clear()
