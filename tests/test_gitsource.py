"""Pull mode against real git repositories: a bare 'remote', commits, a refused bad revision."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from maas.agent.gitsource import GitSource
from maas.compiler import MaasError

NODE = """apiVersion: maas/v1
kind: Node
metadata: {name: node-a, labels: {arch: amd64}}
spec:
  cpu: {cores: 8, threads: 16}
  memory: {total_bytes: 68719476736}
  gpus: [{index: 0, uuid: GPU-a, name: L4, memory_total_bytes: 24000000000}]
"""


def deployment(name: str, replicas: str = "1") -> str:
    return (
        f"apiVersion: maas/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n"
        f"  source: huggingface\n  repo_id: org/{name}\n  backend: custom\n  image: x/y:1\n"
        f"  replicas: {replicas}\n"
    )


def run(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


@pytest.fixture
def upstream(tmp_path: Path) -> Path:
    bare = tmp_path / "remote.git"
    run(tmp_path, "init", "--bare", "-q", "-b", "main", str(bare))
    work = tmp_path / "work"
    run(tmp_path, "clone", "-q", str(bare), str(work))
    (work / "nodes").mkdir()
    (work / "deployments").mkdir()
    (work / "nodes" / "node-a.yaml").write_text(NODE)
    (work / "deployments" / "chat.yaml").write_text(deployment("chat"))
    run(work, "checkout", "-q", "-b", "main")
    run(work, "add", "-A")
    run(work, "commit", "-q", "-m", "first")
    run(work, "push", "-q", "origin", "main")
    return work


def push(work: Path, rel: str, text: str) -> str:
    (work / rel).write_text(text)
    run(work, "add", "-A")
    run(work, "commit", "-q", "-m", f"change {rel}")
    run(work, "push", "-q", "origin", "main")
    return run(work, "rev-parse", "HEAD")


def test_pull_applies_new_commits_and_refuses_bad_ones(upstream: Path, tmp_path: Path) -> None:
    source = GitSource(
        url=str(tmp_path / "remote.git"), node="node-a", workdir=tmp_path / "state" / "git"
    )
    plan = source.poll()
    assert plan is not None and [d.name for d in plan.deployments] == ["chat"]
    assert source.poll() is None  # nothing moved
    good = push(upstream, "deployments/embed.yaml", deployment("embed"))
    plan = source.poll()
    assert plan is not None and [d.name for d in plan.deployments] == ["chat", "embed"]
    assert source.state.applied_commit == good
    bad = push(upstream, "deployments/broken.yaml", deployment("broken", replicas="many"))
    assert source.poll() is None
    assert source.state.applied_commit == good  # the last good revision stays in force
    assert source.state.refused_commit == bad
    assert f"{bad[:12]}:deployments/broken.yaml:9:13: error:" in source.state.error[0].render()
    assert source.poll() is None  # the bad commit is not retried
    fixed = push(upstream, "deployments/broken.yaml", deployment("broken"))
    plan = source.poll()
    assert plan is not None and len(plan.deployments) == 3
    assert source.state.applied_commit == fixed and not source.state.error


def test_unreachable_remote_is_retryable(tmp_path: Path) -> None:
    source = GitSource(url=str(tmp_path / "missing.git"), node="n", workdir=tmp_path / "g")
    with pytest.raises(MaasError) as caught:
        source.poll()
    assert caught.value.retryable


def test_signature_verification_refuses_unsigned(upstream: Path, tmp_path: Path) -> None:
    source = GitSource(
        url=str(tmp_path / "remote.git"),
        node="node-a",
        workdir=tmp_path / "g",
        verify_signatures=True,
    )
    assert source.poll() is None
    assert source.state.refused_commit is not None
    assert source.state.error[0].code == "git"
