"""Placement: where a deployment runs on a node (gpu, hybrid or cpu), and its estimates.

With model metadata, llama-box deployments are placed by memory estimates (placement_llama) and
vLLM deployments are sized (placement_vllm); a placement that runs on the CPU is pinned to one NUMA
node. Without metadata (custom backends, offline without a cache) the plan still compiles with the
foundation rules (first GPU, or the CPU when allowed) and says that the estimate is unknown.
"""

from __future__ import annotations

from maas.compiler.backends import Backend
from maas.compiler.diagnostics import Diagnostic
from maas.compiler.documents import Loaded
from maas.compiler.metadata import ModelMetadata
from maas.compiler.models import Deployment, Node
from maas.compiler.placement_common import (
    PlacementResult,
    cpu_pinning,
    ram_problem,
    spec_position,
)
from maas.compiler.placement_results import place_llama_box, place_vllm
from maas.compiler.plan import Estimate, Placement

DEFAULT_MARGIN = 1 << 30


def place(
    deployment: Loaded[Deployment],
    backend: Backend,
    node: Node,
    *,
    metadata: ModelMetadata | None = None,
    gpu_margin_bytes: int = DEFAULT_MARGIN,
) -> PlacementResult:
    if metadata is not None and backend.name == "llama-box":
        return place_llama_box(deployment, node, metadata, gpu_margin_bytes)
    if metadata is not None and backend.name == "vllm" and node.spec.gpus:
        return place_vllm(deployment, node, metadata, gpu_margin_bytes)
    return _foundation(deployment, node, metadata)


def _foundation(
    deployment: Loaded[Deployment], node: Node, metadata: ModelMetadata | None
) -> PlacementResult:
    spec = deployment.model.spec
    unknown = "" if spec.backend == "custom" else "; estimate unknown (no model metadata)"
    gpus = node.spec.gpus
    if gpus:
        first = min(gpus, key=lambda g: g.index)
        reason = f"first GPU of {node.metadata.name}{unknown}"
        return PlacementResult(
            Placement(mode="gpu", gpus=[first.uuid], reason=reason), Estimate(), []
        )
    if not spec.allow_cpu_offload:
        message = (
            f"node '{node.metadata.name}' has no GPU and "
            f"'{deployment.model.metadata.name}' does not allow running on the CPU"
        )
        hint = "set 'allow_cpu_offload: true' to run it on the CPU"
        position = spec_position(deployment, "allow_cpu_offload")
        return PlacementResult(
            None, Estimate(), [Diagnostic("no-gpu", message, position, hints=(hint,))]
        )
    estimate = Estimate()
    problems: list[Diagnostic] = []
    if metadata is not None:
        need = metadata.weight_bytes
        estimate = Estimate(ram_bytes=need, details={"weight_bytes": need})
        problem = ram_problem(deployment, node, need)
        if problem:
            problems.append(problem)
    pin = cpu_pinning(node, estimate.ram_bytes or 0)
    placement = Placement(
        mode="cpu",
        cpuset=pin.cpuset,
        cpuset_mems=pin.mems,
        threads=pin.threads,
        reason=f"node '{node.metadata.name}' has no GPU{pin.reason}{'' if metadata else unknown}",
    )
    return PlacementResult(None if problems else placement, estimate, problems)


__all__ = ["DEFAULT_MARGIN", "PlacementResult", "place"]
