"""Relaying one request to one replica and its response back, chunk by chunk.

Nothing is buffered: each chunk the replica sends is written to the client as it arrives (SSE
streams included), and a usage tap watches the bytes go by. Failures are told apart because they
call for different actions: a replica that cannot be reached (nothing was sent: try another one),
a replica that breaks after answering (eject it; the client sees a cut-off response), and a client
that went away (close the upstream connection so the replica stops generating).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from maas.gateway.errors import BodyTooLarge, UpstreamFailed, UpstreamUnreachable
from maas.gateway.headers import request_headers, response_headers
from maas.gateway.usage import Usage, UsageTap


@dataclass
class StreamedBody:
    """A request body that is read from the client while it is sent to the replica: `prefix`
    holds what was read already (to find the model), `rest` the remainder of the stream."""

    prefix: list[bytes]
    rest: aiohttp.StreamReader | None
    limit: int
    size: int = 0
    consumed: bool = False
    too_large: bool = False

    async def chunks(self) -> AsyncIterator[bytes]:
        self.consumed = True
        for chunk in self.prefix:
            yield chunk
        if self.rest is None:
            return
        async for chunk in self.rest.iter_any():
            self.size += len(chunk)
            if self.size > self.limit:
                self.too_large = True
                raise BodyTooLarge(self.limit)
            yield chunk


Body = bytes | StreamedBody | None


@dataclass
class Outcome:
    """What happened to a relayed request, for metrics and the balancer."""

    status: int
    first_byte_s: float
    usage: Usage | None = None
    broken: str | None = None  # why the replica's response broke off
    client_gone: bool = False


async def _open(
    session: aiohttp.ClientSession, method: str, url: URL, body: Body, headers: CIMultiDict[str]
) -> aiohttp.ClientResponse:
    data = body.chunks() if isinstance(body, StreamedBody) else body
    try:
        return await session.request(method, url, data=data, headers=headers, allow_redirects=False)
    except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
        raise UpstreamUnreachable(str(exc) or type(exc).__name__) from exc
    except (aiohttp.ClientError, TimeoutError) as exc:
        if isinstance(body, StreamedBody) and body.too_large:
            raise BodyTooLarge(body.limit) from exc
        raise UpstreamFailed(str(exc) or type(exc).__name__) from exc


async def relay(
    session: aiohttp.ClientSession,
    request: web.Request,
    base_url: str,
    path: str,
    body: Body,
) -> tuple[web.StreamResponse, Outcome]:
    """Send the request to `base_url + path` and stream the answer to the client."""
    started = time.monotonic()
    url = URL(base_url + path, encoded=True)
    forwarded = request_headers(request.headers, request.remote or "")
    upstream = await _open(session, request.method, url, body, forwarded)
    outcome = Outcome(upstream.status, time.monotonic() - started)
    complete = False
    try:
        response = web.StreamResponse(
            status=upstream.status,
            reason=upstream.reason,
            headers=response_headers(upstream.headers),
        )
        await response.prepare(request)  # the headers leave with the first chunk
        complete = await _pump(upstream.content, response, outcome)
        if outcome.broken and request.transport is not None:
            # Cut the client's connection: a clean end would pass a truncated answer as whole.
            request.transport.close()
        return response, outcome
    finally:
        if complete:
            upstream.release()
        else:
            upstream.close()  # stops the replica's work (e.g. generation) for a lost client


async def _pump(
    content: aiohttp.StreamReader, response: web.StreamResponse, outcome: Outcome
) -> bool:
    """Copy the body chunk by chunk as it arrives; True when it ended cleanly."""
    tap = UsageTap()
    while True:
        try:
            chunk = await content.readany()
        except (aiohttp.ClientError, TimeoutError) as exc:
            outcome.broken = str(exc) or type(exc).__name__
            return False
        if chunk:
            tap.feed(chunk)
        try:
            if content.at_eof():
                # The last chunk and the end of the response leave in one write.
                await response.write_eof(chunk)
                outcome.usage = tap.usage()
                return True
            await response.write(chunk)
        except ConnectionResetError:
            outcome.client_gone = True
            return False
