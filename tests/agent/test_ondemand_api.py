"""The agent's on-demand API with real containers (issue 18): wake, activity reports, idle
stop with its reason in the status, clear JSON errors for bad requests, and the network sandbox
a woken replica joins."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
from pathlib import Path
from typing import Any

from support.agent import AgentProcess, web_spec
from support.images import APPLETS, busybox_image


class Client:
    """One JSON request per connection over the agent's unix socket, closed after it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def call(self, method: str, route: str, body: Any = None, status: int = 200) -> Any:
        connection = http.client.HTTPConnection("localhost", timeout=30)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(self.path))
        connection.sock = sock
        try:
            data = json.dumps(body).encode() if body is not None else None
            connection.request(method, route, body=data)
            response = connection.getresponse()
            value = json.loads(response.read())
            assert response.status == status, (response.status, value)
            return value
        finally:
            connection.close()


def test_wake_idle_stop_and_bad_requests(agent: AgentProcess, busybox: str) -> None:
    extra = "  on_demand: {idle_timeout_s: 2}\n"
    text = web_spec("lazy", busybox, extra=extra) + "---\n" + web_spec("always", busybox)
    result = agent.apply("both", text)
    assert result.returncode == 0, result.stderr + agent.log.read_text()[-2000:]
    client = Client(agent.socket)
    states = {d["name"]: d["state"] for d in client.call("GET", "/v1/status")["deployments"]}
    assert states == {"lazy": "sleeping", "always": "running"}
    assert [c["Names"] for c in agent.containers()] == [f"maas-{agent.node}-always-0"]

    # bad requests: clear JSON errors, nothing changes
    missing = client.call("POST", "/v1/wake/nope", status=404)
    assert missing["error"] == "no deployment named 'nope'"
    for body, why in (
        ({"models": []}, "'models' must map deployment names to activity"),
        ({"models": {"lazy": {"idle_s": "x"}}}, "activity of 'lazy' needs numbers"),
        ({"models": {"lazy": {"idle_s": -1, "in_flight": 0}}}, "must not be negative"),
        (
            {"models": {"lazy": {"idle_s": 1, "in_flight": 1, "queued": 2}}},
            "queued requests are counted in in_flight",
        ),
    ):
        assert why in client.call("POST", "/v1/activity", body, status=400)["error"]
    assert client.call("POST", "/v1/wake/always") == {"name": "always", "on_demand": False}

    # a wake starts it; a request in flight keeps it past its timeout; idle, it sleeps
    assert client.call("POST", "/v1/wake/lazy")["state"] == "waking"
    agent.wait_for(
        lambda: _lazy(client)["state"] == "running" and _lazy(client)["ready_replicas"] == 1,
        60,
        "the woken deployment to be ready",
    )
    shown = _lazy(client)["on_demand"]
    assert shown["state"] == "awake" and shown["wake"]["ready_at"] >= shown["wake"]["started_at"]
    # It runs in its network sandbox, which publishes its port (reconcile/sandbox.py).
    (sandbox,) = agent.sandboxes()
    assert (sandbox["Names"], sandbox["State"]) == (f"maas-{agent.node}-lazy-0-net", "running")
    (woken,) = [c for c in agent.containers() if "lazy" in c["Names"]]
    assert network_mode(woken["ID"]) == f"container:{sandbox_id(sandbox['Names'])}"
    busy = {"models": {"lazy": {"idle_s": 30, "in_flight": 1}}}
    for _ in range(4):
        client.call("POST", "/v1/activity", busy)
        agent.ctl("status")  # time passes; a pass may run
    assert _lazy(client)["on_demand"]["state"] == "awake"
    client.call("POST", "/v1/activity", {"models": {"lazy": {"idle_s": 30, "in_flight": 0}}})
    agent.wait_for(lambda: _lazy(client)["state"] == "sleeping", 30, "the idle stop")
    assert _lazy(client)["on_demand"]["reason"].startswith("idle for")
    agent.wait_for(lambda: len(agent.containers(all_states=False)) == 1, 30, "the stop")
    shown = agent.ctl("status")
    assert "sleeping (on demand: sleeping, idle for" in shown.stdout, shown.stdout
    # Its container is kept, stopped; a preview of the same apply shows nothing to create.
    (kept,) = [c for c in agent.containers() if "lazy" in c["Names"]]
    assert kept["State"] == "exited"
    assert [s["State"] for s in agent.sandboxes()] == ["running"]  # the port stays held
    path = (agent.dir / "both.yaml").resolve()
    sources = {str(path): path.read_text()}
    preview = client.call("POST", "/v1/apply", {"sources": sources, "dry_run": True})
    assert [a["kind"] for a in preview["actions"] if a["deployment"] == "lazy"] == ["noop"]
    # Woken again: the same container is started, not recreated.
    client.call("POST", "/v1/wake/lazy")
    agent.wait_for(lambda: _lazy(client)["ready_replicas"] == 1, 60, "the second wake")
    (again,) = [c for c in agent.containers() if "lazy" in c["Names"]]
    assert (again["ID"], again["State"]) == (kept["ID"], "running")
    _wake_without_its_sandbox(agent, client, sandbox["Names"], kept["ID"])
    assert agent.ctl("delete", "lazy").returncode == 0
    agent.wait_for(lambda: not agent.sandboxes(), 30, "the sandbox's removal")


def _wake_without_its_sandbox(agent: AgentProcess, client: Client, sandbox: str, kept: str) -> None:
    """Its sandbox removed by hand while it sleeps: the next wake makes both anew."""
    client.call("POST", "/v1/activity", {"models": {"lazy": {"idle_s": 30, "in_flight": 0}}})
    agent.wait_for(lambda: _lazy(client)["state"] == "sleeping", 30, "the second idle stop")
    subprocess.run(["docker", "rm", "-f", sandbox], check=True, capture_output=True)
    client.call("POST", "/v1/wake/lazy")
    agent.wait_for(lambda: _lazy(client)["ready_replicas"] == 1, 60, "the third wake")
    (anew,) = [c for c in agent.containers() if "lazy" in c["Names"]]
    assert anew["ID"] != kept
    assert network_mode(anew["ID"]) == f"container:{sandbox_id(sandbox)}"


def test_an_image_without_sleep_publishes_its_own_port(agent: AgentProcess) -> None:
    image = busybox_image(applets=tuple(a for a in APPLETS if a != "sleep"))
    result = agent.apply("lazy", web_spec("lazy", image, extra="  on_demand: {}\n"))
    assert result.returncode == 0, result.stderr + agent.log.read_text()[-2000:]
    client = Client(agent.socket)
    client.call("POST", "/v1/wake/lazy")
    agent.wait_for(lambda: _lazy(client)["ready_replicas"] == 1, 60, "the wake")
    (woken,) = agent.containers()
    assert not network_mode(woken["ID"]).startswith("container:") and not agent.sandboxes()
    assert "no network sandbox" in agent.log.read_text()


def network_mode(container: str) -> str:
    return inspect(container, "{{.HostConfig.NetworkMode}}")


def sandbox_id(name: str) -> str:
    return inspect(name, "{{.Id}}")


def inspect(container: str, template: str) -> str:
    args = ["docker", "inspect", "-f", template, container]
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout.strip()


def _lazy(client: Client) -> dict[str, object]:
    status = client.call("GET", "/v1/status")
    found: dict[str, object] = next(d for d in status["deployments"] if d["name"] == "lazy")
    return found
