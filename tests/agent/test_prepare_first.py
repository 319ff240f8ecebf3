"""A change that needs a new model: the new version is downloaded while the old container keeps
serving, and the old one is stopped only when the new one is ready to start (issue 20, item 4).
Real agent, real engine, a local hub server."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from support.agent import AgentProcess, web_spec
from support.hubserver import local_hub

COMMAND = (
    '[/bin/sh, -c, \'exec /bin/busybox httpd -f -p "$0" -h /www\', "{{port}}", "{{model_path}}"]'
)


def spec(image: str, file: str) -> str:
    return (
        "apiVersion: maas/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n"
        f"  source: huggingface\n  repo_id: org/web\n  file: {file}\n  backend: custom\n"
        f"  image: {image}\n  command: {COMMAND}\n  health: {{path: /health}}\n"
        "  allow_cpu_offload: true\n"
    )


def test_the_old_version_serves_while_the_new_model_downloads(tmp_path: Path, busybox: str) -> None:
    hub = tmp_path / "hub"
    (hub / "org" / "web").mkdir(parents=True)
    (hub / "org" / "web" / "a.bin").write_bytes(b"a" * 1000)
    (hub / "org" / "web" / "b.bin").write_bytes(os.urandom(8 << 20))
    with local_hub(hub, chunk_delay_s=0.1) as endpoint:  # b.bin: about 3 s
        (tmp_path / "agent").mkdir()
        agent = AgentProcess(tmp_path / "agent")
        agent.start(env={"HF_ENDPOINT": endpoint, "HF_HUB_DISABLE_TELEMETRY": "1"})
        try:
            done = agent.apply("web", spec(busybox, "a.bin"))
            assert done.returncode == 0, done.stdout + done.stderr
            (old,) = agent.status()["deployments"][0]["containers"]
            assert agent.apply("web", spec(busybox, "b.bin"), wait=False).returncode == 0
            seen: list[dict[str, Any]] = []
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                status = agent.status()
                (d,) = status["deployments"]
                if status.get("preparing"):
                    # Preparing: the old container is the one that runs, and it is ready.
                    # (ready: what the gateway routes to; the deployment counts only the new)
                    assert [(c["id"], c["ready"]) for c in d["containers"]] == [(old["id"], True)]
                    assert d["state"] == "downloading", d
                    seen.append(status["preparing"][0])
                elif seen and d["containers"] and d["containers"][0]["id"] != old["id"]:
                    break
                time.sleep(0.1)
            assert seen, "no preparation seen"
            assert seen[-1]["phase"] == "downloading"
            assert seen[-1]["progress_bar"]["total"] == 8 << 20
            agent.wait_for(
                lambda: agent.status()["deployments"][0]["ready_replicas"] == 1,
                timeout=60,
                what="the new version to be ready",
            )
            (new,) = agent.status()["deployments"][0]["containers"]
            assert new["id"] != old["id"] and new["spec_hash"] != old["spec_hash"]
        finally:
            agent.cleanup()


def test_replicas_roll_one_at_a_time_and_one_always_serves(tmp_path: Path, busybox: str) -> None:
    (tmp_path / "agent").mkdir()
    agent = AgentProcess(tmp_path / "agent")
    agent.start()
    try:
        done = agent.apply("web", web_spec("web", busybox, replicas=2))
        assert done.returncode == 0, done.stdout + done.stderr
        before = {c["id"] for c in agent.status()["deployments"][0]["containers"]}
        changed = web_spec("web", busybox, replicas=2, extra="  env: {VERSION: '2'}\n")
        assert agent.apply("web", changed, wait=False).returncode == 0
        serving: list[int] = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            (d,) = agent.status_now()["deployments"]
            ready = [c for c in d["containers"] if c["ready"]]
            serving.append(len(ready))
            if d["ready_replicas"] == 2 and not before & {c["id"] for c in d["containers"]}:
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"the roll-out did not end: {serving}")
        assert min(serving) >= 1, serving  # never was there no ready replica to route to
        assert 1 in serving  # and one was down at a time (for its start and first probe, >= 1 s)
    finally:
        agent.cleanup()


def test_a_new_version_that_never_gets_ready_is_rolled_back(tmp_path: Path, busybox: str) -> None:
    (tmp_path / "agent").mkdir()
    agent = AgentProcess(tmp_path / "agent")
    agent.start()
    try:
        done = agent.apply("web", web_spec("web", busybox, replicas=2))
        assert done.returncode == 0, done.stdout + done.stderr
        (d,) = agent.status()["deployments"]
        good, ids = d["spec_hash"], {c["replica"]: c["id"] for c in d["containers"]}
        # The new version serves a folder without the health file: never ready in its 3 s.
        broken = web_spec(
            "web",
            busybox,
            replicas=2,
            command='[/bin/busybox, httpd, -f, -p, "{{port}}", -h, /tmp]',
        ).replace("health: {path: /health}", "health: {path: /health, startup_timeout_s: 3}")
        assert agent.apply("web", broken, wait=False).returncode == 0
        serving: list[int] = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            status = agent.status()
            (d,) = status["deployments"]
            serving.append(sum(1 for c in d["containers"] if c["ready"]))
            back = status.get("rolled_back", {}).get("web")
            if back and d["ready_replicas"] == 2 and d["spec_hash"] == good:
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"not rolled back: {agent.status()}")
        assert "startup budget of 3 s" in back["reason"], back
        assert min(serving) >= 1, serving
        # The replica the roll-out never reached kept its container all along.
        assert {c["replica"]: c["id"] for c in d["containers"]}[1] == ids[1]
        assert "rolled back to the previous version" in agent.ctl("status").stdout
    finally:
        agent.cleanup()


def test_an_agent_restarted_mid_roll_out_keeps_the_old_version_serving(
    tmp_path: Path, busybox: str
) -> None:
    """The agent is killed while a new container starts beside the old one: the agent that
    comes back keeps the old one serving until the new one is ready (reconcile/overlap.py,
    `adopted`), instead of removing it as a duplicate at once."""
    (tmp_path / "agent").mkdir()
    agent = AgentProcess(tmp_path / "agent")
    agent.start()
    try:
        limits = "  resources: {memory_bytes: 67108864}\n"  # known: both versions fit
        assert agent.apply("web", web_spec("web", busybox, extra=limits)).returncode == 0
        (old,) = agent.status()["deployments"][0]["containers"]
        slow = '[/bin/sh, -c, \'sleep 8; exec /bin/busybox httpd -f -p "$0" -h /www\', "{{port}}"]'
        changed = web_spec("web", busybox, extra=limits + "  env: {V: '2'}\n", command=slow)
        assert agent.apply("web", changed, wait=False).returncode == 0
        agent.wait_for(
            lambda: len(agent.status()["deployments"][0]["containers"]) == 2,
            timeout=30,
            what="the new container beside the old one",
        )
        agent.kill()
        agent.start()
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:  # the new one sleeps 8 s before it serves
            (d,) = agent.status_now()["deployments"]
            assert [c["ready"] for c in d["containers"] if c["id"] == old["id"]] == [True], d
            time.sleep(0.1)
        agent.wait_for(
            lambda: (
                [c["id"] != old["id"] for c in agent.status()["deployments"][0]["containers"]]
                == [True]
            ),
            timeout=60,
            what="the roll-out to end",
        )
        assert agent.status()["deployments"][0]["ready_replicas"] == 1
    finally:
        agent.cleanup()
