"""Admission policy and argv safety: what is denied, what an operator can allow."""

from __future__ import annotations

import pytest

from maas.compiler import CompileOptions, MaasError, compile_plan, load_sources
from maas.compiler.plan import PlanDeployment
from maas.compiler.policy import Policy, narrow
from support.paths import ROOT

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


def denial(spec_lines: str, policy: Policy) -> list[str]:
    try:
        compile_one(spec_lines, policy)
    except MaasError as exc:
        return [d.message for d in exc.diagnostics if d.severity == "error"]
    return []


@pytest.mark.parametrize(
    ("entry", "image", "allowed"),
    [
        ("ghcr.io", "ghcr.io/org/x:1", True),
        ("ghcr.io/", "ghcr.io.evil.example/x", False),
        ("ghcr.io", "ghcr.io.evil.example/x", False),
        ("ghcr.io/org", "ghcr.io/org/x@sha256:" + "a" * 64, True),
        ("ghcr.io/org", "ghcr.io/orgevil/x", False),
        ("ghcr.io/org/", "ghcr.io/org", True),
        ("GHCR.io/org", "ghcr.io/org/x", True),
        ("docker.io/library", "ubuntu:22.04", True),
        ("docker.io/library", "evil/ubuntu", False),
        ("nvidia", "nvidia/cuda:12.4.1-base", True),
        ("nvidia", "docker.io/nvidia/cuda", True),
        ("nvidia", "nvidiaevil/cuda", False),
        ("registry.local:5000", "registry.local:5000/a/b", True),
        ("registry.local:5000", "registry.local:5001/a/b", False),
        ("registry.local", "registry.local:5000/a/b", False),
        ("ghcr.io", "ghcr.io/../x", False),  # not a reference
        ("ghcr.io", "ghcr.io/Org/x", False),  # path components are lower case
    ],
)
def test_registry_allowlist_matches_the_parsed_reference(
    entry: str, image: str, allowed: bool
) -> None:
    found = denial(CUSTOM + f"  image: '{image}'\n", Policy(allowed_registries=[entry]))
    assert (not found) == allowed, found
    if not allowed:  # denied by the policy, or not a reference at all (checked before)
        assert "allowed_registries" in found[0] or "not a valid image reference" in found[0]


def test_registry_entry_that_is_no_registry_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="not a registry"):
        Policy(allowed_registries=["ghcr.io/Bad Name"])


@pytest.mark.parametrize(
    "name",
    [
        "NVIDIA_VISIBLE_DEVICES",
        "NVIDIA_DRIVER_CAPABILITIES",
        "NVIDIA_REQUIRE_CUDA",
        "CUDA_VISIBLE_DEVICES",
        "LD_PRELOAD",
        "LD_LIBRARY_PATH",
        "LD_AUDIT",
        "ld_preload",
        "GCONV_PATH",
    ],
)
def test_platform_environment_names_are_denied_unless_allowed(name: str) -> None:
    spec = CUSTOM + f"  image: x/y\n  env:\n    MODE: fast\n    {name}: all\n"
    (message,) = denial(spec, Policy())
    assert f"environment name '{name}'" in message and "'allowed_env'" in message
    assert not denial(spec, Policy(allowed_env=[name]))
    with pytest.raises(MaasError) as caught:
        compile_one(spec, Policy())
    (error,) = [d for d in caught.value.diagnostics if d.severity == "error"]
    position = error.position
    assert position is not None and position.line == 11  # the offending entry


def test_plain_environment_names_pass() -> None:
    spec = CUSTOM + "  image: x/y\n  env: {HF_HOME: /x, NVIDIA: '1', LDX: '2'}\n"
    assert not denial(spec, Policy())


def test_mounts_into_the_cache() -> None:
    cache = "/var/lib/maas/cache"
    store = CUSTOM + "  image: x/y\n  volumes: [{host_path: %s, container_path: /a%s}]\n"
    # The model store only read-only; another deployment's folder never; its own folder yes.
    assert not denial(store % (f"{cache}/models/huggingface/a/b", ""), Policy())
    (message,) = denial(store % (f"{cache}/models/huggingface/a/b", ", read_only: false"), Policy())
    assert "mounted read-only" in message
    (message,) = denial(store % (f"{cache}/deployments/other/huggingface", ""), Policy())
    assert "another deployment's private folder" in message
    wide = Policy(allowed_mount_roots=["/var/lib/maas"])
    assert denial(store % (f"{cache}/deployments/other", ""), wide)
    assert not denial(store % (f"{cache}/deployments/demo", ", read_only: false"), Policy())
    (message,) = denial(store % (cache, ""), Policy())
    assert "outside the allowed roots" in message


def plan_of(spec_lines: str) -> PlanDeployment:
    text = "apiVersion: maas/v1\nkind: Deployment\nmetadata: {name: demo}\nspec:\n" + spec_lines
    documents = load_sources({"d.yaml": text})
    options = CompileOptions(cache_dir="/c", policy=Policy())
    return compile_plan(documents.deployments, NODE, options=options).deployments[0]


def test_containers_get_their_model_read_only_and_only_their_own_writable_folder() -> None:
    custom = plan_of(
        CUSTOM + "  image: x/y\n  command: '--cache {{hf_cache}} --model {{model_path}}'\n"
    )
    assert custom.command == [
        "--cache",
        "/c/deployments/demo/huggingface",
        "--model",
        "/c/models/huggingface/a/b/main",
    ]
    assert custom.model.fetched_by == "agent"  # its command names {{model_path}}
    assert [m.model_dump() for m in custom.mounts] == [
        {
            "source": "/c/models/huggingface/a/b/main",
            "target": "/c/models/huggingface/a/b/main",
            "read_only": True,
        },
        {"source": "/c/deployments/demo", "target": "/c/deployments/demo", "read_only": False},
    ]
    gguf = plan_of(
        "  source: huggingface\n  repo_id: a/b\n  file: m.Q4_K_M.gguf\n  allow_cpu_offload: true\n"
    )
    assert gguf.backend == "llama-box"
    assert [(m.source, m.read_only) for m in gguf.mounts] == [
        ("/c/models/huggingface/a/b/main", True)
    ]
    itself = plan_of(CUSTOM + "  image: x/y\n  command: '--cache {{hf_cache}}'\n")
    assert (itself.model.fetched_by, itself.model.download) == ("backend", False)
    assert [m.source for m in itself.mounts] == ["/c/deployments/demo"]
    local = plan_of("  source: local_path\n  path: /models/m.gguf\n  allow_cpu_offload: true\n")
    assert [(m.source, m.read_only) for m in local.mounts] == [("/models/m.gguf", True)]


def test_a_repository_policy_only_narrows_the_node_policy() -> None:
    node = Policy(
        allow_host_pid=True,
        allowed_mount_roots=["/models", "/data"],
        allowed_devices=["/dev/kvm"],
        allowed_capabilities=["SYS_NICE"],
        allowed_registries=["ghcr.io"],
        allowed_env=["LD_PRELOAD"],
    )
    wide = Policy(
        allow_privileged=True,
        allow_host_pid=True,
        allow_host_network=True,
        allowed_mount_roots=["/"],
        allowed_devices=["/dev/kvm", "/dev/mem"],
        allowed_capabilities=["CAP_SYS_NICE", "SYS_ADMIN"],
        allowed_registries=None,
        allowed_env=["LD_PRELOAD", "NVIDIA_VISIBLE_DEVICES"],
    )
    assert narrow(node, wide) == node  # widening takes nothing away and adds nothing
    tight = Policy(
        allowed_mount_roots=["/models/team", "/srv"],
        allowed_registries=["ghcr.io/org", "docker.io"],
        allowed_capabilities=[],
    )
    met = narrow(node, tight)
    assert met.allowed_mount_roots == ["/models/team"]
    assert met.allowed_registries == ["ghcr.io/org"]
    assert not met.allow_host_pid and not met.allowed_devices and not met.allowed_env
    assert not met.allowed_capabilities
    assert narrow(Policy(allowed_registries=None), tight).allowed_registries == [
        "ghcr.io/org",
        "docker.io",
    ]


@pytest.mark.parametrize(
    "field",
    [
        "repo_id: ../..",
        "repo_id: a/..",
        "file: ../../../etc/x.json",
        "file: /etc/x",
        "revision: ../../../../tmp",
    ],
)
def test_hub_names_cannot_leave_the_caches(field: str) -> None:
    """repo_id, file and revision become host paths under the agent's caches (the metadata
    cache is written as root): a '..' or an absolute path is an error at its line."""
    text = (
        "apiVersion: maas/v1\nkind: Deployment\nmetadata: {name: demo}\nspec:\n"
        "  source: huggingface\n  repo_id: a/b\n  allow_cpu_offload: true\n"
    )
    key = field.split(":", maxsplit=1)[0]
    text = (
        text.replace("  repo_id: a/b\n", f"  repo_id: a/b\n  {field}\n")
        if key != "repo_id"
        else text.replace("repo_id: a/b", field)
    )
    (diagnostic,) = load_sources({"d.yaml": text}).diagnostics
    assert diagnostic.position is not None
    assert diagnostic.position.line == (6 if key == "repo_id" else 7)
