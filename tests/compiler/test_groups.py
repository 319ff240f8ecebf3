"""Distributed groups in config-repository plans (issue 17): a GGUF too big for any one node is
split over the fewest nodes that hold it, by memory, with llama.cpp RPC; vLLM over nodes of the
same GPU count. The split is stable when unrelated deployments come, and refused unless the spec,
the policy and the Node profiles all allow it."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest
from gguf import GGMLQuantizationType

from maas.cli.render_diff import diff_markdown
from maas.cli.render_plan import plan_text
from maas.compiler import MaasError
from maas.compiler.backends import VLLM
from maas.compiler.metadata import ModelMetadata
from maas.compiler.metadata.safetensors import from_config
from maas.compiler.plandiff import diff_fleets
from maas.compiler.repo import FleetPlan, compile_repo
from support import gguf_factory, paths
from support.golden import check_golden
from support.paths import ROOT

GOLDEN = paths.GOLDEN / "groups"
GIB = 1 << 30
FIXTURES = ROOT / "tests" / "fixtures"
ALLOW = "apiVersion: maas/v1\nkind: Config\nspec: {policy: {allow_distributed: true}}\n"


def node(name: str, gpus: int, gib: int, address: str | None = "10.20.0.{n}") -> str:
    n = sum(map(ord, name)) % 200
    cards = "".join(
        f"    - {{index: {i}, uuid: GPU-{name}-{i}, name: NVIDIA L40S, "
        f"memory_total_bytes: {gib * GIB}}}\n"
        for i in range(gpus)
    )
    rpc = f"  rpc_address: {address.format(n=n)}\n" if address else ""
    return (
        f"apiVersion: maas/v1\nkind: Node\nmetadata: {{name: {name}}}\nspec:\n"
        f"  cpu: {{cores: 16, threads: 32}}\n  memory: {{total_bytes: {128 * GIB}}}\n{rpc}"
        + (f"  gpus:\n{cards}" if gpus else "")
    )


def deployment(name: str, *, distributed: bool = True, backend: str = "auto") -> str:
    extra = "  distributed: true\n" if distributed else ""
    source = (
        "  repo_id: org/big\n  file: m.gguf\n"
        if backend == "auto"
        else "  repo_id: org/llama31\n  backend: vllm\n"
    )
    return (
        f"apiVersion: maas/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n"
        f"  source: huggingface\n{source}  context_length: 8192\n{extra}"
    )


@pytest.fixture(scope="module")
def seventy_b(tmp_path_factory: pytest.TempPathFactory) -> ModelMetadata:
    """Llama-3-70B at Q8_0: about 70 GiB, more than any one 48 GB GPU."""
    (path,) = gguf_factory.write_header_only(
        tmp_path_factory.mktemp("m") / "m.gguf", gguf_factory.LLAMA3_70B, GGMLQuantizationType.Q8_0
    )
    return gguf_factory.header_metadata(path)


def fleet(sources: dict[str, str], models: dict[str, ModelMetadata], **kw: object) -> FleetPlan:
    return compile_repo(sources, models=models, **kw)  # type: ignore[arg-type]


def test_a_gguf_too_big_for_one_node_is_split_over_the_fewest(
    seventy_b: ModelMetadata, update_goldens: bool, tmp_path: Path
) -> None:
    sources = {
        "maas.yaml": ALLOW,
        "nodes/a.yaml": node("gpu-a", 1, 48),
        "nodes/b.yaml": node("gpu-b", 1, 48),
        "nodes/c.yaml": node("gpu-c", 1, 48),
        "deployments/big.yaml": deployment("big"),
    }
    models = {"big": seventy_b, "small": seventy_b}
    base = fleet(sources, models)
    assert len(base.groups["big"]) == 2  # two of three nodes hold it: the fewest
    primary, worker = (base.plans[n].deployment("big") for n in base.groups["big"])
    assert primary is not None and worker is not None
    assert primary.group is not None and primary.group.role == "primary"
    assert worker.group is not None and worker.group.role == "worker"
    assert worker.entrypoint == ["ggml-rpc-server"]
    member = worker.group.me(worker.group.members[1].node)
    assert worker.command[:4] == ["-H", member.address, "-p", str(worker.port)]
    rpc = primary.command[primary.command.index("--rpc") + 1]
    assert rpc == f"{member.address}:{worker.port}"
    assert abs(sum(m.share for m in primary.group.members) - 1) < 1e-3
    for plan in base.plans.values():
        for total in plan.totals:
            assert total.allocated_bytes <= total.usable_bytes
    text = "\n\n".join(plan_text(base.plans[n]) for n in sorted(base.plans)) + "\n"
    argv = {
        n: base.plans[n].deployment("big").command  # type: ignore[union-attr]
        for n in base.groups["big"]
    }
    check_golden(GOLDEN / "split-plans.txt", text, update_goldens)
    check_golden(GOLDEN / "split-argv.json", json.dumps(argv, indent=1) + "\n", update_goldens)

    # An unrelated newcomer that fits one node alone moves nothing of the running group.
    small = deployment("small", distributed=False).replace("m.gguf", "s.gguf")
    head_sources = sources | {"deployments/small.yaml": small}
    tiny = gguf_factory.header_metadata(
        gguf_factory.write_header_only(
            tmp_path / "s.gguf",
            gguf_factory.LLAMA3_8B,
            GGMLQuantizationType.Q4_0,
        )[0]
    )
    head = fleet(head_sources, {"big": seventy_b, "small": tiny}, previous=base)
    assert head.groups == base.groups
    for n in base.groups["big"]:
        before, after = base.plans[n].deployment("big"), head.plans[n].deployment("big")
        assert before is not None and after is not None
        assert after.spec_hash == before.spec_hash
    markdown = diff_markdown(diff_fleets(FleetPlan(), base), base="main", head="pr")
    check_golden(GOLDEN / "split-diff.md", markdown, update_goldens)


def test_members_on_one_host_get_ports_of_their_own(
    seventy_b: ModelMetadata, update_goldens: bool, tmp_path: Path
) -> None:
    """Members run in the host's network namespace: two nodes of one machine (same loopback
    rpc_address) must not both listen on the port the deployment's name hashes to. The ports
    are kept on the next commit, even when a newcomer's name hashes to a member's port."""
    sources = {
        "maas.yaml": ALLOW,
        "nodes/a.yaml": node("gpu-a", 1, 48, address="127.0.0.1"),
        "nodes/b.yaml": node("gpu-b", 1, 48, address="127.0.0.1"),
        "deployments/big.yaml": deployment("big"),
    }
    base = fleet(sources, {"big": seventy_b})
    members = [base.plans[n].deployment("big") for n in base.groups["big"]]
    ports = [d.port for d in members if d is not None]
    assert len(ports) == 2 and len(set(ports)) == 2, ports
    primary, worker = members
    assert primary is not None and worker is not None and worker.group is not None
    assert [m.port for m in worker.group.members] == ports
    assert worker.command[worker.command.index("-p") + 1] == str(ports[1])
    rpc = primary.command[primary.command.index("--rpc") + 1]
    assert rpc == f"127.0.0.1:{ports[1]}"
    argv = {n: base.plans[n].deployment("big").command for n in base.groups["big"]}  # type: ignore[union-attr]
    check_golden(GOLDEN / "one-host-argv.json", json.dumps(argv, indent=1) + "\n", update_goldens)

    # Newcomers whose names would start at the members' ports, one on each member's node: the
    # ports are held for the members, and the newcomers take others.
    tiny = gguf_factory.header_metadata(
        gguf_factory.write_header_only(
            tmp_path / "s.gguf", gguf_factory.LLAMA3_8B, GGMLQuantizationType.Q4_0
        )[0]
    )

    def named_for(port: int) -> str:
        return next(
            f"s{i}" for i in range(10_000) if 40000 + zlib.crc32(f"s{i}".encode()) % 1000 == port
        )

    names = [named_for(p) for p in ports]
    newcomers = {
        f"deployments/{n}.yaml": deployment(n, distributed=False).replace("m.gguf", "s.gguf")
        for n in names
    }
    head = fleet(
        sources | newcomers, {"big": seventy_b} | dict.fromkeys(names, tiny), previous=base
    )
    assert head.groups == base.groups
    assert sorted(head.assignment[n][0] for n in names) == sorted(base.groups["big"])
    assert [head.plans[n].deployment("big").port for n in head.groups["big"]] == ports  # type: ignore[union-attr]
    for plan in head.plans.values():
        taken = [p for d in plan.deployments for p in d.ports]
        assert len(taken) == len(set(taken)), plan.node
    # Without the previous plan (an agent restarted), the same repository gives the same ports.
    again = fleet(sources, {"big": seventy_b})
    assert [again.plans[n].deployment("big").port for n in again.groups["big"]] == ports  # type: ignore[union-attr]


def test_a_group_needs_the_policy_and_rpc_addresses(
    seventy_b: ModelMetadata, update_goldens: bool
) -> None:
    nodes = {"nodes/a.yaml": node("gpu-a", 1, 48), "nodes/b.yaml": node("gpu-b", 1, 48)}
    with pytest.raises(MaasError) as denied:
        fleet(nodes | {"deployments/big.yaml": deployment("big")}, {"big": seventy_b})
    assert "allow_distributed" in str(denied.value)
    unnamed = {
        "nodes/a.yaml": node("gpu-a", 1, 48, address=None),
        "nodes/b.yaml": node("gpu-b", 1, 48, address=None),
    }
    with pytest.raises(MaasError) as lonely:
        fleet(
            unnamed | {"maas.yaml": ALLOW, "deployments/big.yaml": deployment("big")},
            {"big": seventy_b},
        )
    check_golden(GOLDEN / "no-rpc-address.txt", str(lonely.value) + "\n", update_goldens)
    with pytest.raises(MaasError) as off:
        fleet(
            nodes
            | {"maas.yaml": ALLOW, "deployments/big.yaml": deployment("big", distributed=False)},
            {"big": seventy_b},
        )
    assert "no group" not in str(off.value)  # not opted in: plain does-not-fit


def test_vllm_over_nodes_of_the_same_gpu_count(update_goldens: bool) -> None:
    config = json.dumps(gguf_factory.LLAMA31_8B_CONFIG).encode()
    # A 140 GB model: two 48 GB GPUs per node do not hold it, two nodes do.
    metadata = from_config(config, weight_bytes=140 * 10**9, name="big")
    sources = {
        "maas.yaml": ALLOW,
        "nodes/a.yaml": node("gpu-a", 2, 48),
        "nodes/b.yaml": node("gpu-b", 2, 48),
        "deployments/big.yaml": deployment("big", backend="vllm"),
    }
    plans = fleet(sources, {"big": metadata})
    argv = {
        n: plans.plans[n].deployment("big").command  # type: ignore[union-attr]
        for n in plans.groups["big"]
    }
    check_golden(GOLDEN / "vllm-argv.json", json.dumps(argv, indent=1) + "\n", update_goldens)
    follower = argv[plans.groups["big"][1]]
    assert "--headless" in follower and "--node-rank" in follower


def test_every_vllm_flag_a_group_renders_exists_in_the_pinned_version() -> None:
    """Each option of the rendered vLLM argv is one the pinned vLLM's parser knows (the saved
    flag list names the source it was read from)."""
    known = {
        line.strip()
        for line in (FIXTURES / "vllm-serve-flags.txt").read_text().splitlines()
        if line.startswith("--")
    }
    argv = json.loads((GOLDEN / "vllm-argv.json").read_text())
    used = {arg for command in argv.values() for arg in command if arg.startswith("-")}
    assert used, "the golden holds the rendered argv"
    assert used <= known, f"not in vLLM's parser: {sorted(used - known)}"
    assert "v0.12.0" in VLLM.image_cuda  # type: ignore[operator]
