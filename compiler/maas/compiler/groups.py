"""Distributed groups (issue 17): one deployment split over several nodes of a fleet.

When no single node fits a deployment that opted in (`spec.distributed`), the fleet looks for the
fewest nodes that hold it together (`find_group`). The model is placed once on a *combined* node,
every member's GPUs as its ledger leaves them plus their host memory added up, so the estimator
that places single-node deployments decides the need; each member then holds the bytes of its own
GPUs and a part of the host share in proportion to what its host has left (`split`). Members are
ordered primary first (the node with the most memory left: it holds the KV cache and output),
then the workers by the same rule.

What each backend is told (`link`, once every member's port is known):
- llama.cpp: each worker runs `ggml-rpc-server -H <rpc_address> -p <port> -c [-d DEVICES]`
  (tools/rpc/rpc-server.cpp's usage; without `-d` it exposes its accelerators, else its CPU), the
  primary `llama-server --rpc host:port,...` (common/arg.cpp). llama.cpp puts RPC devices in front
  of the local ones (src/llama.cpp: "add RPC servers at the front of the list to minimize network
  transfers"), so `--tensor-split` lists the workers' devices in `--rpc` order, then the primary's
  GPUs; the layers the primary's CPU keeps are those `--n-gpu-layers` does not offload.
- vLLM: the same `vllm serve` on every node with `--nnodes`, `--node-rank`, `--master-addr`,
  `--master-port` (and `--headless` on the followers), tensor parallel inside a node and pipeline
  parallel across nodes, which needs the same GPU count on every node.

Every member runs in the host's network namespace: the primary reaches its workers at their
rpc_address (on one machine, a loopback address), and what listens binds that address only. The
primary's API listens on 127.0.0.1, where the node's gateway reaches it. Since several members
may share one host (and one address), each member of a group gets its own port (`member_ports`),
chosen by the fleet before the nodes are compiled: a node's compile reserves it.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from maas.compiler.allocation import Charge
from maas.compiler.diagnostics import MaasError
from maas.compiler.models import Node
from maas.compiler.plan import (
    Estimate,
    Group,
    GroupMember,
    HealthCheck,
    Mount,
    Placement,
    Plan,
    PlanDeployment,
    Role,
    Security,
    spec_hash,
)
from maas.compiler.policy import work_dir

RPC_SERVER = "ggml-rpc-server"  # tools/rpc/CMakeLists.txt's target (formerly `rpc-server`)
# The llama-server flags the group sets; a member's own rendering of them is replaced.
LLAMA_GROUP_FLAGS = ("--n-gpu-layers", "--tensor-split", "--host", "--rpc")
VLLM_GROUP_FLAGS = (
    "--host",
    "--nnodes",
    "--node-rank",
    "--master-addr",
    "--master-port",
    "--distributed-executor-backend",
    "--pipeline-parallel-size",
    "-pp",
)


@dataclass(frozen=True)
class Share:
    """What one member holds of a group, as `compile_plan` charges and renders it."""

    node: str
    role: Role
    placement: Placement
    estimate: Estimate
    port: int | None = None  # the member's own port, set by `member_ports`


@dataclass(frozen=True)
class GroupPlacement:
    """A deployment's group: its members (primary first) and what each holds."""

    deployment: str
    backend: str
    shares: tuple[Share, ...]
    layers: int | None  # the model's repeating layers (llama.cpp), when known

    @property
    def nodes(self) -> list[str]:
        return [s.node for s in self.shares]

    def share(self, node: str) -> Share | None:
        return next((s for s in self.shares if s.node == node), None)

    def charges(self) -> dict[str, Charge]:
        return {
            s.node: Charge(
                deployment=self.deployment,
                gpu_bytes=dict(zip(s.placement.gpus, s.estimate.vram_bytes, strict=True)),
                host_bytes=s.estimate.ram_bytes or 0,
                unknown=False,
                processes=1 if s.placement.gpus and self.backend == "llama-box" else 0,
            )
            for s in self.shares
        }


def combined_node(views: Sequence[Node]) -> Node:
    """One node made of `views` (each as its ledger leaves it): their GPUs in member order and
    the sum of their host memory; the first view's CPU (the primary's) runs the host part."""
    first = views[0]
    gpus = [
        g.model_copy(update={"index": i})
        for i, g in enumerate(g for view in views for g in view.spec.gpus)
    ]
    available = sum(_host(v) for v in views)
    memory = first.spec.memory.model_copy(
        update={"total_bytes": max(1, available), "available_bytes": available}
    )
    spec = first.spec.model_copy(update={"gpus": gpus, "memory": memory, "disk": None})
    return first.model_copy(update={"spec": spec})


def _host(node: Node) -> int:
    memory = node.spec.memory
    return memory.available_bytes if memory.available_bytes is not None else memory.total_bytes


def split(  # noqa: PLR0917
    deployment: str,
    backend: str,
    placement: Placement,
    estimate: Estimate,
    views: Sequence[Node],
    layers: int | None,
) -> GroupPlacement | None:
    """Each member's part of a placement made on `combined_node(views)`; None when a member
    would hold nothing (then the group does not need it: fewer nodes do)."""
    vram = dict(zip(placement.gpus, estimate.vram_bytes, strict=False))
    host_total = estimate.ram_bytes or 0
    left = [_host(v) for v in views]
    if placement.mode == "cpu":
        # Layers in host memory: each member's CPU takes a part in proportion to its room.
        room = sum(left) or 1
        hosts = [host_total * h // room for h in left]
        hosts[0] += host_total - sum(hosts)  # the rounding stays with the primary
    else:
        # On GPUs, what stays in host memory (embeddings, layers not offloaded) is the
        # primary's: llama.cpp runs its CPU part there.
        if host_total > left[0]:
            return None
        hosts = [host_total] + [0] * (len(views) - 1)
    total = sum(vram.values()) + host_total
    if total <= 0:
        return None
    shares = []
    for i, view in enumerate(views):
        mine = [g.uuid for g in view.spec.gpus if g.uuid in vram]
        held = sum(vram[u] for u in mine) + hosts[i]
        if held <= 0:
            return None
        role: Role = "primary" if i == 0 else "worker"
        fraction = held / total
        mode = (placement.mode if role == "primary" else "gpu") if mine else "cpu"
        part = Placement(
            mode=mode,
            gpus=mine,
            gpu_layers=placement.gpu_layers if role == "primary" else None,
            layers_total=placement.layers_total or layers,
            tensor_parallel_size=len(mine) if backend == "vllm" else None,
            context_length=placement.context_length,
            gpu_memory_utilization=placement.gpu_memory_utilization,
            threads=placement.threads if role == "primary" else None,
            reason=f"group of {len(views)} nodes: {role}, {fraction:.0%} of the model "
            f"({placement.reason})",
        )
        part_estimate = Estimate(
            vram_bytes=[vram[u] for u in mine],
            ram_bytes=hosts[i],
            decode_tokens_per_s=estimate.decode_tokens_per_s if role == "primary" else None,
        )
        shares.append(Share(view.metadata.name, role, part, part_estimate))
    return GroupPlacement(deployment, backend, tuple(shares), layers)


def member_ports(
    groups: Sequence[GroupPlacement],
    port_range: tuple[int, int],
    previous: Mapping[tuple[str, str], int] | None = None,
) -> list[GroupPlacement]:
    """`groups` with a port for each member, distinct inside each group (members in the host's
    network namespace may share a host, and the same address on it) and on each node.

    A member keeps the port the previous fleet plan gave it (by deployment and node) while that
    is still free; else ports are probed upward from a hash of the deployment's name, the
    primary first, so a group's ports are the same on every plan of the same repository.
    vLLM's primary also holds its port + 1, the followers' `--master-port`.
    """
    low, high = port_range
    size = high - low + 1
    on_node: dict[str, set[int]] = {}
    out = []
    for placed in sorted(groups, key=lambda g: g.deployment):
        in_group: set[int] = set()
        start = zlib.crc32(placed.deployment.encode()) % size
        shares = []
        for share in placed.shares:
            taken = in_group | on_node.setdefault(share.node, set())
            master = placed.backend == "vllm" and share.role == "primary"

            def free(port: int, taken: set[int] = taken, master: bool = master) -> bool:
                wanted = {port, port + 1} if master else {port}
                return wanted <= set(range(low, high + 1)) and not wanted & taken

            kept = (previous or {}).get((placed.deployment, share.node))
            port = kept if kept is not None and free(kept) else None
            for step in range(size if port is None else 0):
                if free(low + (start + step) % size):
                    port = low + (start + step) % size
                    break
            if port is None:
                raise MaasError.single(
                    "ports",
                    f"port range {low}-{high} is exhausted while allocating the members of "
                    f"group '{placed.deployment}'",
                    hints=("widen the repository's port_range in maas.yaml",),
                )
            held = {port, port + 1} if master else {port}
            in_group |= held
            on_node[share.node] |= held
            shares.append(dataclasses.replace(share, port=port))
        out.append(dataclasses.replace(placed, shares=tuple(shares)))
    return out


def vllm_even(views: Sequence[Node]) -> bool:
    """vLLM multi-node runs the same tensor-parallel size on every node."""
    return len({len(v.spec.gpus) for v in views}) == 1 and bool(views[0].spec.gpus)


def link(
    plans: Mapping[str, Plan],
    groups: Sequence[GroupPlacement],
    nodes: Mapping[str, Node],
    cache_dir: str,
) -> dict[str, Plan]:
    """The plans with every group's members wired together (ports are known only now)."""
    out = dict(plans)
    for placed in groups:
        members = []
        for share in placed.shares:
            planned = out[share.node].deployment(placed.deployment)
            assert planned is not None, "compile_plan renders every share it is given"
            address = nodes[share.node].spec.rpc_address
            assert address is not None, "find_group takes only nodes with an rpc_address"
            members.append(
                GroupMember(
                    node=share.node,
                    role=share.role,
                    address=address,
                    port=planned.port,
                    share=round(_fraction(placed, share), 4),
                    devices=_devices(placed.backend, share),
                )
            )
        for share in placed.shares:
            plan = out[share.node]
            planned = plan.deployment(placed.deployment)
            assert planned is not None
            group = Group(name=placed.deployment, role=share.role, node=share.node, members=members)
            wired = wire(planned, group, share, placed.layers, cache_dir)
            deployments = [wired if d.name == wired.name else d for d in plan.deployments]
            out[share.node] = plan.model_copy(update={"deployments": deployments})
    return out


def wire(
    planned: PlanDeployment, group: Group, share: Share, layers: int | None, cache_dir: str
) -> PlanDeployment:
    """A member as its node rendered it (its cache, its model path) told its part of `group`.

    An agent in pull mode wires its own rendering with the group the fleet formed, so that what
    is its node's own (the cache folder) is not the repository's."""
    wired = (
        _llama_member(planned, group, share, layers, cache_dir)
        if planned.backend == "llama-box"
        else _vllm_member(planned, group, share)
    )
    return wired.model_copy(update={"spec_hash": spec_hash(wired)})


def _fraction(placed: GroupPlacement, share: Share) -> float:
    def held(s: Share) -> int:
        return sum(s.estimate.vram_bytes) + (s.estimate.ram_bytes or 0)

    total = sum(held(s) for s in placed.shares) or 1
    return held(share) / total


def _devices(backend: str, share: Share) -> list[str]:
    """The device names a member's process sees: its GPUs are renumbered from 0 inside the
    container (only they are handed to it); a CPU-only llama.cpp worker offers its CPU."""
    if backend == "vllm":
        return [f"cuda:{i}" for i in range(len(share.placement.gpus))]
    if share.placement.gpus:
        return [f"CUDA{i}" for i in range(len(share.placement.gpus))]
    return ["CPU"] if share.role == "worker" else []


def _without(command: Sequence[str], flags: Sequence[str]) -> list[str]:
    """`command` less each of `flags` and its value."""
    out: list[str] = []
    skip = False
    for arg in command:
        if skip:
            skip = False
            continue
        if arg in flags:
            skip = True
            continue
        out.append(arg)
    return out


def _member_security(planned: PlanDeployment) -> Security:
    return planned.security.model_copy(update={"host_network": True})


def _llama_member(
    planned: PlanDeployment, group: Group, share: Share, layers: int | None, cache_dir: str
) -> PlanDeployment:
    me = group.me(share.node)
    if share.role == "worker":
        command = ["-H", me.address, "-p", str(me.port), "-c"]
        if share.placement.gpus:
            command += ["-d", ",".join(me.devices)]
        if planned.placement.threads:
            command += ["-t", str(planned.placement.threads)]
        # -c caches received tensors under fs_get_cache_directory() (common/common.cpp), which
        # LLAMA_CACHE names: the deployment's own writable folder. A worker never reads the
        # model file (the primary sends the tensors), so nothing else is mounted.
        cache = work_dir(cache_dir, planned.name)
        env = {**planned.env, "LLAMA_CACHE": cache}
        return planned.model_copy(
            update={
                "entrypoint": [RPC_SERVER],
                "command": command,
                "env": dict(sorted(env.items())),
                "mounts": [Mount(source=cache, target=cache)],
                "health": HealthCheck(
                    paths=[],
                    startup_timeout_s=planned.health.startup_timeout_s,
                    period_s=planned.health.period_s,
                ),
                "model": planned.model.model_copy(update={"download": False, "fetched_by": "none"}),
                "aliases": [],
                "generic_proxy": False,
                "security": _member_security(planned),
                "group": group,
            }
        )
    # The primary: workers' devices first, in --rpc order, then its own GPUs; the proportions
    # are the bytes each device holds (llama.cpp normalizes --tensor-split).
    parts: list[float] = []
    for worker in group.workers:
        count = max(1, len(worker.devices))
        parts += [worker.share / count] * count
    held = sum(share.estimate.vram_bytes) + (share.estimate.ram_bytes or 0) or 1
    parts += [me.share * b / held for b in share.estimate.vram_bytes]
    command = _without(planned.command, LLAMA_GROUP_FLAGS)
    if share.placement.mode == "cpu" and layers:
        # Only the primary's CPU is not a device: it keeps the layers not offloaded.
        offloaded = str(layers - round(layers * me.share))
    elif share.placement.gpu_layers is not None and share.placement.mode == "hybrid":
        offloaded = str(share.placement.gpu_layers)
    else:
        offloaded = "999"
    command += ["--host", "127.0.0.1", "--n-gpu-layers", offloaded]
    command += ["--tensor-split", ",".join(f"{p:.3g}" for p in parts)]
    command += ["--rpc", ",".join(f"{w.address}:{w.port}" for w in group.workers)]
    return planned.model_copy(
        update={"command": command, "security": _member_security(planned), "group": group}
    )


def _vllm_member(planned: PlanDeployment, group: Group, share: Share) -> PlanDeployment:
    rank = [m.node for m in group.members].index(share.node)
    primary = group.primary
    command = _without(planned.command, VLLM_GROUP_FLAGS)
    command += ["--host", "127.0.0.1" if rank == 0 else group.me(share.node).address]
    # ParallelConfig.distributed_executor_backend: multi-node "mp" needs nnodes set.
    command += ["--distributed-executor-backend", "mp"]
    command += ["--pipeline-parallel-size", str(len(group.members))]
    command += ["--nnodes", str(len(group.members)), "--node-rank", str(rank)]
    command += ["--master-addr", primary.address, "--master-port", str(primary.port + 1)]
    if rank:
        command.append("--headless")
    update: dict[str, object] = {
        "command": command,
        "security": _member_security(planned),
        "group": group,
    }
    if rank:
        update |= {
            "aliases": [],
            "generic_proxy": False,
            "health": HealthCheck(
                paths=[],
                startup_timeout_s=planned.health.startup_timeout_s,
                period_s=planned.health.period_s,
            ),
        }
    return planned.model_copy(update=update)
