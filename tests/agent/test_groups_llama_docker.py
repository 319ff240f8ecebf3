"""A model split over two agents with real llama.cpp RPC (issue 17), end to end on this machine.

Two agents with their own node names and label namespaces follow one git config repository whose
Node profiles each hold less than the model needs (24 MiB of memory against about 31 MiB): the
fleet splits a random-weight GGUF over them. The worker's agent runs `ggml-rpc-server`, the
primary's `llama-server --rpc`, both from the image built from the llama-cpp-python sdist
(support.images.llama_rpc_image). A chat completion goes through a real gateway that follows the
primary's agent. Then the worker's container is killed and the group heals in order: the primary
is held back naming its worker, the worker comes back, the primary is restarted after it, and the
gateway serves the model again. Prints the decode rate of the split model through the gateway
(recorded in bench/results/distributed-2026-12-02.md)."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

from maas.gateway import Gateway, GatewayConfig, KeyRing
from maas.gateway.source import AgentRouteSource
from support.agent import AgentProcess
from support.gateway import asynctest, free_port, serving_gateway
from support.gguf_factory import TINY, write_tiny_llama
from support.git import git
from support.images import llama_rpc_image

# 8 layers of the tiny shape: about 21 MB of F32 weights, 31 MB as the compiler estimates it.
SHAPE = replace(TINY, name="maas-split", layers=8)
NODE = """apiVersion: maas/v1
kind: Node
metadata: {{name: {name}}}
spec:
  cpu: {{cores: 2, threads: 2}}
  memory: {{total_bytes: {memory}}}
  rpc_address: 127.0.0.1
"""
MEMORY = 24 << 20
CHAT = {"model": "split", "max_tokens": 8, "messages": [{"role": "user", "content": "Hello"}]}
# llama-server's own field: random weights may end a reply early, which would make the rate noise.
DECODE = CHAT | {"max_tokens": 128, "ignore_eos": True}


def started_at(container: str) -> str:
    """Docker's own record of when the container last started (RFC 3339, sortable)."""
    return subprocess.run(
        ["docker", "inspect", "--format", "{{.State.StartedAt}}", container],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def started(agent: AgentProcess) -> str:
    """When the agent's running, ready group member last started ("" while there is none)."""
    container = running(agent)
    return started_at(container) if container else ""


def member(agent: AgentProcess) -> dict[str, Any] | None:
    return next((d for d in agent.status_now()["deployments"] if d["name"] == "split"), None)


def running(agent: AgentProcess) -> str | None:
    """The id of the agent's running, ready container of the group member, if any."""
    found = member(agent)
    if found is None:
        return None
    ready = [c for c in found["containers"] if c["state"] == "running" and c["ready"]]
    return ready[0]["id"] if ready else None


def by_role(agents: list[AgentProcess]) -> dict[str, AgentProcess]:
    found = {}
    for agent in agents:
        d = member(agent)
        if d and d.get("group"):
            found[d["group"]["role"]] = agent
    return found


async def chat_again(session: aiohttp.ClientSession, url: str) -> None:
    """A chat answered, once the gateway's view (polled every 0.2 s) has the primary back."""
    deadline = time.monotonic() + 30
    while True:
        try:
            await chat(session, url)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def chat(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any] = CHAT
) -> dict[str, Any]:
    async with session.post(url + "/v1/chat/completions", json=body) as r:
        assert r.status == 200, await r.text()
        body: dict[str, Any] = await r.json()
    assert body["usage"]["completion_tokens"] > 0
    return body


def agents_following_one_repository(tmp_path: Path, image: str) -> list[AgentProcess]:
    """Two agents (not started) with their own node names and label namespaces, following one
    git repository that splits the model over their two small Node profiles."""
    models = tmp_path / "models"
    models.mkdir()
    model = write_tiny_llama(models / "split.gguf", shape=SHAPE)
    policy = {"allow_distributed": True, "allowed_mount_roots": [str(models)]}
    agents = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        agent = AgentProcess(
            tmp_path / name,
            {
                "source": {"url": str(tmp_path / "config.git"), "interval_s": 1},
                "policy": policy,
                "label_namespace": f"maas-{name}",
            },
        )
        (agent.dir / "node.yaml").write_text(NODE.format(name=agent.node, memory=MEMORY))
        agents.append(agent)
    low = 33000 + random.randrange(20) * 100
    git(tmp_path, "init", "--bare", "-q", "-b", "main", str(tmp_path / "config.git"))
    work = tmp_path / "work"
    git(tmp_path, "clone", "-q", str(tmp_path / "config.git"), str(work))
    git(work, "checkout", "-q", "-b", "main")
    files = {
        "maas.yaml": "apiVersion: maas/v1\nkind: Config\nspec:\n"
        f"  port_range: [{low}, {low + 99}]\n  policy: {json.dumps(policy)}\n",
        "deployments/split.yaml": "apiVersion: maas/v1\nkind: Deployment\n"
        f"metadata: {{name: split}}\nspec:\n  source: local_path\n  path: {model}\n"
        f"  image: {image}\n  context_length: 512\n  allow_cpu_offload: true\n"
        "  distributed: true\n  health: {startup_timeout_s: 180}\n",
    }
    for agent in agents:
        files[f"nodes/{agent.node}.yaml"] = NODE.format(name=agent.node, memory=MEMORY)
    for rel, text in files.items():
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_text(text)
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "a split model")
    git(work, "push", "-q", "origin", "main")
    return agents


@asynctest(timeout=600, runners=[uvloop.run])
async def test_a_split_model_is_served_and_heals_in_order(
    tmp_path: Path, engine_ready: None
) -> None:
    image = await asyncio.to_thread(llama_rpc_image)
    agents = agents_following_one_repository(tmp_path, image)
    for agent in agents:
        agent.start()
    try:
        await asyncio.to_thread(
            agents[0].wait_for, lambda: set(by_role(agents)) == {"primary", "worker"}, 90, "members"
        )
        roles = by_role(agents)
        primary, worker = roles["primary"], roles["worker"]
        group = member(primary)["group"]  # type: ignore[index]
        ports = [m["endpoint"] for m in group["members"]]
        assert len(set(ports)) == 2, ports  # one host, one address: a port each
        await asyncio.to_thread(
            primary.wait_for, lambda: running(primary) is not None, 300, "the primary ready"
        )
        first_worker = running(worker)
        assert first_worker is not None
        worker_since = started(worker)

        source = AgentRouteSource(primary.socket, upstream_host="127.0.0.1", interval_s=0.2)
        gw = Gateway(GatewayConfig(port=free_port()), source, KeyRing(None))
        async with serving_gateway(gw) as url, aiohttp.ClientSession() as s:
            await chat(s, url)  # warm-up
            rates = [
                (await chat(s, url, DECODE))["timings"]["predicted_per_second"] for _ in range(3)
            ]
            print(
                f"\nsplit model through the gateway: decode {sorted(rates)[1]:.1f} tok/s "
                f"(median of 3, 128 tokens each) {[round(r, 1) for r in rates]}"
            )

            # The worker's agent is paused while its container is killed, so that the state in
            # between (the primary held back) lasts until it has been seen; then it goes on.
            worker.kill_signal(signal.SIGSTOP)
            try:
                subprocess.run(["docker", "kill", first_worker], check=True, capture_output=True)

                def held() -> bool:
                    d = member(primary)
                    return bool(d and d["group"]["held_back_by"])

                await asyncio.to_thread(primary.wait_for, held, 60, "the primary held back")
                d = member(primary)
                assert d is not None
                assert d["group"]["held_back_by"] == [f"{worker.node} {ports[1]}"]
            finally:
                worker.kill_signal(signal.SIGCONT)
            await asyncio.to_thread(
                worker.wait_for, lambda: started(worker) > worker_since, 120, "the worker back"
            )
            await asyncio.to_thread(
                primary.wait_for,
                lambda: started(primary) > started(worker) > worker_since,
                300,
                "the primary restarted after its worker",
            )
            # Both ready at once, read again: a probe may mark one not ready for a moment between
            # the two status reads above and these (seen once on the loaded CI-sized machine).
            await asyncio.to_thread(
                primary.wait_for,
                lambda: running(primary) is not None and running(worker) is not None,
                120,
                "both members ready",
            )
            again_primary, again_worker = running(primary), running(worker)
            assert again_primary is not None and again_worker is not None
            assert started_at(again_primary) > started_at(again_worker)
            assert not member(primary)["group"]["held_back_by"]  # type: ignore[index]
            await chat_again(s, url)
    finally:
        for agent in agents:
            if agent.process is not None and agent.process.poll() is None:
                agent.kill_signal(signal.SIGCONT)
            await asyncio.to_thread(agent.cleanup)
