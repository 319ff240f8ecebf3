"""The front's HTTP/1.1 handling over raw sockets: keep-alive and pooled replica connections,
pipelining, HTTP/1.0, chunked bodies, malformed requests, upgrades, odd replicas, timeouts."""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from maas.gateway import front
from maas.gateway.keys import hash_key
from support.gateway import (
    Replica,
    asynctest,
    deployment,
    gateway,
    metric,
    metrics_text,
    port_of,
    serving,
    status,
)

CHAT = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()


def post(
    body: bytes, *headers: str, path: str = "/v1/chat/completions", close: bool = False
) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: gw", f"Content-Length: {len(body)}", *headers]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def send(url: str, data: bytes) -> bytes:
    """Write `data` on one connection, half-close it and read until the gateway closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(url))
    writer.write(data)
    writer.write_eof()
    answer = await reader.read()
    writer.close()
    return answer


@asynccontextmanager
async def raw_replica(
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[int]:
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    return head + await reader.readexactly(length)


@asynctest()
async def test_keep_alive_reuses_one_replica_connection() -> None:
    replica = Replica("r0")
    async with (
        serving(replica.app()) as up,
        gateway(status(deployment("m", [port_of(up)]))) as (url, _),
        aiohttp.ClientSession() as s,
    ):
        for _ in range(5):
            async with s.post(url + "/v1/chat/completions", data=CHAT) as r:
                assert r.status == 200
                await r.read()
    assert len({seen["peer"] for seen in replica.seen}) == 1


@asynctest()
async def test_pipelined_requests_are_answered_in_order() -> None:
    replica = Replica("r0")
    async with (
        serving(replica.app()) as up,
        gateway(status(deployment("m", [port_of(up)]))) as (url, _),
    ):
        first = json.dumps({"model": "m", "stream": True, "chunks": 2}).encode()
        answer = await send(url, post(first) + post(b'{"model": "nope"}') + post(CHAT, close=True))
    statuses = re.findall(rb"HTTP/1\.1 \d{3} [A-Za-z ]+", answer)
    assert statuses == [b"HTTP/1.1 200 OK", b"HTTP/1.1 404 Not Found", b"HTTP/1.1 200 OK"]
    assert answer.index(b"[DONE]") < answer.index(b"model_not_found") < answer.index(b"from r0")


@asynctest()
async def test_an_http10_client_gets_a_close_delimited_stream() -> None:
    replica = Replica("r0")
    async with (
        serving(replica.app()) as up,
        gateway(status(deployment("m", [port_of(up)]))) as (url, _),
    ):
        body = json.dumps({"model": "m", "stream": True, "chunks": 2}).encode()
        request = f"POST /v1/chat/completions HTTP/1.0\r\nContent-Length: {len(body)}\r\n\r\n"
        answer = await send(url, request.encode() + body)
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert b"chunked" not in head.lower() and b"Connection: close" in head
    assert rest.startswith(b"data: ") and rest.endswith(b"data: [DONE]\n\n")


@asynctest()
async def test_a_chunked_request_body_reaches_the_replica_whole() -> None:
    replica = Replica("r0")
    async with (
        serving(replica.app()) as up,
        gateway(status(deployment("m", [port_of(up)]))) as (url, _),
    ):
        request = (
            b"POST /v1/chat/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
            b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
        )
        halves = CHAT[:10], CHAT[10:]
        body = b"".join(b"%x\r\n%b\r\n" % (len(h), h) for h in halves) + b"0\r\n\r\n"
        answer = await send(url, request + body)
    assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK")
    assert replica.seen[0]["size"] == len(CHAT)
    assert replica.seen[0]["headers"]["Content-Length"] == str(len(CHAT))
    assert "Expect" not in replica.seen[0]["headers"]


@asynctest()
async def test_malformed_requests_and_oversized_heads_are_refused() -> None:
    async with gateway(status()) as (url, _):
        answer = await send(url, b"NOT HTTP AT ALL\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 400 Bad Request")
        assert b"Connection: close" in answer
        huge = post(CHAT, *[f"X-Pad-{i}: {'a' * 1000}" for i in range(80)])
        answer = await send(url, huge)
        assert answer.startswith(b"HTTP/1.1 431 ")


@asynctest()
async def test_an_upgrade_request_is_refused_and_the_connection_closed() -> None:
    async with gateway(status(deployment("m", [1]))) as (url, _):
        upgrade = ("Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c", "HTTP2-Settings: AA")
        answer = await send(url, post(CHAT, *upgrade) + post(CHAT))
    assert answer.startswith(b"HTTP/1.1 400 Bad Request")
    assert answer.count(b"HTTP/1.1") == 1 and b"Connection: close" in answer
    assert b"does not switch protocols" in answer


@asynctest()
async def test_head_and_get_through_the_generic_proxy_keep_the_connection() -> None:
    replica = Replica("r0")
    async with serving(replica.app()) as up:
        doc = status(deployment("tts", [port_of(up)], generic_proxy=True))
        async with gateway(doc) as (url, _):
            head = b"HEAD /proxy/tts/voices HTTP/1.1\r\nHost: gw\r\n\r\n"
            get = b"GET /proxy/tts/voices?x=1 HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
            answer = await send(url, head + get)
    first, _, second = answer.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200 OK") and b"Content-Length" in first
    assert second.startswith(b"HTTP/1.1 200 OK")
    assert json.loads(second.partition(b"\r\n\r\n")[2])["path"] == "/voices?x=1"


@asynctest()
async def test_a_close_delimited_replica_response_is_relayed_whole() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n")
        writer.write(b'{"usage": {"prompt_tokens": 1, "completion_tokens": 2}}')
        await writer.drain()
        writer.close()

    async with (
        raw_replica(handle) as port,
        gateway(status(deployment("m", [port]))) as (url, _),
        aiohttp.ClientSession() as s,
    ):
        for _ in range(2):
            async with s.post(url + "/v1/chat/completions", data=CHAT) as r:
                assert r.status == 200
                assert r.headers["Transfer-Encoding"] == "chunked"
                assert json.loads(await r.read())["usage"]["completion_tokens"] == 2
        text = await metrics_text(s, url)
    assert metric(text, "maas_gateway_tokens_total", model="m", kind="completion") == 2 * 2


@asynctest()
async def test_a_pooled_connection_the_replica_dropped_is_retried_on_a_fresh_one() -> None:
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        # Keep-alive was promised; the second request on this connection is dropped unanswered.
        await read_request(reader)
        writer.close()

    async with (
        raw_replica(handle) as port,
        gateway(status(deployment("m", [port]))) as (url, _),
        aiohttp.ClientSession() as s,
    ):
        for _ in range(2):
            async with s.post(url + "/v1/chat/completions", data=CHAT) as r:
                assert (r.status, await r.read()) == (200, b"ok")
    assert connections == 2


@asynctest()
async def test_a_silent_replica_times_out() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await read_request(reader)
        if b'"stream"' in request:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await reader.read()  # silent until the gateway gives up and closes
        writer.close()

    async with raw_replica(handle) as port:
        doc = status(deployment("m", [port, port]))
        async with gateway(doc, read_timeout_s=0.3) as (url, gw), aiohttp.ClientSession() as s:
            async with s.post(url + "/v1/chat/completions", data=CHAT) as r:
                assert r.status == 502
                assert (await r.json())["error"]["code"] == "upstream_failed"
            gw.balancer.ejected_until.clear()
            streaming = json.dumps({"model": "m", "stream": True}).encode()
            async with s.post(url + "/v1/chat/completions", data=streaming) as r:
                assert r.status == 200
                with pytest.raises(aiohttp.ClientPayloadError):  # cut off, not ended
                    await r.read()
            text = await metrics_text(s, url)
    labels = {"model": "m", "route": "chat/completions"}
    assert metric(text, "maas_gateway_errors_total", **labels, reason="upstream_failed") == 1
    assert (
        metric(text, "maas_gateway_errors_total", **labels, reason="upstream_failed_mid_flight")
        == 1
    )


@asynctest()
async def test_stopping_lets_a_stream_in_flight_finish_and_closes_idle_connections() -> None:
    replica = Replica("r0")
    async with serving(replica.app()) as up:
        held = json.dumps({"model": "m", "stream": True, "hold": True}).encode()
        async with gateway(status(deployment("m", [port_of(up)]))) as (url, _):
            idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port_of(url))
            reader, writer = await asyncio.open_connection("127.0.0.1", port_of(url))
            writer.write(post(held))
            await reader.readuntil(b"t0")  # the stream has begun; the replica holds the rest
            asyncio.get_running_loop().call_later(0.3, replica.gate.set)
        # Leaving the block stopped the gateway: after the stream had ended whole.
        rest = await reader.read()
        assert rest.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n")
        assert await idle_reader.read() == b""  # the idle connection was closed, not kept
        for w in (writer, idle_writer):
            w.close()


def mutations(seed: int, count: int) -> list[bytes]:
    """Requests broken in the ways bytes break: flipped, cut, doubled, with odd lengths."""
    rng = random.Random(seed)
    chunked = b"POST /v1/chat/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunked += b"%x\r\n%b\r\n0\r\n\r\n" % (len(CHAT), CHAT)
    seeds = [post(CHAT), chunked, b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n", post(CHAT) * 3]
    odd = [b"\r\n", b"\n", b"\x00", b":", b" ", b"-1", b"99999999999999999999", b"chunked", b"\xff"]
    cases = []
    for _ in range(count):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(data) + 1)
            match rng.randrange(4):
                case 0:
                    data[at : at + 1] = bytes([rng.randrange(256)])
                case 1:
                    data[at:] = b""
                case 2:
                    data[at:at] = rng.choice(odd)
                case _:
                    data[at:at] = data[: rng.randrange(len(data) + 1)]
        cases.append(bytes(data))
    return cases


@asynctest(timeout=120)
async def test_broken_requests_get_an_answer_or_a_closed_connection_never_a_crash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    failures: list[object] = []
    monkeypatch.setattr(front.log, "exception", lambda *a, **k: failures.append((a, k)))
    asyncio.get_running_loop().set_exception_handler(lambda _, context: failures.append(context))
    replica = Replica("r0")
    async with (
        serving(replica.app()) as up,
        gateway(status(deployment("m", [port_of(up)]))) as (url, _),
    ):
        for case in mutations(seed=7, count=300):
            reader, writer = await asyncio.open_connection("127.0.0.1", port_of(url))
            writer.write(case)
            writer.write_eof()
            answer = await asyncio.wait_for(reader.read(), timeout=5)
            writer.close()
            assert answer == b"" or answer.startswith(b"HTTP/1.1 "), (case, answer[:200])
        async with (
            aiohttp.ClientSession() as s,
            s.post(url + "/v1/chat/completions", data=CHAT) as r,
        ):
            assert r.status == 200
    assert failures == []


@asynctest()
async def test_refused_requests_keep_the_connection_unless_their_body_is_left_unread(
    tmp_path: Path,
) -> None:
    keys = tmp_path / "keys"
    keys.write_text(hash_key("k1") + "\n")
    async with gateway(status(), keys) as (url, _):
        get = b"GET /v1/models HTTP/1.1\r\nHost: gw\r\n\r\n"
        answer = await send(url, post(CHAT) + get + post(CHAT, close=True))
        assert answer.count(b"HTTP/1.1 401 Unauthorized") == 3
        big = post(b"x" * 100_000)  # unread: the connection closes after the first answer
        answer = await send(url, big + post(CHAT))
        assert answer.count(b"HTTP/1.1 401") == 1 and b"Connection: close" in answer


@asynctest()
async def test_stopping_cuts_a_stream_that_outlasts_the_shutdown_timeout() -> None:
    replica = Replica("r0")
    async with serving(replica.app()) as up:
        held = json.dumps({"model": "m", "stream": True, "hold": True}).encode()
        doc = status(deployment("m", [port_of(up)]))
        stopping = asyncio.get_running_loop().time()
        async with gateway(doc, shutdown_timeout_s=0.3) as (url, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", port_of(url))
            writer.write(post(held))
            await reader.readuntil(b"t0")
            stopping = asyncio.get_running_loop().time()
        assert asyncio.get_running_loop().time() - stopping < 5
        assert not (await reader.read()).endswith(b"0\r\n\r\n")  # cut, not ended
        writer.close()
        replica.gate.set()
