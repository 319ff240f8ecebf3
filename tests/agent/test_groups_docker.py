"""A distributed group through real agents (issue 17): two agents with different node names and
label namespaces follow one config repository; the fleet splits a GGUF that neither node holds
alone; the primary's agent holds it pending while its worker does not answer, and its status
names the group, the members and the worker holding it back. (The worker here runs an image
without ggml-rpc-server, so it never answers; the llama.cpp RPC image is built by
support.images.llama_rpc_image.)"""

from __future__ import annotations

import json
import random
from pathlib import Path

from gguf import GGMLQuantizationType

from support import gguf_factory
from support.agent import NODE_PROFILE, AgentProcess
from support.git import git


def test_the_primary_waits_for_its_worker(tmp_path: Path, busybox: str) -> None:
    models = tmp_path / "models"
    models.mkdir()
    # Llama-3-8B at Q8_0 (about 8 GB of weights): more than either 8 GiB node holds alone.
    (gguf,) = gguf_factory.write_header_only(
        models / "big.gguf", gguf_factory.LLAMA3_8B, GGMLQuantizationType.Q8_0
    )
    policy = {"allow_distributed": True, "allowed_mount_roots": [str(models)]}
    agents = [
        AgentProcess(
            tmp_path / name,
            {
                "source": {"url": str(tmp_path / "config.git"), "interval_s": 1},
                "policy": policy,
                "label_namespace": f"maas-{name}",
            },
        )
        for name in ("a", "b")
        if (tmp_path / name).mkdir() is None
    ]
    low = 19000 + random.randrange(10) * 100
    git(tmp_path, "init", "--bare", "-q", "-b", "main", str(tmp_path / "config.git"))
    work = tmp_path / "work"
    git(tmp_path, "clone", "-q", str(tmp_path / "config.git"), str(work))
    git(work, "checkout", "-q", "-b", "main")
    files = {
        "maas.yaml": "apiVersion: maas/v1\nkind: Config\nspec:\n"
        f"  port_range: [{low}, {low + 99}]\n  policy: {json.dumps(policy)}\n",
        "deployments/big.yaml": "apiVersion: maas/v1\nkind: Deployment\nmetadata: {name: big}\n"
        f"spec:\n  source: local_path\n  path: {gguf}\n  image: {busybox}\n"
        "  context_length: 2048\n  allow_cpu_offload: true\n  distributed: true\n",
    }
    for agent in agents:
        files[f"nodes/{agent.node}.yaml"] = (
            NODE_PROFILE.format(name=agent.node) + "  rpc_address: 127.0.0.1\n"
        )
    for rel, text in files.items():
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_text(text)
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "a group")
    git(work, "push", "-q", "origin", "main")
    for agent in agents:
        agent.start()
    try:

        def roles() -> dict[str, dict]:
            found = {}
            for agent in agents:
                for d in agent.status()["deployments"]:
                    if d.get("group"):
                        found[d["group"]["role"]] = d
            return found

        agents[0].wait_for(lambda: set(roles()) == {"primary", "worker"}, 60, "both members")
        primary = roles()["primary"]
        worker = roles()["worker"]
        members = primary["group"]["members"]
        assert [m["role"] for m in members] == ["primary", "worker"]
        assert worker["group"]["members"] == members
        agents[0].wait_for(
            lambda: bool(roles()["primary"]["group"]["held_back_by"]), 60, "held back"
        )
        primary = roles()["primary"]
        assert primary["state"] == "pending"
        assert primary["group"]["held_back_by"] == [
            f"{members[1]['node']} {members[1]['endpoint']}"
        ]
        assert "waiting for the group's workers" in (primary["last_error"] or "")
        assert not primary["containers"]  # never started while its worker is away
        text = next(a for a in agents if a.node == members[0]["node"]).ctl("status").stdout
        assert "group big (this node: primary)" in text
        assert f"held back by: {members[1]['node']} {members[1]['endpoint']}" in text
    finally:
        for agent in agents:
            agent.cleanup()
