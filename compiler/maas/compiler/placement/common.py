"""What every placement rule shares: the result value, host-memory checks, NUMA pinning, speeds.

NUMA: a placement that runs on the CPU on a host with several NUMA nodes is pinned to one node
(cpuset CPUs and memory) with the backend's threads set to that node's physical cores: decode is
memory-bound, and remote memory plus cross-socket threads made DeepSeek-R1 decode at 8.4 instead of
13.7 tok/s on two EPYC 9554 sockets.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from maas.compiler.diagnostics import Diagnostic, Position
from maas.compiler.documents import Loaded
from maas.compiler.models import Deployment, DeploymentBody, Gpu, Node, NumaNode
from maas.compiler.plan import Estimate, Placement, ReplicaCpus
from maas.compiler.units import gib

# Decode speed: seconds per token = bytes read on each device / its effective bandwidth + a fixed
# time per layer (kernel launches, synchronisation). Share of the theoretical GPU bandwidth that
# llama.cpp's decode reaches per memory class and the fixed time of today's build: the fit on all
# 42 points (published llama-bench figures of 13 GPUs, our H100 and our H200 at two model sizes)
# of bench/gpu/fit_speed.py, data with sources in bench/data/decode-published.csv; held out by
# GPU in three folds its median |error| is 4.9% (GDDR 4.6%, HBM 8.4%), bench/results/
# speed-model.md (2026-12-02). CPU share of the node's copy bandwidth measured on the H100 machine
# (bench/results/gpu-placement.md).
GPU_EFFICIENCY = {"hbm": 0.682, "gddr": 0.949}
FIXED_S_PER_LAYER = 49.7e-6
CPU_EFFICIENCY = 0.58
# Theoretical bandwidth of common cards (vendor data sheets), for GPUs whose NVML readings lack
# bus width or memory clock; the memory class also comes from here when the name is known.
GPU_MEMORY: tuple[tuple[re.Pattern[str], float, str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), bandwidth, kind)
    for pattern, bandwidth, kind in (
        (r"H200", 4.8e12, "hbm"),
        (r"H100.*(PCIe|NVL)", 2.039e12, "hbm"),
        (r"H100|H800", 3.352e12, "hbm"),
        (r"A100.*40GB", 1.555e12, "hbm"),
        (r"A100.*PCIe", 1.935e12, "hbm"),
        (r"A100|A800", 2.039e12, "hbm"),
        (r"V100", 9.0e11, "hbm"),
        (r"MI300X", 5.3e12, "hbm"),
        (r"MI250", 3.277e12, "hbm"),
        (r"MI210", 1.638e12, "hbm"),
        (r"L40", 8.64e11, "gddr"),
        (r"\bL4\b", 3.0e11, "gddr"),
        (r"\bA40\b", 6.96e11, "gddr"),
        (r"\bA10\b", 6.0e11, "gddr"),
        (r"RTX 6000 Ada", 9.6e11, "gddr"),
        (r"RTX A6000", 7.68e11, "gddr"),
        (r"RTX 5000 Ada", 5.76e11, "gddr"),
        (r"RTX 4000 Ada", 3.6e11, "gddr"),
        (r"RTX PRO 6000", 1.792e12, "gddr"),
        (r"5090", 1.792e12, "gddr"),
        (r"4090", 1.008e12, "gddr"),
        (r"4080", 7.168e11, "gddr"),
        (r"3090", 9.36e11, "gddr"),
        (r"P40", 3.47e11, "gddr"),
        (r"\bT4\b", 3.2e11, "gddr"),
        (r"7900 XTX", 9.6e11, "gddr"),
    )
)
HBM_MIN_BUS_BITS = 1024  # HBM stacks are 1024 bits wide; GDDR buses are 64-512


@dataclass(frozen=True)
class PlacementResult:
    placement: Placement | None
    estimate: Estimate
    diagnostics: list[Diagnostic]


@dataclass(frozen=True)
class Pinning:
    cpuset: str | None
    mems: str | None
    threads: int
    reason: str
    # (cpuset, mems) per replica, in replica order, where each replica has a NUMA node of its own
    per_replica: tuple[tuple[str, str], ...] = ()

    @property
    def pinned(self) -> bool:
        return self.mems is not None or bool(self.per_replica)


def spec_position(deployment: Loaded[Deployment], key: str) -> Position:
    doc = deployment.doc
    spec = doc.get(("spec",)) or {}
    return doc.at(("spec", key) if key in spec else ("metadata", "name"))


def allows_cpu(spec: DeploymentBody) -> bool:
    """Whether the deployment may run (partly) on the CPU: offload allowed or CPU only asked."""
    return spec.allow_cpu_offload or spec.gpus == "none"


def host_memory(node: Node) -> int:
    memory = node.spec.memory
    return memory.available_bytes if memory.available_bytes is not None else memory.total_bytes


def ram_problem(deployment: Loaded[Deployment], node: Node, need: int) -> Diagnostic | None:
    have = host_memory(node)
    if need <= have:
        return None
    return Diagnostic(
        "does-not-fit",
        f"'{deployment.model.metadata.name}' needs {gib(need)} of host memory for its CPU part; "
        f"node '{node.metadata.name}' has {gib(have)} available",
        spec_position(deployment, "allow_cpu_offload"),
        hints=("use a smaller quantization or a shorter context_length",),
    )


def _cpu_count(cpus: str) -> int:
    total = 0
    for part in cpus.split(","):
        low, _, high = part.partition("-")
        total += int(high or low) - int(low) + 1
    return total


def cpu_pinning(
    node: Node, host_bytes: int, gpus: Sequence[Gpu] = (), replicas: int = 1
) -> Pinning:
    """One NUMA node for CPU work when the host has several and the node holds it: the node the
    placement's GPU hangs off (its activations and copies of CPU weights cross PCIe from there),
    else the one with most memory. Threads: that node's physical cores.

    Replicas: the seed's rule "dual-socket only when the model fits twice" (issue 13, item 5), as
    an expert lays it out: one replica per socket, each pinned to its own node with all of that
    node's physical cores, where the nodes hold one CPU part each (replica 0 on the GPU's node;
    more replicas than nodes go round in the same order, dividing a node's cores). Where they do
    not, the replicas share one node that holds them all, each with its share of the cores; else
    they are not pinned and the host's cores are divided among them, as is a CPU part larger
    than one node."""
    cpu = node.spec.cpu
    numa = cpu.numa_nodes
    replicas = max(1, replicas)
    if len(numa) < 2:
        return Pinning(None, None, cpu.cores, "")
    smt = max(1, cpu.threads // cpu.cores)

    def room(n: NumaNode) -> int:
        # the host memory a replica sees is already its share (allocation.Ledger.view)
        if n.memory_bytes is not None:
            return n.memory_bytes
        return host_memory(node) * replicas // len(numa)

    local = {g.numa_node for g in gpus if g.numa_node is not None}
    if replicas > 1:
        spread = _one_per_node(numa, local, host_bytes, replicas, room)
        if spread is not None:
            return _per_replica(spread, smt, local)
    need = host_bytes * replicas
    near = [n for n in numa if n.id in local and room(n) >= need]
    best = near[0] if len(local) == 1 and near else max(numa, key=lambda n: (room(n), -n.id))
    if room(best) < need:
        share = max(1, cpu.cores // replicas)
        if replicas > 1 and room(best) >= host_bytes:
            why = (
                f"; not pinned, {replicas} replicas across the {len(numa)} NUMA nodes ({share} "
                f"cores each): one node holds the CPU part once, not {replicas} times"
            )
        else:
            why = "; not pinned: the CPU part exceeds one NUMA node"
        return Pinning(None, None, share, why)
    threads = max(1, _cpu_count(best.cpus) // smt // replicas)
    why = ", the GPU's" if near and best is near[0] else ""
    each = f"{threads} cores"
    if replicas > 1:
        each = f"{threads} cores each: it holds the CPU part of all {replicas} replicas"
    return Pinning(
        best.cpus, str(best.id), threads, f"; CPU work pinned to NUMA node {best.id}{why} ({each})"
    )


def replica_cpus(pin: Pinning) -> list[ReplicaCpus] | None:
    """The plan's per-replica cpusets, where each replica has a NUMA node of its own."""
    if not pin.per_replica:
        return None
    return [ReplicaCpus(cpuset=cpus, cpuset_mems=mems) for cpus, mems in pin.per_replica]


def _one_per_node(
    numa: Sequence[NumaNode],
    local: set[int],
    host_bytes: int,
    replicas: int,
    room: Callable[[NumaNode], int],
) -> list[NumaNode] | None:
    """Each replica's NUMA node, going round the nodes (the GPU's first, then by memory), or
    None where a node would not hold the CPU parts of the replicas it gets."""
    order = sorted(numa, key=lambda n: (n.id not in local, -room(n), n.id))
    used = order[: min(replicas, len(order))]
    nodes = [used[i % len(used)] for i in range(replicas)]
    if any(room(n) < host_bytes * nodes.count(n) for n in used):
        return None
    return nodes


def _per_replica(nodes: list[NumaNode], smt: int, local: set[int]) -> Pinning:
    threads = max(1, min(_cpu_count(n.cpus) // smt // nodes.count(n) for n in nodes))
    gpu = {n.id: " (the GPU's)" if n.id in local else "" for n in nodes}
    placed = ", ".join(f"replica {i} on NUMA node {n.id}{gpu[n.id]}" for i, n in enumerate(nodes))
    return Pinning(
        None,
        None,
        threads,
        f"; one replica per NUMA node: {placed} ({threads} cores each; each node holds the CPU "
        f"part of its replicas)",
        tuple((n.cpus, str(n.id)) for n in nodes),
    )


def gpu_memory(gpu: Gpu) -> tuple[float | None, str]:
    """(theoretical bandwidth, memory class) of a GPU: NVML's bus width x memory clock x 2 where
    the probe read them, else the name table; the class from the name, else the bus width."""
    known = next(((bw, kind) for pattern, bw, kind in GPU_MEMORY if pattern.search(gpu.name)), None)
    raw: float | None = gpu.memory_bandwidth_bytes_per_s
    if raw is None and gpu.memory_bus_width_bits and gpu.memory_clock_max_mhz:
        raw = gpu.memory_bus_width_bits // 8 * gpu.memory_clock_max_mhz * 2_000_000
    if known is not None:
        return (raw or known[0]), known[1]
    wide = (gpu.memory_bus_width_bits or 0) >= HBM_MIN_BUS_BITS
    return raw, "hbm" if wide else "gddr"


def gpu_bandwidth(gpus: tuple[Gpu, ...]) -> float | None:
    """Effective decode bandwidth of the slowest GPU used."""
    values = []
    for gpu in gpus:
        raw, kind = gpu_memory(gpu)
        if raw is None:
            return None
        values.append(raw * GPU_EFFICIENCY[kind])
    return min(values) if values else None


def cpu_bandwidth(node: Node, pinning: Pinning) -> float | None:
    raw = node.spec.cpu.memory_bandwidth_bytes_per_s
    if raw is None:
        return None
    numa = len(node.spec.cpu.numa_nodes)
    share = raw / numa if pinning.pinned and numa > 1 else float(raw)
    return share * CPU_EFFICIENCY
