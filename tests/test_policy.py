"""Admission policy and argv safety: what is denied, what an operator can allow."""

from __future__ import annotations

from pathlib import Path

import pytest

from maas.compiler import CompileOptions, MaasError, compile_plan, load_sources
from maas.compiler.policy import Policy

ROOT = Path(__file__).resolve().parent.parent
NODE = (
    load_sources({"gpu.yaml": (ROOT / "examples" / "nodes" / "gpu-01.yaml").read_text()})
    .nodes[0]
    .model
)


def compile_one(spec_lines: str, policy: Policy) -> list[str]:
    text = "apiVersion: maas/v1\nkind: Deployment\nmetadata: {name: demo}\nspec:\n" + spec_lines
    documents = load_sources({"d.yaml": text})
    assert not documents.diagnostics
    plan = compile_plan(documents.deployments, NODE, options=CompileOptions(policy=policy))
    return plan.deployments[0].command


CUSTOM = "  source: huggingface\n  repo_id: a/b\n  backend: custom\n"


def test_registry_allowlist() -> None:
    policy = Policy(allowed_registries=["registry.internal/"])
    with pytest.raises(MaasError) as caught:
        compile_one(CUSTOM + "  image: docker.io/evil/miner:1\n", policy)
    (diagnostic,) = [d for d in caught.value.diagnostics if d.severity == "error"]
    assert diagnostic.code == "policy" and "allowed_registries" in diagnostic.message
    assert diagnostic.position is not None and diagnostic.position.line == 8
    compile_one(CUSTOM + "  image: registry.internal/tei:1\n", policy)


def test_operator_can_allow() -> None:
    policy = Policy(
        allow_privileged=True,
        allowed_mount_roots=["/data"],
        allowed_devices=["/dev/kvm"],
        allowed_capabilities=["CAP_SYS_NICE"],
    )
    compile_one(
        CUSTOM + "  image: x/y\n  privileged: true\n  devices: [/dev/kvm]\n"
        "  cap_add: [sys_nice]\n  volumes: [{host_path: /data/a, container_path: /a}]\n",
        policy,
    )


def test_mount_root_prefix_is_not_a_root() -> None:
    with pytest.raises(MaasError):
        compile_one(
            CUSTOM + "  image: x/y\n  volumes: [{host_path: /models-evil/a, container_path: /a}]\n",
            Policy(),
        )
    with pytest.raises(MaasError):
        compile_one(
            CUSTOM + "  image: x/y\n  volumes: [{host_path: /models/../etc, container_path: /a}]\n",
            Policy(),
        )


def test_placeholders_cannot_inject_arguments() -> None:
    command = compile_one(
        "  source: local_path\n  path: /models/my model; rm -rf --no-preserve-root.gguf\n"
        "  backend: custom\n  image: x/y\n"
        "  command: \"--model {{model_path}} --name '{{model_name}} x'\"\n",
        Policy(),
    )
    assert command == [
        "--model",
        "/models/my model; rm -rf --no-preserve-root.gguf",
        "--name",
        "demo x",
    ]
