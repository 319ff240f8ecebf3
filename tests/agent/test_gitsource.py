"""Pull mode against real git repositories: a bare 'remote', commits, a refused bad revision."""

from __future__ import annotations

from pathlib import Path

import pytest

from maas.agent.desired.gitsource import GitSource
from maas.compiler import MaasError
from support.git import git as run

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


def accept(source: GitSource) -> dict[str, int] | None:
    """Poll; when a commit is found, take it as the agent does when its compile succeeds.

    The deployments assigned to this node, with their replicas."""
    found = source.poll()
    if found is None:
        return None
    desired, fleet = found
    assert desired.source_commit is not None
    source.applied(desired.source_commit, fleet)
    return desired.assigned


def test_pull_applies_new_commits_and_refuses_bad_ones(upstream: Path, tmp_path: Path) -> None:
    source = GitSource(
        url=str(tmp_path / "remote.git"), node="node-a", workdir=tmp_path / "state" / "git"
    )
    assert accept(source) == {"chat": 1}
    assert source.poll() is None  # nothing moved
    good = push(upstream, "deployments/embed.yaml", deployment("embed"))
    assert accept(source) == {"chat": 1, "embed": 1}
    assert source.state.applied_commit == good
    bad = push(upstream, "deployments/broken.yaml", deployment("broken", replicas="many"))
    assert source.poll() is None
    assert source.state.applied_commit == good  # the last good revision stays in force
    assert source.state.refused_commit == bad
    assert f"{bad[:12]}:deployments/broken.yaml:9:13: error:" in source.state.error[0].render()
    assert source.poll() is None  # the bad commit is not retried
    fixed = push(upstream, "deployments/broken.yaml", deployment("broken"))
    assert accept(source) == {"broken": 1, "chat": 1, "embed": 1}
    assert source.state.applied_commit == fixed and not source.state.error


def test_the_node_share_of_a_commit(upstream: Path, tmp_path: Path) -> None:
    """What pull mode stores: the sources of the deployments assigned to this node, keyed by
    commit, their replicas, and only the policy rules maas.yaml states."""
    (upstream / "nodes" / "node-b.yaml").write_text(NODE.replace("node-a", "node-b"))
    push(upstream, "deployments/two.yaml", deployment("two", replicas="2"))
    commit = push(
        upstream,
        "maas.yaml",
        "apiVersion: maas/v1\nkind: Config\nspec: {policy: {allowed_registries: [x]}}\n",
    )
    source = GitSource(url=str(tmp_path / "remote.git"), node="node-a", workdir=tmp_path / "g")
    found = source.poll()
    assert found is not None
    desired = found[0]
    assert desired.source_commit == commit and desired.policy == {"allowed_registries": ["x"]}
    assert desired.assigned is not None and set(desired.assigned) <= {"chat", "two"}
    assert desired.assigned.get("two") == 1  # spread: one replica on each node
    assert set(desired.sources) == {f"{commit[:12]}:deployments/{n}.yaml" for n in desired.assigned}


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
