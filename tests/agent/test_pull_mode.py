"""Pull mode end to end: the real agent follows a local bare git repository on the real engine."""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path

from support.agent import NODE_PROFILE, AgentProcess, web_spec
from support.git import git


def push(work: Path, files: dict[str, str], message: str) -> str:
    for rel, text in files.items():
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_text(text)
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", message)
    git(work, "push", "-q", "origin", "main")
    return git(work, "rev-parse", "HEAD")


def running(agent: AgentProcess) -> set[str]:
    return {d["name"] for d in agent.status()["deployments"] if d["state"] == "running"}


def test_agent_applies_commits_and_refuses_a_bad_one(tmp_path: Path, busybox: str) -> None:
    bare = tmp_path / "config.git"
    git(tmp_path, "init", "--bare", "-q", "-b", "main", str(bare))
    work = tmp_path / "work"
    git(tmp_path, "clone", "-q", str(bare), str(work))
    git(work, "checkout", "-q", "-b", "main")
    home = tmp_path / "agent"
    home.mkdir()
    agent = AgentProcess(home, {"source": {"url": str(bare), "interval_s": 1}})
    low = 19000 + random.randrange(10) * 100  # below the ephemeral ports and the agents' own
    first = push(
        work,
        {
            "maas.yaml": "apiVersion: maas/v1\nkind: Config\n"
            f"spec: {{port_range: [{low}, {low + 99}]}}\n",
            f"nodes/{agent.node}.yaml": NODE_PROFILE.format(name=agent.node),
            "deployments/web.yaml": web_spec("web", busybox),
        },
        "first",
    )
    agent.start()
    try:
        agent.wait_for(lambda: running(agent) == {"web"}, timeout=60, what="first commit")
        assert agent.status()["source"]["applied_commit"] == first
        second = push(work, {"deployments/two.yaml": web_spec("two", busybox)}, "add two")
        agent.wait_for(lambda: running(agent) == {"web", "two"}, timeout=60, what="second")
        before = {c["ID"] for c in agent.containers()}
        bad = push(
            work,
            {
                "deployments/two.yaml": web_spec("two", busybox).replace(
                    "replicas: 1", "replicas: many"
                )
            },
            "broken",
        )
        agent.wait_for(
            lambda: agent.status()["source"]["refused_commit"] == bad, timeout=60, what="refusal"
        )
        source = agent.status()["source"]
        assert source["applied_commit"] == second
        assert "deployments/two.yaml" in source["error"][0] and "[type]" in source["error"][0]
        assert "refused" in agent.ctl("status").stdout
        assert {c["ID"] for c in agent.containers()} == before  # nothing touched
    finally:
        agent.cleanup()


def test_a_repository_narrows_the_node_policy_and_never_widens_it(
    tmp_path: Path, busybox: str
) -> None:
    """The reproduction: a commit that sets `allowed_mount_roots: [/]` and `allow_host_pid: true`
    got the host's PID namespace and `/` read-write. The node's own policy, cache and ports rule;
    the repository's policy can only take away."""
    bare = tmp_path / "config.git"
    git(tmp_path, "init", "--bare", "-q", "-b", "main", str(bare))
    work = tmp_path / "work"
    git(tmp_path, "clone", "-q", str(bare), str(work))
    git(work, "checkout", "-q", "-b", "main")
    home = tmp_path / "agent"
    home.mkdir()
    agent = AgentProcess(home, {"source": {"url": str(bare), "interval_s": 1}})
    node_low, node_high = json.loads(agent.config.read_text())["port_range"]

    def config(policy: str) -> str:
        return (
            "apiVersion: maas/v1\nkind: Config\nspec:\n  port_range: [1024, 1124]\n"
            f"  cache_dir: {tmp_path / 'repo-cache'}\n  policy: {policy}\n"
        )

    hostile = web_spec(
        "web",
        busybox,
        extra="  host_pid: true\n"
        "  volumes: [{host_path: /, container_path: /host, read_only: false}]\n",
    )
    first = push(
        work,
        {
            "maas.yaml": config("{allowed_mount_roots: [/], allow_host_pid: true}"),
            f"nodes/{agent.node}.yaml": NODE_PROFILE.format(name=agent.node),
            "deployments/web.yaml": hostile,
        },
        "widen",
    )
    agent.start()
    try:
        agent.wait_for(
            lambda: agent.status()["source"]["refused_commit"] == first, timeout=60, what="refusal"
        )
        errors = "\n".join(agent.status()["source"]["error"])
        assert "allow_host_pid" in errors and "allowed_mount_roots" in errors
        assert f"{first[:12]}:deployments/web.yaml:" in errors  # positioned in the commit
        assert agent.containers() == []
        # Narrowing works: the node allows any registry, the repository only ghcr.io.
        second = push(
            work,
            {
                "maas.yaml": config("{allowed_registries: [ghcr.io]}"),
                "deployments/web.yaml": (web_spec("web", busybox)),
            },
            "narrow",
        )
        agent.wait_for(
            lambda: agent.status()["source"]["refused_commit"] == second, timeout=60, what="2nd"
        )
        assert "allowed_registries" in "\n".join(agent.status()["source"]["error"])
        assert agent.containers() == []
        third = push(
            work, {"maas.yaml": config("{allowed_registries: [docker.io/maas-test]}")}, "ok"
        )
        agent.wait_for(lambda: running(agent) == {"web"}, timeout=60, what="third commit")
        assert agent.status()["source"]["applied_commit"] == third
        (web,) = agent.status()["deployments"]
        assert node_low <= web["containers"][0]["port"] <= node_high  # the node's ports
        stored = json.loads((home / "state" / "desired.json").read_text())
        assert stored["source_commit"] == third and stored["assigned"] == {"web": 1}
        assert list(stored["sources"]) == [f"{third[:12]}:deployments/web.yaml"]
        assert not (tmp_path / "repo-cache").exists()  # the node's cache, not the repository's
        assert {m.split(":")[0] for m in agent_mounts(agent)} <= {
            str(home / "cache" / "models" / "huggingface" / "org" / "web"),
            str(home / "cache" / "deployments" / "web"),
        }
    finally:
        agent.cleanup()


def agent_mounts(agent: AgentProcess) -> list[str]:
    (container,) = agent.containers()
    out = subprocess.run(
        ["docker", "inspect", "-f", "{{json .HostConfig.Binds}}", container["ID"]],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    value: list[str] = json.loads(out)
    return value
