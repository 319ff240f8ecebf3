"""Models on demand (issue 18): what a wake costs, and what the platform's share of it is.

Two tiny random-weight GGUFs served by real llama.cpp take turns (one group, a node budget that
holds one): every request goes to the sleeping one, so each is a cold start that first evicts
the other, through the real agent (a process) and the real gateway (in this process, reading the
agent's status every second as maas-gateway does).

Per wake: the client's time from request to first byte (a streaming request), and the backend's
own load: the same llama-server image and model started by `docker run` directly, its /health
polled every 10 ms until 200 (a peer run, side by side, alternating with the wakes). The
platform's share is the wake minus that load, at the median (goal: <= 0.5 s). The agent's view
(its replica started -> ready, probed every 0.05 s during a wake) is printed too.

On a loaded machine the peer's load varies by a second from run to run, more than the share
itself; so each wake is also split where the backend's process starts (the woken container's
State.StartedAt): request -> process start is the platform's alone (gateway, agent, eviction,
Docker's create/start or start), and the rest (process start -> first byte) is the backend's
load plus what the platform adds after it (probe, status poll, relay).

Warm requests: the same model, awake, through the gateway and directly to the replica, side by
side (median added latency; today's gateway figure: bench/results/gateway-2026-12-01.txt,
`single` scenario, about +0.1 ms).

    python bench/ondemand.py [--wakes 10] [--warm 200]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests")]

from maas.gateway import Gateway, GatewayConfig, KeyRing  # noqa: E402
from maas.gateway.source import AgentRouteSource  # noqa: E402
from support.agent import AgentProcess  # noqa: E402
from support.gateway import free_port, serving_gateway  # noqa: E402
from support.gguf_factory import write_tiny_llama  # noqa: E402
from support.images import llama_server_image  # noqa: E402
from support.ondemand import BUDGET, NODE, agent_get, turns_spec  # noqa: E402

IDLE_S = 600  # no idle stop during the run: every wake follows an eviction


def body(model: str, stream: bool = True) -> dict[str, Any]:
    return {
        "model": model,
        "max_tokens": 2,
        "stream": stream,
        "messages": [{"role": "user", "content": "Hi"}],
    }


def peer_load(image: str, models: Path, command: list[str]) -> tuple[float, float]:
    """The backend's own load, from a `docker run` of the same server, model and argv as the
    plan's: (docker run -> /health 200, the process's start (State.StartedAt) -> /health 200)."""
    name = f"ondemand-peer-{uuid.uuid4().hex[:8]}"
    port = free_port()
    inside = command[command.index("--port") + 1]
    start = time.perf_counter()
    subprocess.run(
        [
            *("docker", "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:{inside}"),
            *("-v", f"{models}:{models}:ro", image, *command),
        ],
        check=True,
        capture_output=True,
    )
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                    if r.status == 200:
                        ready, took = time.time(), time.perf_counter() - start
                        break
            except OSError:
                pass
            time.sleep(0.01)
            if time.perf_counter() - start > 120:
                raise RuntimeError("the peer llama-server did not get ready in 120 s")
        return took, ready - started_at(name)
    finally:
        subprocess.run(["docker", "rm", "-f", name], check=False, capture_output=True)


def _epoch(rfc3339: str) -> float:
    """Docker's RFC 3339 time with nanoseconds (Go's layout) as seconds since the epoch."""
    whole, _, fraction = rfc3339.rstrip("Z").partition(".")
    seconds = datetime.fromisoformat(whole).replace(tzinfo=UTC).timestamp()
    return seconds + float(f"0.{fraction or 0}")


async def first_byte(session: aiohttp.ClientSession, url: str, payload: dict[str, Any]) -> float:
    start = time.perf_counter()
    async with session.post(url, json=payload) as response:
        assert response.status == 200, await response.text()
        await response.content.readany()
        took = time.perf_counter() - start
        await response.read()
    return took


async def agent_status(socket: Path) -> dict[str, Any]:
    status: dict[str, Any] = await agent_get(socket, "/v1/status")
    return status


def med(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} s"


def started_at(container: str) -> float:
    """When the container's process last started (Docker's State.StartedAt), epoch seconds."""
    out = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.StartedAt}}", container],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return _epoch(out)


async def take_turns(
    agent: AgentProcess,
    session: aiohttp.ClientSession,
    chat: str,
    wakes: int,
    peer: tuple[str, Path, dict[str, list[str]]],
    *,
    show_log: bool,
) -> None:
    """The wakes, each beside a peer run of the same server, and their medians."""
    image, models, commands = peer
    wake_s, peer_s, load_s, agent_s, before_s, after_s = [], [], [], [], [], []
    for i in range(wakes):
        model = "ab"[i % 2]
        print(f"wake {i + 1} sent at {time.time():.3f}", flush=True) if show_log else None
        sent = time.time()
        wake_s.append(await first_byte(session, chat, body(model)))
        process = await asyncio.to_thread(started_at, f"{agent.namespace}-{agent.node}-{model}-0")
        before_s.append(process - sent)
        after_s.append(sent + wake_s[-1] - process)
        status = await agent_status(agent.socket)
        shown = next(d for d in status["deployments"] if d["name"] == model)
        wake = shown["on_demand"]["wake"]
        if wake and wake.get("ready_at") and wake.get("started_at"):
            agent_s.append(wake["ready_at"] - wake["started_at"])
        run_s, own_s = await asyncio.to_thread(peer_load, image, models, commands[model])
        peer_s.append(run_s)
        load_s.append(own_s)
        print(
            f"wake {i + 1:2d} {model}: first byte {wake_s[-1]:.3f} s (request -> process "
            f"start {before_s[-1]:.3f} s, process start -> first byte "
            f"{after_s[-1]:.3f} s); peer: docker run "
            f"-> ready {run_s:.3f} s, process start -> ready {own_s:.3f} s"
            + (f", agent started->ready {agent_s[-1]:.3f} s" if agent_s else ""),
            flush=True,
        )
    share = statistics.median(wake_s) - statistics.median(load_s)
    docker = statistics.median(peer_s) - statistics.median(load_s)
    print(
        f"{wakes} wakes (each evicts the other model): first byte median {med(wake_s)}; "
        f"backend's own load (peer: process start -> /health 200) median {med(load_s)}; "
        f"platform share {share:.3f} s (goal <= 0.5 s), of which docker's create+start "
        f"(peer: docker run -> process start) {docker:.3f} s; "
        f"agent's replica started -> ready median {med(agent_s) if agent_s else 'n/a'}"
    )
    print(
        f"split at the process start: request -> process start (platform only) median "
        f"{med(before_s)}, of the wakes after the first two (each model's container then "
        f"exists) {med(before_s[2:] or before_s)}; process start -> first byte median "
        f"{med(after_s)} (backend's load plus probe, poll and relay)"
    )


async def run(wakes: int, warm: int, tmp: Path, show_log: bool) -> None:
    image = llama_server_image()
    models = tmp / "models"
    models.mkdir()
    files = {n: write_tiny_llama(models / f"{n}.gguf", seed=i) for i, n in enumerate("ab")}
    agent = AgentProcess(tmp, {"policy": {"allowed_mount_roots": [str(models)]}})
    (tmp / "node.yaml").write_text(NODE.format(name=agent.node, budget=BUDGET))
    agent.start()
    try:
        text = "---\n".join(turns_spec(n, f, image, IDLE_S) for n, f in files.items())
        result = agent.apply("turns", text)
        assert result.returncode == 0, result.stderr
        plan = await agent_get(agent.socket, "/v1/plan")
        commands = {d["name"]: d["command"] for d in plan["deployments"]}
        source = AgentRouteSource(agent.socket, upstream_host="127.0.0.1", interval_s=1.0)
        gw = Gateway(GatewayConfig(port=free_port()), source, KeyRing(None))
        async with serving_gateway(gw) as url, aiohttp.ClientSession() as session:
            chat = url + "/v1/chat/completions"
            await take_turns(
                agent, session, chat, wakes, (image, models, commands), show_log=show_log
            )
            # Warm: the model that answered last is awake; gateway and direct, alternating.
            model = "ab"[(wakes - 1) % 2]
            status = await agent_status(agent.socket)
            port = next(d for d in status["deployments"] if d["name"] == model)["containers"][0][
                "port"
            ]
            direct_url = f"http://127.0.0.1:{port}/v1/chat/completions"
            through, direct = [], []
            for _ in range(warm):
                through.append(await first_byte(session, chat, body(model)))
                direct.append(await first_byte(session, direct_url, body(model)))
            added = (statistics.median(through) - statistics.median(direct)) * 1000
            print(
                f"warm, {warm} requests each: first byte through the gateway "
                f"{statistics.median(through) * 1000:.2f} ms, direct "
                f"{statistics.median(direct) * 1000:.2f} ms: added {added:+.2f} ms at the median"
            )
        if show_log:
            for line in agent.log.read_text().splitlines():
                if '"action"' in line or "pass" in line:
                    print(line)
    finally:
        agent.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wakes", type=int, default=10)
    parser.add_argument("--warm", type=int, default=200)
    parser.add_argument("--log", action="store_true", help="print the agent's actions")
    args = parser.parse_args()
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"load average before: {' '.join(load)}")
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(args.wakes, args.warm, Path(tmp), args.log))


if __name__ == "__main__":
    main()
