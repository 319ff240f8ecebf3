"""The node's ledger: what each GPU and the host's memory can still give, and who holds the rest.

`compile_plan` places the deployments of a node one at a time against what the ledger says is
left, so that the node's plan fits as a whole: every placement is charged (all its replicas) before
the next one is chosen. Usable memory is a GPU's free memory minus the per-GPU margin, and the
host's available memory. The ledger also gives the plan's per-device totals and, when something
does not fit, names the deployments that hold the memory.

On-demand deployments of one group take turns: the group holds on each device the largest of its
members' needs (bytes and CUDA contexts alike), not their sum, and a member is placed against what
is left beside the other deployments and groups. The agent keeps the members running at once
within that reservation (maas.agent.reconcile.ondemand).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from maas.compiler.models import Gpu, Node
from maas.compiler.placement.common import host_memory
from maas.compiler.plan import DeviceTotal, Estimate, Placement
from maas.compiler.units import gib

HOST = "host"
# A llama.cpp process's CUDA context and runtime allocations, outside its model, KV and compute
# buffers (llama-fit-params' "unaccounted"): 470-473 MiB per process measured on an H200 with
# CUDA 13 (bench/results/gpu-node-plan.md), rounded up. The per-GPU margin holds the first
# process's; every further process on the same GPU is charged this.
PROCESS_CONTEXT_BYTES = 512 << 20


@dataclass(frozen=True)
class Charge:
    """What one deployment holds, all replicas together: bytes per GPU UUID and host bytes."""

    deployment: str
    gpu_bytes: dict[str, int]
    host_bytes: int
    unknown: bool  # its need could not be estimated: it holds only what it declared
    processes: int = 0  # on each of its GPUs, whose CUDA context is not in gpu_bytes
    group: str | None = None  # on-demand members of one group take turns


def reserved(charges: Sequence[Charge], need: Callable[[Charge], int]) -> int:
    """What `charges` hold of one quantity, each group counted once at its largest member."""
    alone = sum(need(c) for c in charges if c.group is None)
    groups: dict[str, int] = {}
    for c in charges:
        if c.group is not None:
            groups[c.group] = max(groups.get(c.group, 0), need(c))
    return alone + sum(groups.values())


def charge_of(
    name: str,
    placement: Placement,
    estimate: Estimate,
    replicas: int,
    *,
    unknown: bool,
    processes: int = 0,
    group: str | None = None,
) -> Charge:
    per_gpu = dict(zip(placement.gpus, estimate.vram_bytes, strict=False))
    return Charge(
        deployment=name,
        gpu_bytes={uuid: per_gpu.get(uuid, 0) * replicas for uuid in placement.gpus},
        host_bytes=(estimate.ram_bytes or 0) * replicas,
        unknown=unknown,
        processes=processes if placement.gpus else 0,
        group=group,
    )


@dataclass
class Ledger:
    node: Node
    margin: int
    charges: list[Charge] = field(default_factory=list)

    def gpu_usable(self, gpu: Gpu) -> int:
        return max(0, gpu.free_bytes - self.margin)

    def host_usable(self) -> int:
        return host_memory(self.node)

    def _beside(self, group: str | None) -> list[Charge]:
        """The charges a member of `group` is placed beside: all but its group's."""
        return [c for c in self.charges if group is None or c.group != group]

    def processes(self, uuid: str, group: str | None = None) -> int:
        on = [c for c in self._beside(group) if uuid in c.gpu_bytes]
        return reserved(on, lambda c: c.processes)

    def gpu_overhead(self, uuid: str, group: str | None = None) -> int:
        """The CUDA contexts of the processes on the GPU beyond the first (the margin's)."""
        return PROCESS_CONTEXT_BYTES * max(0, self.processes(uuid, group) - 1)

    def gpu_used(self, uuid: str, group: str | None = None) -> int:
        held = reserved(self._beside(group), lambda c: c.gpu_bytes.get(uuid, 0))
        return held + self.gpu_overhead(uuid, group)

    def host_used(self, group: str | None = None) -> int:
        return reserved(self._beside(group), lambda c: c.host_bytes)

    def gpu_left(self, gpu: Gpu, group: str | None = None) -> int:
        return max(0, self.gpu_usable(gpu) - self.gpu_used(gpu.uuid, group))

    def host_left(self, group: str | None = None) -> int:
        return max(0, self.host_usable() - self.host_used(group))

    def view(
        self, gpus: Sequence[Gpu], replicas: int, processes: int = 0, group: str | None = None
    ) -> Node:
        """The node as one replica of the next deployment sees it: only `gpus`, each with what is
        left of it shared by the replicas (plus the margin, which placement subtracts again), and
        the host memory that is left, shared the same way. `processes` is how many processes of
        it would add a CUDA context to each GPU outside their estimate. A member of `group` sees
        what the other deployments and groups leave: it takes turns with its group."""
        share = max(1, replicas)

        def free(g: Gpu) -> int:
            first = 0 if self.processes(g.uuid, group) else 1  # the margin holds the first
            contexts = PROCESS_CONTEXT_BYTES * max(0, processes - first)
            return max(0, self.gpu_left(g, group) - contexts) // share + self.margin

        seen = [g.model_copy(update={"memory_free_bytes": free(g)}) for g in gpus]
        memory = self.node.spec.memory.model_copy(
            update={"available_bytes": self.host_left(group) // share}
        )
        spec = self.node.spec.model_copy(update={"gpus": seen, "memory": memory})
        return self.node.model_copy(update={"spec": spec})

    def holders(self, uuids: Sequence[str], most: int = 5) -> list[str]:
        """'name (X GiB on GPU i)' for the `most` deployments holding the most memory on `uuids`
        or the host, largest first, and how many more there are."""
        index = {g.uuid: g.index for g in self.node.spec.gpus}
        found = []
        for c in self.charges:
            held = {u: b for u, b in c.gpu_bytes.items() if b and u in uuids}
            parts = [f"{gib(b)} on GPU {index[u]}" for u, b in held.items()]
            if c.host_bytes:
                parts.append(f"{gib(c.host_bytes)} of host memory")
            if parts:
                size = sum(held.values()) + c.host_bytes
                found.append((-size, c.deployment, f"{c.deployment} ({', '.join(parts)})"))
        found.sort()
        named = [text for _, _, text in found[:most]]
        return named + ([f"{len(found) - most} more"] if len(found) > most else [])

    def totals(self) -> list[DeviceTotal]:
        rows = []
        for gpu in sorted(self.node.spec.gpus, key=lambda g: g.index):
            held = [c for c in self.charges if gpu.uuid in c.gpu_bytes]
            every = sum(c.processes for c in held)
            rows.append(
                _total(
                    f"gpu{gpu.index}",
                    gpu.name,
                    self.gpu_usable(gpu),
                    held,
                    _on_gpu(gpu.uuid),
                    uuid=gpu.uuid,
                    overhead=self.gpu_overhead(gpu.uuid),
                    overhead_all=PROCESS_CONTEXT_BYTES * max(0, every - 1),
                )
            )
        held = [c for c in self.charges if c.host_bytes or (c.unknown and not c.gpu_bytes)]
        rows.append(_total(HOST, "host memory", self.host_usable(), held, lambda c: c.host_bytes))
        return rows


def _on_gpu(uuid: str) -> Callable[[Charge], int]:
    return lambda c: c.gpu_bytes.get(uuid, 0)


def _total(
    device: str,
    name: str,
    usable: int,
    held: list[Charge],
    need: Callable[[Charge], int],
    *,
    uuid: str | None = None,
    overhead: int = 0,
    overhead_all: int = 0,
) -> DeviceTotal:
    allocated = reserved(held, need) + overhead
    groups: dict[str, int] = {}
    for c in held:
        if c.group is not None:
            groups[c.group] = max(groups.get(c.group, 0), need(c))
    return DeviceTotal(
        device=device,
        uuid=uuid,
        name=name,
        usable_bytes=usable,
        allocated_bytes=allocated,
        all_at_once_bytes=sum(need(c) for c in held) + overhead_all,
        groups=dict(sorted(groups.items())),
        headroom_bytes=usable - allocated,
        process_overhead_bytes=overhead,
        by_deployment=dict(sorted((c.deployment, need(c)) for c in held)),
        unknown_need=sorted(c.deployment for c in held if c.unknown),
    )
