"""Compilation: checked Deployments + a Node profile -> a Plan, or every Diagnostic at once.

The whole pipeline is pure: `load -> check -> select node -> place -> allocate ports -> render`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from maas.compiler.backends import resolve_backend
from maas.compiler.checks import check_deployments
from maas.compiler.diagnostics import Diagnostic, raise_if_errors
from maas.compiler.documents import Loaded
from maas.compiler.metadata import ModelMetadata
from maas.compiler.models import Deployment, Node
from maas.compiler.placement import PlacementResult, place
from maas.compiler.plan import Plan, PlanDeployment
from maas.compiler.policy import check_policy
from maas.compiler.ports import allocate_ports
from maas.compiler.render import CompileOptions, render_deployment


def compile_plan(
    deployments: Sequence[Loaded[Deployment]],
    node: Node,
    *,
    options: CompileOptions | None = None,
    previous: Plan | None = None,
    resolved_files: Mapping[str, str] | None = None,
    models: Mapping[str, ModelMetadata] | None = None,
) -> Plan:
    """The Plan of `node` for `deployments`; raises `MaasError` with all problems found.

    `models` holds the model metadata per deployment name (fetched at the edge); without it a
    deployment is placed by the foundation rules and its estimate is unknown.
    """
    options = options or CompileOptions()
    diagnostics = check_deployments(deployments)
    placed: list[tuple[Loaded[Deployment], PlacementResult]] = []
    for loaded in deployments:
        selector_problem = _selector_mismatch(loaded, node)
        if selector_problem:
            diagnostics.append(selector_problem)
            continue
        backend, _ = resolve_backend(loaded.model.spec)
        result = place(
            loaded,
            backend,
            node,
            metadata=(models or {}).get(loaded.model.metadata.name),
            gpu_margin_bytes=options.gpu_margin_bytes,
        )
        diagnostics.extend(result.diagnostics)
        if options.policy is not None and result.placement is not None:
            image = loaded.model.spec.image or backend.image_for(gpu=result.placement.mode != "cpu")
            diagnostics.extend(
                check_policy(loaded, options.policy, cache_dir=options.cache_dir, image=image or "")
            )
        placed.append((loaded, result))
    raise_if_errors(diagnostics)
    previous_ports = {d.name: d.ports for d in previous.deployments} if previous else None
    ports = allocate_ports(
        {loaded.model.metadata.name: loaded.model.spec.replicas for loaded, _ in placed},
        options.port_range,
        previous_ports,
    )
    rendered: list[PlanDeployment] = []
    for loaded, result in placed:
        assert result.placement is not None
        backend, rule = resolve_backend(loaded.model.spec)
        name = loaded.model.metadata.name
        rendered.append(
            render_deployment(
                loaded,
                backend=backend,
                rule=rule,
                placement=result.placement,
                estimate=result.estimate,
                ports=ports[name],
                options=options,
                resolved_file=(resolved_files or {}).get(name),
                warnings=[d for d in result.diagnostics if d.severity == "warning"],
            )
        )
    rendered.sort(key=lambda d: d.name)
    return Plan(node=node.metadata.name, deployments=rendered)


def _selector_mismatch(loaded: Loaded[Deployment], node: Node) -> Diagnostic | None:
    labels = node.metadata.labels
    for key, wanted in sorted(loaded.model.spec.worker_selector.items()):
        have = labels.get(key)
        if have != wanted:
            actual = f"'{have}'" if have is not None else "no such label"
            return Diagnostic(
                "selector",
                f"node '{node.metadata.name}' does not match worker_selector {key}={wanted} "
                f"(node has {actual})",
                loaded.doc.at(("spec", "worker_selector", key)),
            )
    return None
