"""Issue 14 at the gateway: the key reload survives a broken keys file (and revokes what the file
no longer lists), idle internal sockets are closed, an encoded deployment name in /proxy/ routes,
deeply nested JSON is answered."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from maas.gateway import front, upstream
from maas.gateway.keys import hash_key
from support.gateway import Replica, asynctest, deployment, free_port, gateway, port_of, serving
from support.gateway import status as status_doc


def _models(port: int, key: str) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": f"Bearer {key}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _until(check: object, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.2)
    return False


def test_key_reload_survives_a_byte_that_is_not_utf8_and_revokes(tmp_path: Path) -> None:
    """Reproduction: one non-UTF-8 byte ended the reload task; bob's revoked key, and then a
    deleted keys file, kept admitting requests, and nothing was logged."""
    keys = tmp_path / "gateway.keys"
    keys.write_text(f"{hash_key('alice')} alice\n{hash_key('bob')} bob\n")
    port = free_port()
    (tmp_path / "gateway.yaml").write_text(json.dumps({"port": port}))
    log = tmp_path / "gateway.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "maas.gateway.main",
                "--config",
                str(tmp_path / "gateway.yaml"),
                "--agent-socket",
                str(tmp_path / "no-agent.sock"),
                "--keys-file",
                str(keys),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        assert _until(lambda: _probe(port)), log.read_text()
        assert _models(port, "bob") == 200
        # bob is revoked in the same edit that leaves a broken byte on another line
        keys.write_bytes(f"{hash_key('alice')} alice\n".encode() + b"\xff\xfe oops\n")
        assert _until(lambda: _models(port, "bob") == 401), log.read_text()
        assert _models(port, "alice") == 200  # the good line is still in force
        assert '"event": "keys_invalid"' in log.read_text()
        keys.unlink()
        assert _until(lambda: _models(port, "alice") == 401), log.read_text()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            health = json.load(response)
        assert health["tasks"]["keys"]["alive"] and health["tasks"]["housekeeping"]["alive"]
        assert process.poll() is None
    finally:
        process.terminate()
        process.wait(timeout=30)


def _probe(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
            return True
    except OSError:
        return False


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@asynctest(timeout=60)
async def test_a_burst_of_delegated_requests_leaves_no_idle_sockets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Reproduction: after a burst, every internal connection into the aiohttp application
    stayed open (1,471 descriptors held)."""
    monkeypatch.setattr(front, "SWEEP_S", 0.2)
    monkeypatch.setattr(upstream, "UPSTREAM_IDLE_S", 0.5)
    async with gateway(status_doc()) as (url, _):
        before = _fds()

        async def one() -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", port_of(url))
            writer.write(b"GET /v1/models HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
            answer = await reader.read()
            writer.close()
            return answer

        answers = await asyncio.gather(*(one() for _ in range(200)))
        assert all(a.startswith(b"HTTP/1.1 200") for a in answers)
        await asyncio.sleep(0.1)
        # At most MAX_IDLE_PER_KEY kept for reuse (two descriptors each: both ends are ours)...
        assert _fds() - before <= 2 * upstream.MAX_IDLE_PER_KEY + 8
        await asyncio.sleep(1.5)
        assert _fds() - before <= 4  # ...and closed once idle


@asynctest()
async def test_an_encoded_deployment_name_routes_in_the_generic_proxy() -> None:
    """Reproduction: /proxy/%65cho/x sliced the path by the decoded name and answered 500."""
    replica = Replica("echo")
    async with serving(replica.app()) as replica_url:
        doc = status_doc(deployment("echo", [port_of(replica_url)], generic_proxy=True))
        async with gateway(doc) as (url, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", port_of(url))
            writer.write(b"GET /proxy/%65cho/v1/models?x=1 HTTP/1.1\r\nHost: gw\r\n\r\n")
            head = await reader.readline()
            writer.close()
    assert head.startswith(b"HTTP/1.1 200"), head
    assert replica.seen[-1]["path"] == "/v1/models?x=1"


@asynctest()
async def test_deeply_nested_json_gets_an_answer() -> None:
    """Reproduction: 100,000 '[' ended the request's task; the client got no answer."""
    async with gateway(status_doc()) as (url, _):
        body = b"[" * 100_000
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(url))
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Length: %d\r\n\r\n"
            % len(body)
            + body
        )
        head = await reader.readline()
        writer.close()
    assert head.startswith(b"HTTP/1.1 400"), head


@asynctest()
async def test_routes_are_kept_while_the_agent_refuses_or_has_not_read_its_state(
    tmp_path: Path,
) -> None:
    """Reproduction: an agent that refused a corrupt desired.json listed nothing, and the
    gateway dropped every route (404 for every running model)."""
    from aiohttp import web

    from maas.gateway.source import AgentRouteSource

    document: dict[str, Any] = status_doc(deployment("a", [40001]))

    async def serve_status(request: web.Request) -> web.Response:
        return web.json_response(document)

    app = web.Application()
    app.add_routes([web.get("/v1/status", serve_status)])
    runner = web.AppRunner(app)
    await runner.setup()
    path = tmp_path / "agent.sock"
    await web.UnixSite(runner, str(path)).start()
    source = AgentRouteSource(path, upstream_host="127.0.0.1", interval_s=60)
    await source.start()
    try:
        for desired in ("pending", "refused"):
            document = {**status_doc(deployment("b", [40002])), "desired": desired}
            assert await source.refresh()
            assert set(source.table.routes) == {"a", "b"}, desired
        document = status_doc(deployment("b", [40002]))
        assert await source.refresh()
        assert set(source.table.routes) == {"b"}  # a state read: what it lists is all
    finally:
        await source.close()
        await runner.cleanup()
