"""The gateway in front of a REAL llama.cpp server (Debian sid's llama-server in a locally built
image, serving a tiny GGUF): the cases of issue 7, plus one run through the real agent's API."""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import uvloop

from maas.gateway import Gateway, GatewayConfig, KeyRing
from maas.gateway.keys import hash_key
from maas.gateway.source import AgentRouteSource
from support.gateway import (
    asynctest,
    deployment,
    free_port,
    gateway,
    metric,
    metrics_text,
    serving_gateway,
    status,
)
from support.gguf_factory import write_tiny_llama
from support.images import llama_server_image

pytestmark = [pytest.mark.docker, pytest.mark.slow]

RUN_LABEL = "maas.test-run"
LLAMA_ARGS = ["-m", "/models/tiny.gguf", "--host", "0.0.0.0", "--port", "8080", "-c", "16384"]
LLAMA_ARGS += ["--parallel", "2", "--threads", "1"]
CHAT = {"model": "tiny", "max_tokens": 8, "messages": [{"role": "user", "content": "Hello"}]}


def docker_client() -> Any:
    import docker

    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except Exception as exc:  # docker raises several unrelated types when no engine answers
        if os.environ.get("CI"):
            pytest.fail(f"no Docker engine answers: {exc}")
        pytest.skip(f"no Docker engine answers: {exc}")
    return client


def wait_healthy(port: int, container: Any, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        container.reload()
        if container.status == "exited":
            break
        time.sleep(0.2)
    raise AssertionError(
        "llama-server did not become healthy:\n" + container.logs().decode()[-3000:]
    )


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A llama-server container for this test run (labelled, removed at the end); its port."""
    client = docker_client()
    image = llama_server_image()
    models = tmp_path_factory.mktemp("models")
    write_tiny_llama(models / "tiny.gguf")
    run = uuid.uuid4().hex[:12]
    container = client.containers.run(
        image,
        LLAMA_ARGS,
        detach=True,
        labels={RUN_LABEL: run, "maas.test": "gateway"},
        volumes={str(models): {"bind": "/models", "mode": "ro"}},
        ports={"8080/tcp": ("127.0.0.1", None)},
    )
    try:
        container.reload()
        port = int(container.ports["8080/tcp"][0]["HostPort"])
        wait_healthy(port, container)
        yield port
    finally:
        for leftover in client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={run}"}):
            leftover.remove(force=True)


def routes(port: int) -> dict[str, Any]:
    return status(
        deployment("tiny", [port], aliases=("gpt-4o-mini",)),
        deployment("cold", [port], ready=False, state="starting"),
    )


@asynctest()
async def test_chat_completion_through_the_gateway(llama: int, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(hash_key("k1") + " test\n")
    auth = {"Authorization": "Bearer k1"}
    async with gateway(routes(llama), keys) as (url, _), aiohttp.ClientSession(headers=auth) as s:
        for model in ("tiny", "gpt-4o-mini"):
            async with s.post(url + "/v1/chat/completions", json={**CHAT, "model": model}) as r:
                assert r.status == 200, await r.text()
                answer = await r.json()
            assert answer["object"] == "chat.completion"
            assert answer["choices"][0]["message"]["role"] == "assistant"
            assert answer["usage"]["completion_tokens"] > 0
        async with s.post(
            url + "/v1/completions", json={"model": "tiny", "prompt": "a", "max_tokens": 4}
        ) as r:
            assert r.status == 200
            assert (await r.json())["usage"]["completion_tokens"] > 0
        text = await metrics_text(s, url)
    assert (
        metric(
            text, "maas_gateway_requests_total", model="tiny", route="chat/completions", code="200"
        )
        == 2
    )
    assert metric(text, "maas_gateway_tokens_total", model="tiny", kind="completion") > 0


@asynctest()
async def test_streaming_passes_llama_chunks_through(llama: int) -> None:
    body = {**CHAT, "max_tokens": 24, "stream": True, "stream_options": {"include_usage": True}}
    async with gateway(routes(llama)) as (url, _), aiohttp.ClientSession() as s:
        events = []
        async with s.post(url + "/v1/chat/completions", json=body) as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/event-stream")
            async for line in r.content:
                if line.startswith(b"data: "):
                    events.append(line[6:].strip())
        assert events[-1] == b"[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert len(chunks) > 3 and chunks[0]["object"] == "chat.completion.chunk"
        reported = chunks[-1]["usage"]["completion_tokens"]
        text = await metrics_text(s, url)
    assert metric(text, "maas_gateway_tokens_total", model="tiny", kind="completion") == reported


@asynctest()
async def test_models_unknown_model_and_no_ready_replica(llama: int) -> None:
    async with gateway(routes(llama)) as (url, _), aiohttp.ClientSession() as s:
        async with s.get(url + "/v1/models") as r:
            listed = {m["id"]: m["state"] for m in (await r.json())["data"]}
        assert listed == {"tiny": "running", "gpt-4o-mini": "running", "cold": "starting"}
        async with s.post(url + "/v1/chat/completions", json={**CHAT, "model": "llama-9"}) as r:
            assert r.status == 404
            assert (await r.json())["error"]["code"] == "model_not_found"
        async with s.post(url + "/v1/chat/completions", json={**CHAT, "model": "cold"}) as r:
            assert r.status == 503
            assert int(r.headers["Retry-After"]) > 0


@asynctest()
async def test_bad_key_and_oversized_body(llama: int, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(hash_key("right") + "\n")
    limited = gateway(routes(llama), keys, max_body_bytes=4096)
    async with limited as (url, _), aiohttp.ClientSession() as s:
        wrong = {"Authorization": "Bearer wrong"}
        async with s.post(url + "/v1/chat/completions", json=CHAT, headers=wrong) as r:
            assert r.status == 401
        big = {**CHAT, "messages": [{"role": "user", "content": "word " * 2000}]}
        right = {"Authorization": "Bearer right"}
        async with s.post(url + "/v1/chat/completions", json=big, headers=right) as r:
            assert r.status == 413
            assert (await r.json())["error"]["code"] == "request_too_large"
        async with s.post(url + "/v1/chat/completions", json=CHAT, headers=right) as r:
            assert r.status == 200


async def slots_busy(session: aiohttp.ClientSession, port: int) -> bool:
    async with session.get(f"http://127.0.0.1:{port}/slots") as r:
        return any(slot["is_processing"] for slot in await r.json())


@asynctest()
async def test_client_disconnect_mid_stream_stops_llama_generating(llama: int) -> None:
    long = {**CHAT, "max_tokens": 8000, "ignore_eos": True, "stream": True}
    async with gateway(routes(llama)) as (url, _), aiohttp.ClientSession() as probe:
        async with aiohttp.ClientSession() as s:
            started = time.monotonic()
            async with s.post(url + "/v1/chat/completions", json=long) as r:
                for _ in range(5):
                    await r.content.readuntil(b"\n\n")
                assert await slots_busy(probe, llama)
            # The client's connection is gone here, a few tokens into 8000.
        deadline = time.monotonic() + 3
        while await slots_busy(probe, llama):
            assert time.monotonic() < deadline, "llama-server kept generating for a gone client"
            await asyncio.sleep(0.05)
        stopped_after = time.monotonic() - started
        # The same generation, run to its end, takes far longer than the stop took.
        async with probe.post(
            f"http://127.0.0.1:{llama}/v1/chat/completions", json={**long, "stream": False}
        ) as r:
            full = (await r.json())["timings"]["predicted_ms"] / 1000
        assert stopped_after < full / 2, (stopped_after, full)


@asynctest(timeout=300, runners=[uvloop.run])  # one real agent is enough
async def test_through_the_real_agent(tmp_path: Path) -> None:
    from support.agent import AgentProcess

    docker_client()
    image = llama_server_image()
    models = tmp_path / "models"
    models.mkdir()
    model = write_tiny_llama(models / "tiny-llama.gguf")
    agent = AgentProcess(tmp_path, {"policy": {"allowed_mount_roots": [str(models)]}})
    agent.start()
    try:
        spec = (
            "apiVersion: maas/v1\nkind: Deployment\nmetadata: {name: tiny-llama}\nspec:\n"
            f"  source: local_path\n  path: {model}\n  image: {image}\n"
            "  context_length: 512\n  allow_cpu_offload: true\n  aliases: [tiny]\n"
            "  health: {startup_timeout_s: 120}\n"
        )
        result = await asyncio.to_thread(agent.apply, "tiny", spec)
        assert result.returncode == 0, result.stderr + agent.log.read_text()[-2000:]
        source = AgentRouteSource(agent.socket, upstream_host="127.0.0.1", interval_s=0.2)
        gw = Gateway(GatewayConfig(port=free_port()), source, KeyRing(None))
        async with serving_gateway(gw) as url, aiohttp.ClientSession() as s:
            async with s.get(url + "/v1/models") as r:
                listed = {m["id"]: m["state"] for m in (await r.json())["data"]}
            assert listed == {"tiny-llama": "running", "tiny": "running"}
            async with s.post(url + "/v1/chat/completions", json=CHAT) as r:
                assert r.status == 200, await r.text()
                assert (await r.json())["usage"]["completion_tokens"] > 0
    finally:
        await asyncio.to_thread(agent.cleanup)
