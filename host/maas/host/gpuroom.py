"""GPU room on the live host: memory held by processes that are not this node's containers.

The agent plans against what is really free for its own containers: each GPU's free memory plus
what its own containers hold (NVML's per-process usage, each process mapped to a container
through its cgroup), so its running replicas never shrink the node it plans on, while memory held
by anything else (a foreign process) is subtracted. Before a replica is started, `blocked` checks
that the plan still fits beside what foreign processes hold now: if not, the replica waits as
pending with the reason instead of failing to load and restarting in a loop.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from maas.compiler import GIB, Node, Plan


@dataclass(frozen=True)
class ForeignProcess:
    """A process holding GPU memory that is not one of this node's containers."""

    gpu_uuid: str
    gpu_index: int
    pid: int
    name: str
    used_bytes: int

    def as_dict(self) -> dict[str, object]:
        return {
            "gpu": self.gpu_index,
            "uuid": self.gpu_uuid,
            "pid": self.pid,
            "name": self.name,
            "used_bytes": self.used_bytes,
        }


def split_processes(
    gpus: Sequence[Mapping[str, object]],
    own_pids: Collection[int],
    names: Mapping[int, str],
) -> tuple[dict[str, int], list[ForeignProcess]]:
    """NVML readings of each GPU -> (bytes this node's containers hold per GPU UUID, the
    foreign processes). A process whose usage NVML cannot tell counts as 0 bytes."""
    ours: dict[str, int] = {}
    foreign: list[ForeignProcess] = []
    for gpu in gpus:
        uuid, index = str(gpu["uuid"]), int(str(gpu["index"]))
        for process in gpu.get("processes") or []:  # type: ignore[attr-defined]
            pid, used = int(process["pid"]), int(process.get("used_bytes") or 0)
            if pid in own_pids:
                ours[uuid] = ours.get(uuid, 0) + used
            else:
                foreign.append(ForeignProcess(uuid, index, pid, names.get(pid, "?"), used))
    return ours, foreign


def blocked(
    plan: Plan, node: Node, foreign: Sequence[ForeignProcess], margin: int
) -> dict[str, str]:
    """deployment name -> why its replicas must not start now: on one of its GPUs, what the
    plan puts there no longer fits beside what foreign processes hold."""
    totals = {t.uuid: t for t in plan.totals if t.uuid}
    gpus = {g.uuid: g for g in node.spec.gpus}
    short: dict[str, str] = {}
    for uuid, total in totals.items():
        gpu = gpus.get(uuid)
        held = [p for p in foreign if p.gpu_uuid == uuid]
        if gpu is None or not held:
            continue
        room = gpu.memory_total_bytes - sum(p.used_bytes for p in held) - margin
        if total.allocated_bytes <= room:
            continue
        who = ", ".join(f"pid {p.pid} ({p.name}) {p.used_bytes / GIB:.1f} GiB" for p in held)
        short[uuid] = (
            f"waiting for GPU {gpu.index}: processes outside this node's containers hold memory "
            f"({who}); the plan needs {total.allocated_bytes / GIB:.1f} GiB there and "
            f"{max(0, room) / GIB:.1f} GiB is left beside them"
        )
    return {
        d.name: short[uuid] for d in plan.deployments for uuid in d.placement.gpus if uuid in short
    }
