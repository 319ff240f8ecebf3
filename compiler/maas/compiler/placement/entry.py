"""Placement: where a deployment runs on a node (gpu, hybrid or cpu), and its estimates.

With model metadata, llama-box deployments are placed by memory estimates (placement_llama) and
vLLM deployments are sized (placement_vllm); a placement that runs on the CPU is pinned to one NUMA
node. Without metadata (custom backends, offline without a cache) the plan still compiles with the
foundation rules (first GPU, or the CPU when allowed) and says that the estimate is unknown.
"""

from __future__ import annotations

from maas.compiler.backends import Backend
from maas.compiler.diagnostics import Diagnostic, Position
from maas.compiler.documents import Loaded
from maas.compiler.metadata import ModelMetadata
from maas.compiler.models import Deployment, Node
from maas.compiler.placement.common import (
    PlacementResult,
    allows_cpu,
    cpu_pinning,
    ram_problem,
    replica_cpus,
    spec_position,
)
from maas.compiler.placement.llama import place_llama_box
from maas.compiler.placement.vllm import place_vllm
from maas.compiler.plan import Estimate, Placement
from maas.compiler.units import GIB, gib

DEFAULT_MARGIN = GIB


def place(
    deployment: Loaded[Deployment],
    backend: Backend,
    node: Node,
    *,
    metadata: ModelMetadata | None = None,
    gpu_margin_bytes: int = DEFAULT_MARGIN,
    gpu_count: int | None = None,
) -> PlacementResult:
    """Place one replica on `node` as the ledger shows it (each GPU's free memory is what is left
    for this deployment); `gpu_count` is the spec's `gpus: N`."""
    if estimated(backend, metadata, node):
        assert metadata is not None
        place_known = place_llama_box if backend.name == "llama-box" else place_vllm
        return place_known(deployment, node, metadata, gpu_margin_bytes, gpu_count)
    return _foundation(deployment, node, metadata, gpu_margin_bytes, gpu_count or 1)


def estimated(backend: Backend, metadata: ModelMetadata | None, node: Node) -> bool:
    """Whether the deployment's memory need is estimated from its model (else it holds only
    what its spec declares in `resources`)."""
    if metadata is None:
        return False
    return backend.name == "llama-box" or (backend.name == "vllm" and bool(node.spec.gpus))


def _foundation(
    deployment: Loaded[Deployment],
    node: Node,
    metadata: ModelMetadata | None,
    margin: int,
    count: int,
) -> PlacementResult:
    """The rule for a deployment whose need is not estimated (custom backends, vox-box, or no
    model metadata): on a GPU node it gets the `count` GPUs with the most memory left, after
    every estimated deployment has been placed, and holds only `resources.gpu_memory_bytes` on
    each (else nothing); without GPUs it runs on the CPU."""
    spec = deployment.model.spec
    unknown = "" if spec.backend == "custom" else "; estimate unknown (no model metadata)"
    if node.spec.gpus:
        return _shared_gpus(deployment, node, margin, count, unknown)
    if not allows_cpu(spec):
        message = (
            f"node '{node.metadata.name}' has no GPU and "
            f"'{deployment.model.metadata.name}' does not allow running on the CPU"
        )
        hint = "set 'allow_cpu_offload: true' (or 'gpus: none') to run it on the CPU"
        position = spec_position(deployment, "allow_cpu_offload")
        return PlacementResult(
            None, Estimate(), [Diagnostic("no-gpu", message, position, hints=(hint,))]
        )
    need = metadata.weight_bytes if metadata is not None else spec.resources.memory_bytes
    estimate = Estimate(ram_bytes=need, details={"weight_bytes": need} if metadata else {})
    problem = ram_problem(deployment, node, need) if need else None
    pin = cpu_pinning(node, need or 0, replicas=spec.replicas)
    why = (
        "CPU only (gpus: none)"
        if spec.gpus == "none"
        else f"node '{node.metadata.name}' has no GPU"
    )
    placement = Placement(
        mode="cpu",
        cpuset=pin.cpuset,
        cpuset_mems=pin.mems,
        replica_cpus=replica_cpus(pin),
        threads=pin.threads,
        reason=f"{why}{pin.reason}{'' if metadata else unknown}",
    )
    return PlacementResult(None if problem else placement, estimate, [problem] if problem else [])


def _shared_gpus(
    deployment: Loaded[Deployment], node: Node, margin: int, count: int, unknown: str
) -> PlacementResult:
    spec = deployment.model.spec
    chosen = sorted(node.spec.gpus, key=lambda g: (-g.free_bytes, g.index))[:count]
    chosen.sort(key=lambda g: g.index)
    declared = spec.resources.gpu_memory_bytes
    which = ", ".join(f"GPU {g.index}" for g in chosen)
    if declared is None:
        held = "reserves none (resources.gpu_memory_bytes would)"
    else:
        held = f"reserves {gib(declared)} each (resources.gpu_memory_bytes)"
        short = [g for g in chosen if g.free_bytes - margin < declared]
        if short:
            left = ", ".join(
                f"{gib(max(0, g.free_bytes - margin))} on GPU {g.index}" for g in short
            )
            message = (
                f"'{deployment.model.metadata.name}' declares {gib(declared)} of GPU memory "
                f"(resources.gpu_memory_bytes) and node '{node.metadata.name}' has {left} left"
            )
            position = deployment.doc.at(("spec", "resources", "gpu_memory_bytes"))
            return PlacementResult(
                None, Estimate(), [Diagnostic("does-not-fit", message, position)]
            )
    placement = Placement(
        mode="gpu",
        gpus=[g.uuid for g in chosen],
        reason=f"need not estimated: {which} (most memory left), {held}{unknown}",
    )
    estimate = Estimate(
        vram_bytes=[declared] * len(chosen) if declared else [],
        ram_bytes=spec.resources.memory_bytes,
    )
    warnings = []
    if declared is None and spec.gpus == "auto" and spec.backend == "custom":
        warnings.append(
            Diagnostic(
                "gpu-need-unknown",
                f"'{deployment.model.metadata.name}' is handed {which} but its GPU memory need "
                "is unknown, so the plan reserves none for it",
                # The file, not a line: a warning about a field that is absent must not make
                # every such file pay for the slower parse that positions need.
                Position(deployment.doc.file),
                severity="warning",
                hints=(
                    "for an image that runs on the CPU set 'gpus: none'; else set "
                    "resources.gpu_memory_bytes so the node's plan counts it",
                ),
            )
        )
    return PlacementResult(placement, estimate, warnings)


__all__ = ["DEFAULT_MARGIN", "PlacementResult", "estimated", "place"]
