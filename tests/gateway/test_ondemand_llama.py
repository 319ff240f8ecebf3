"""Models on demand with REAL llama.cpp (issue 18): three random-weight GGUFs whose host-memory
needs cannot all fit the node's (emulated) budget take turns through the real agent and gateway.

Alternating requests all succeed (streaming included, concurrent ones sharing one start), never
more than the budget allows runs at once, a woken model evicts its group's least recently used
idle member, a model asked without pause yields its turn, and idle models stop after their
timeout; a sleeping model's container is kept,
stopped, so waking it again is one `docker start`."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import uvloop

from maas.gateway import Gateway, GatewayConfig, KeyRing
from maas.gateway.source import AgentRouteSource
from support.agent import AgentProcess
from support.gateway import asynctest, free_port, metric, metrics_text, serving_gateway
from support.gguf_factory import write_tiny_llama
from support.images import llama_server_image
from support.ondemand import BUDGET, NODE, agent_get, turns_spec

pytestmark = [pytest.mark.slow]

IDLE_S = 8


def chat(model: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "max_tokens": 4,
        "messages": [{"role": "user", "content": "Hi"}],
    } | extra


async def _take_turns(s: aiohttp.ClientSession, chat_url: str, agent: AgentProcess) -> None:
    async def ask(model: str) -> dict[str, Any]:
        async with s.post(chat_url, json=chat(model)) as r:
            assert r.status == 200, await r.text()
            answer: dict[str, Any] = await r.json()
            return answer

    # Concurrent requests for a sleeping model share one start.
    answers = await asyncio.gather(*(ask("alpha") for _ in range(3)))
    assert all(a["usage"]["completion_tokens"] > 0 for a in answers)
    # Alternating: each wake evicts the other (the budget holds one).
    for model in ["beta", "alpha", "gamma"]:
        assert (await ask(model))["object"] == "chat.completion"
    status = await asyncio.to_thread(agent.status)
    by_name = {d["name"]: d for d in status["deployments"]}
    assert by_name["gamma"]["state"] == "running"
    assert by_name["alpha"]["state"] == "sleeping"
    assert by_name["alpha"]["on_demand"]["reason"] == "evicted for gamma (group turns)"
    shown = await asyncio.to_thread(agent.ctl, "status")
    assert "evicted for gamma" in shown.stdout, shown.stdout
    actions = [
        json.loads(line) for line in agent.log.read_text().splitlines() if '"action"' in line
    ]
    kinds: dict[str, list[str]] = {}
    for a in actions:
        kinds.setdefault(a["kind"], []).append(a["deployment"])
    assert kinds["create"] == ["alpha", "beta", "gamma"]  # one start for the three requests
    # A sleeping model keeps its container, stopped: the second wake of alpha is one start,
    # and an eviction one stop; nothing is removed.
    assert kinds["start"] == ["alpha"]
    assert kinds["stop"] == ["alpha", "beta", "alpha"], actions
    assert "remove" not in kinds and "recreate" not in kinds


async def _stream(s: aiohttp.ClientSession, chat_url: str) -> None:
    """Streaming through a wake: the events arrive as the backend sends them."""
    events = []
    async with s.post(chat_url, json=chat("beta", stream=True)) as r:
        assert r.status == 200, await r.text()
        assert r.headers["Content-Type"].startswith("text/event-stream")
        async for line in r.content:
            if line.startswith(b"data: "):
                events.append(line[6:].strip())
    assert events[-1] == b"[DONE]" and len(events) > 2


async def _turns_are_fair(s: aiohttp.ClientSession, chat_url: str) -> None:
    """beta is asked without pause by two clients; a request for gamma is still answered: beta
    yields (takes no new requests, its own are held), is evicted once it has answered the ones
    it had, and gets its turn back after gamma's. No request fails."""
    answered = {"beta": 0, "gamma": 0}
    stop = asyncio.Event()

    async def ask(model: str) -> None:
        async with s.post(chat_url, json=chat(model, max_tokens=32)) as r:
            assert r.status == 200, await r.text()
            answered[model] += 1

    async def busy() -> None:
        while not stop.is_set():
            await ask("beta")

    clients = [asyncio.create_task(busy()) for _ in range(2)]
    await asyncio.sleep(3)  # beta answers back to back, its activity reports show it busy
    started = time.monotonic()
    await asyncio.wait_for(ask("gamma"), 60)
    waited = time.monotonic() - started
    before = answered["beta"]
    await asyncio.sleep(2)
    stop.set()
    await asyncio.gather(*clients)
    assert answered["gamma"] == 1 and before > 2 and answered["beta"] > before, (answered, waited)


class Sampler(threading.Thread):
    """How many of the node's containers run, sampled until stopped: the most seen at once."""

    def __init__(self, agent: AgentProcess) -> None:
        super().__init__(daemon=True)
        self.agent = agent
        self.most = 0
        self.samples = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            running = self.agent.containers(all_states=False)
            self.most = max(self.most, len(running))
            self.samples += 1
            time.sleep(0.1)


@asynctest(timeout=600, runners=[uvloop.run])  # one real agent is enough
async def test_models_take_turns_through_the_gateway(tmp_path: Path, engine_ready: None) -> None:
    image = await asyncio.to_thread(llama_server_image)
    models = tmp_path / "models"
    models.mkdir()
    names = ["alpha", "beta", "gamma"]
    files = {n: write_tiny_llama(models / f"{n}.gguf", seed=i) for i, n in enumerate(names)}
    agent = AgentProcess(tmp_path, {"policy": {"allowed_mount_roots": [str(models)]}})
    (tmp_path / "node.yaml").write_text(NODE.format(name=agent.node, budget=BUDGET))
    agent.start()
    sampler = Sampler(agent)
    try:
        text = "---\n".join(turns_spec(n, files[n], image, IDLE_S) for n in names)
        result = await asyncio.to_thread(agent.apply, "turns", text)
        assert result.returncode == 0, result.stderr + agent.log.read_text()[-2000:]
        plan = await agent_get(agent.socket, "/v1/plan")
        host = plan["totals"][-1]
        # The plan shows they take turns and fit: reserved one, all three would not fit.
        assert host["groups"] == {"turns": max(host["by_deployment"].values())}
        assert host["allocated_bytes"] <= host["usable_bytes"] < host["all_at_once_bytes"]
        status = await asyncio.to_thread(agent.status)
        assert {d["name"]: d["state"] for d in status["deployments"]} == dict.fromkeys(
            names, "sleeping"
        )
        assert not agent.containers()
        sampler.start()
        source = AgentRouteSource(agent.socket, upstream_host="127.0.0.1", interval_s=1.0)
        config = GatewayConfig(port=free_port(), wake_timeout_s=90)
        gw = Gateway(config, source, KeyRing(None))
        async with serving_gateway(gw) as url, aiohttp.ClientSession() as s:
            await _take_turns(s, url + "/v1/chat/completions", agent)
            await _stream(s, url + "/v1/chat/completions")
            text_metrics = await metrics_text(s, url)
            assert metric(text_metrics, "maas_gateway_wake_seconds_count", model="alpha") == 4
            assert metric(text_metrics, "maas_gateway_wake_seconds_count", model="beta") == 2
            platform = metric(
                text_metrics, "maas_gateway_wake_platform_seconds_count", model="beta"
            )
            assert platform >= 1
            await _turns_are_fair(s, url + "/v1/chat/completions")
            # Idle past the timeout: beta stops too, and nothing runs.
            await asyncio.to_thread(
                agent.wait_for,
                lambda: not agent.containers(all_states=False),
                IDLE_S + 20,
                "the idle model to stop",
            )
            status = await asyncio.to_thread(agent.status)
            beta = next(d for d in status["deployments"] if d["name"] == "beta")
            assert beta["state"] == "sleeping"
            assert beta["on_demand"]["reason"].startswith("idle for")
            kept = await asyncio.to_thread(agent.containers)
            assert sorted(c["State"] for c in kept) == ["exited"] * 3, kept
        sampler.done.set()
        sampler.join()
        assert sampler.samples > 10
        assert sampler.most == 1, "more models ran at once than the node's budget holds"
    finally:
        sampler.done.set()
        await asyncio.to_thread(agent.cleanup)
