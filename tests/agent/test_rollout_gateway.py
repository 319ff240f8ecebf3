"""Roll-outs seen by a client: a two-replica llama.cpp deployment (real llama-server, the real
agent process, a real `maas-gateway` process) changes spec under constant requests through the
gateway, and not one request fails; a new version that cannot start is rolled back while the
requests go on, and status says why (issue 20, item 5); a one-replica change starts the new
container beside the old one, which serves until the new one is ready. test_prepare_first.py
covers the same roll-outs from the agent's status alone, with busybox replicas."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from support.agent import AgentProcess
from support.gateway import free_port
from support.gguf_factory import write_tiny_llama
from support.images import llama_server_image

pytestmark = pytest.mark.slow

CHAT = {"model": "tiny", "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]}


def llama_spec(image: str, model: Path, extra: str = "") -> str:
    return (
        "apiVersion: maas/v1\nkind: Deployment\nmetadata: {name: tiny}\nspec:\n"
        f"  source: local_path\n  path: {model}\n  image: {image}\n  replicas: 2\n"
        "  context_length: 256\n  parallel: 1\n  allow_cpu_offload: true\n"
        "  health: {startup_timeout_s: 60}\n" + extra
    )


@contextmanager
def gateway_for(agent: AgentProcess, tmp: Path) -> Iterator[int]:
    """A `maas-gateway` process routing by the agent's status; yields its port."""
    port = free_port()
    config = tmp / "gateway.yaml"
    config.write_text(json.dumps({"port": port, "poll_interval_s": 0.2}))
    log = tmp / "gateway.log"
    command = [sys.executable, "-m", "maas.gateway.main", "--config", str(config)]
    command += ["--agent-socket", str(agent.socket), "--keys-file", str(tmp / "no-keys")]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield port
    finally:
        process.terminate()
        process.wait(timeout=60)


def chat(port: int) -> tuple[int, str]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        data=json.dumps(CHAT).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.load(response)
            return response.status, answer["choices"][0]["message"]["role"]
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")[:300]
    except (OSError, ValueError, KeyError) as exc:
        return 0, repr(exc)


class Load:
    """Requests through the gateway one after another, from two clients, until stopped."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.results: list[tuple[float, int, str]] = []
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(2)]

    def _run(self) -> None:
        while not self.stopping.is_set():
            status, what = chat(self.port)
            self.results.append((time.monotonic(), status, what))

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=90)

    def failures(self) -> list[tuple[float, int, str]]:
        return [r for r in self.results if r[1] != 200]


def serving(port: int, agent: AgentProcess) -> None:
    agent.wait_for(lambda: chat(port)[0] == 200, timeout=60, what="the gateway to serve")


def containers(agent: AgentProcess) -> dict[int, str]:
    (d,) = agent.status()["deployments"]
    return {c["replica"]: c["id"] for c in d["containers"]}


@pytest.fixture
def started(tmp_path: Path, engine_ready: None) -> Iterator[tuple[AgentProcess, Path, str]]:
    image = llama_server_image()
    models = tmp_path / "models"
    models.mkdir()
    model = write_tiny_llama(models / "tiny.gguf")
    (tmp_path / "agent").mkdir()
    # The drain covers requests shorter than drain_s less one gateway poll; on a loaded 2-core
    # machine a request can wait over a second behind another in llama-server's one slot.
    settings = {"policy": {"allowed_mount_roots": [str(models)]}, "drain_s": 5}
    agent = AgentProcess(tmp_path / "agent", settings)
    agent.start()
    try:
        done = agent.apply("tiny", llama_spec(image, model))
        assert done.returncode == 0, done.stdout + done.stderr + agent.log.read_text()[-2000:]
        yield agent, model, image
    finally:
        agent.cleanup()


def test_a_spec_change_rolls_with_no_failed_request(
    started: tuple[AgentProcess, Path, str], tmp_path: Path
) -> None:
    agent, model, image = started
    before = containers(agent)
    with gateway_for(agent, tmp_path) as port:
        serving(port, agent)
        with Load(port) as load:
            time.sleep(1)
            changed = llama_spec(image, model, "  env: {VERSION: '2'}\n")
            assert agent.apply("tiny", changed, wait=False).returncode == 0

            def rolled() -> bool:
                (d,) = agent.status()["deployments"]
                now = {c["id"] for c in d["containers"]}
                return d["ready_replicas"] == 2 and not now & set(before.values())

            agent.wait_for(rolled, timeout=180, what="both replicas to roll")
            time.sleep(2)  # and the gateway to route to the new ones only
    assert load.results, "no request was sent"
    assert load.failures() == [], (load.failures()[:5], Counter(r[1] for r in load.results))
    # Requests went on during the whole roll-out, not only before or after it.
    assert len(load.results) >= 10, len(load.results)


def test_a_new_version_that_cannot_start_is_rolled_back_under_load(
    started: tuple[AgentProcess, Path, str], tmp_path: Path
) -> None:
    agent, model, image = started
    (d,) = agent.status()["deployments"]
    good, before = d["spec_hash"], containers(agent)
    with gateway_for(agent, tmp_path) as port:
        serving(port, agent)
        with Load(port) as load:
            # llama-server refuses an unknown flag and exits at once: a crash loop.
            broken = llama_spec(image, model, "  backend_parameters: [--no-such-flag]\n")
            assert agent.apply("tiny", broken, wait=False).returncode == 0
            back: dict[str, Any] = {}

            def rolled_back() -> bool:
                status = agent.status()
                (d,) = status["deployments"]
                back.update(status.get("rolled_back", {}).get("tiny") or {})
                return bool(back) and d["ready_replicas"] == 2 and d["spec_hash"] == good

            agent.wait_for(rolled_back, timeout=180, what="the roll-back")
            time.sleep(2)
    assert "replica 0 of the new version failed" in back["reason"], back
    assert containers(agent)[1] == before[1]  # the roll-out never reached replica 1
    assert "rolled back to the previous version" in agent.ctl("status").stdout
    assert load.failures() == [], (load.failures()[:5], Counter(r[1] for r in load.results))
    assert len(load.results) >= 10, len(load.results)


def test_one_replica_change_starts_the_new_container_beside_the_old_one(
    started: tuple[AgentProcess, Path, str], tmp_path: Path
) -> None:
    """The node has room for both versions (a tiny GGUF on the CPU): the old container serves,
    reported ready, until the new one, on another port, is ready (reconcile/overlap.py)."""
    agent, model, image = started
    one = llama_spec(image, model).replace("replicas: 2", "replicas: 1")
    assert agent.apply("tiny", one).returncode == 0
    agent.wait_for(lambda: len(containers_of(agent)) == 1, timeout=60, what="one replica")
    (old,) = containers_of(agent)
    seen: list[list[dict[str, Any]]] = []
    with gateway_for(agent, tmp_path) as port:
        serving(port, agent)
        with Load(port) as load:
            time.sleep(1)
            changed = one.replace("health:", "env: {VERSION: '2'}\n  health:")
            assert agent.apply("tiny", changed, wait=False).returncode == 0

            def rolled() -> bool:
                (d,) = agent.status_now()["deployments"]
                seen.append(d["containers"])
                return (
                    d["ready_replicas"] == 1
                    and [c["id"] for c in d["containers"]] != [old["id"]]
                    and len(d["containers"]) == 1
                )

            agent.wait_for(rolled, timeout=120, what="the replica to roll")
            time.sleep(2)
    assert min(sum(c["ready"] for c in cs) for cs in seen) >= 1, seen  # always one routable
    both = [cs for cs in seen if len(cs) == 2]
    assert both, "the new container never ran beside the old one"
    ports = {c["id"]: c["port"] for c in both[0]}
    assert ports[old["id"]] == old["port"] and len(set(ports.values())) == 2, both[0]
    assert any(c["id"] == old["id"] and c["ready"] for c in both[0]), both[0]
    assert load.failures() == [], (load.failures()[:5], Counter(r[1] for r in load.results))


def containers_of(agent: AgentProcess) -> list[dict[str, Any]]:
    (d,) = agent.status()["deployments"]
    return list(d["containers"])
