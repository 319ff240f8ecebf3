"""Placement: where a deployment runs on a node (gpu, hybrid or cpu), and its estimates.

This is the foundation rule set: a node with GPUs gets `gpu` mode on its first GPU; a node without
GPUs needs `allow_cpu_offload: true` and then runs in `cpu` mode. The hardware-aware estimator
replaces `place` behind the same signature.
"""

from __future__ import annotations

from dataclasses import dataclass

from maas.compiler.backends import Backend
from maas.compiler.diagnostics import Diagnostic
from maas.compiler.documents import Loaded
from maas.compiler.models import Deployment, Node
from maas.compiler.plan import Estimate, Placement


@dataclass(frozen=True)
class PlacementResult:
    placement: Placement | None
    estimate: Estimate
    diagnostics: list[Diagnostic]


def place(deployment: Loaded[Deployment], backend: Backend, node: Node) -> PlacementResult:
    spec = deployment.model.spec
    doc = deployment.doc
    gpus = node.spec.gpus
    if gpus:
        first = min(gpus, key=lambda g: g.index)
        return PlacementResult(
            Placement(mode="gpu", gpus=[first.uuid], reason=f"first GPU of {node.metadata.name}"),
            Estimate(),
            [],
        )
    if not spec.allow_cpu_offload:
        return PlacementResult(
            None,
            Estimate(),
            [
                Diagnostic(
                    "no-gpu",
                    f"node '{node.metadata.name}' has no GPU and "
                    f"'{deployment.model.metadata.name}' does not allow running on the CPU",
                    doc.at(
                        ("spec", "allow_cpu_offload")
                        if "allow_cpu_offload" in (doc.get(("spec",)) or {})
                        else ("metadata", "name")
                    ),
                    hints=("set 'allow_cpu_offload: true' to run it on the CPU",),
                )
            ],
        )
    return PlacementResult(
        Placement(
            mode="cpu",
            threads=node.spec.cpu.cores,
            reason=f"node '{node.metadata.name}' has no GPU",
        ),
        Estimate(),
        [],
    )
