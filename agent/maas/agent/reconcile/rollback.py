"""Whether a roll-back's previous version still fits the GPUs (issue 20).

The version a failed roll-out goes back to was placed when it was applied; since then other
deployments may have been placed on its GPUs, or a GPU may have gone. The live plan's totals
(compiled against the live probe, where memory held by this node's containers counts as free)
say what every other deployment takes on each GPU now; the previous version's own estimate says
what it needs there. Pure: the reconciler asks before it brings the previous version back.
"""

from __future__ import annotations

from maas.compiler import Plan, PlanDeployment

GIB = 1 << 30


def rollback_short(plan: Plan, previous: PlanDeployment) -> str | None:
    """Why `previous` (an earlier version of a deployment of `plan`) does not fit the GPUs now
    beside the plan's other deployments; None where it fits (or holds no GPU)."""
    totals = {t.uuid: t for t in plan.totals if t.uuid}
    per_gpu = dict(zip(previous.placement.gpus, previous.estimate.vram_bytes, strict=False))
    for uuid in previous.placement.gpus:
        total = totals.get(uuid)
        if total is None:
            return f"its GPU {uuid} is no longer on the node"
        need = per_gpu.get(uuid, 0) * previous.replicas
        others = total.allocated_bytes - total.by_deployment.get(previous.name, 0)
        left = total.usable_bytes - others
        if need > left:
            return (
                f"it needs {need / GIB:.1f} GiB on {total.device} and "
                f"{max(0, left) / GIB:.1f} GiB is left there beside the other deployments"
            )
    return None
