"""What every placement rule shares: the result value, host-memory checks, NUMA pinning, speeds.

NUMA: a placement that runs on the CPU on a host with several NUMA nodes is pinned to one node
(cpuset CPUs and memory) with the backend's threads set to that node's physical cores: decode is
memory-bound, and remote memory plus cross-socket threads made DeepSeek-R1 decode at 8.4 instead of
13.7 tok/s on two EPYC 9554 sockets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from maas.compiler.diagnostics import Diagnostic, Position
from maas.compiler.documents import Loaded
from maas.compiler.models import Deployment, DeploymentBody, Gpu, Node, NumaNode
from maas.compiler.plan import Estimate, Placement

GIB = 1 << 30
# Share of the theoretical GPU bandwidth (bus width x memory clock x 2) that llama.cpp's decode
# kernels reach, and share of the node's CPU bandwidth (a copy on all cores, read + write) that its
# CPU decode reaches; both measured on the H100 machine (bench/results/gpu-placement.md).
GPU_EFFICIENCY = 0.39
CPU_EFFICIENCY = 0.58


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


def gib(value: float) -> str:
    return f"{value / GIB:.1f} GiB"


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


def cpu_pinning(node: Node, host_bytes: int, gpus: Sequence[Gpu] = ()) -> Pinning:
    """One NUMA node for CPU work when the host has several and the CPU part fits in its memory:
    the node the placement's GPU hangs off (its activations and copies of CPU weights cross
    PCIe from there), else the one with most memory. Threads: that node's physical cores."""
    cpu = node.spec.cpu
    numa = cpu.numa_nodes
    if len(numa) < 2:
        return Pinning(None, None, cpu.cores, "")
    smt = max(1, cpu.threads // cpu.cores)

    def room(n: NumaNode) -> int:
        return n.memory_bytes if n.memory_bytes is not None else host_memory(node) // len(numa)

    local = {g.numa_node for g in gpus if g.numa_node is not None}
    near = [n for n in numa if n.id in local and room(n) >= host_bytes]
    best = near[0] if len(local) == 1 and near else max(numa, key=lambda n: (room(n), -n.id))
    if room(best) < host_bytes:
        return Pinning(None, None, cpu.cores, "; not pinned: the CPU part exceeds one NUMA node")
    threads = max(1, _cpu_count(best.cpus) // smt)
    why = ", the GPU's" if near and best is near[0] else ""
    return Pinning(
        best.cpus,
        str(best.id),
        threads,
        f"; CPU work pinned to NUMA node {best.id}{why} ({threads} cores)",
    )


def gpu_bandwidth(gpus: tuple[Gpu, ...]) -> float | None:
    """Effective decode bandwidth of the slowest GPU used, from NVML facts in the node profile."""
    values = []
    for gpu in gpus:
        raw = gpu.memory_bandwidth_bytes_per_s
        if raw is None and gpu.memory_bus_width_bits and gpu.memory_clock_max_mhz:
            raw = gpu.memory_bus_width_bits // 8 * gpu.memory_clock_max_mhz * 2_000_000
        if raw is None:
            return None
        values.append(raw * GPU_EFFICIENCY)
    return min(values) if values else None


def cpu_bandwidth(node: Node, pinning: Pinning) -> float | None:
    raw = node.spec.cpu.memory_bandwidth_bytes_per_s
    if raw is None:
        return None
    numa = len(node.spec.cpu.numa_nodes)
    share = raw / numa if pinning.mems is not None and numa > 1 else float(raw)
    return share * CPU_EFFICIENCY
