"""Pull mode end to end: the real agent follows a local bare git repository on the real engine."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

from tests_agent_support import NODE_PROFILE, AgentProcess, web_spec


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


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
