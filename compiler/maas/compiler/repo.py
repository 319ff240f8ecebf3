"""Config repositories: `deployments/`, `nodes/` and an optional `maas.yaml` -> one Plan per node.

A repository is given as text (`{relative path: content}`); reading it from a work tree or a git
revision is the caller's I/O. Replicas are assigned to nodes by `fleet.assign`, then each node's
Plan is compiled from the deployments assigned to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Literal

from pydantic import Field, ValidationError, model_validator

from maas.compiler.allocation import Charge
from maas.compiler.checks import check_deployments
from maas.compiler.compile import compile_plan, place_on_node, place_whole
from maas.compiler.diagnostics import Diagnostic, MaasError, Position, raise_if_errors
from maas.compiler.documents import Loaded, diagnostics_from_validation
from maas.compiler.fleet import Assignment, Strategy, assign, replicas_per_node
from maas.compiler.groups import link, member_ports
from maas.compiler.loader import load_text
from maas.compiler.metadata import ModelMetadata
from maas.compiler.models import Deployment, Node, Strict
from maas.compiler.plan import Estimate, Placement, Plan, PlanDeployment
from maas.compiler.policy import Policy
from maas.compiler.render import CompileOptions
from maas.compiler.sources import load_sources
from maas.compiler.units import GIB

CONFIG_FILE = "maas.yaml"
FOLDERS = ("deployments/", "nodes/")


class RepoSettings(Strict):
    strategy: Strategy = "spread"
    port_range: Annotated[
        list[Annotated[int, Field(ge=1, le=65535)]], Field(min_length=2, max_length=2)
    ] = Field(default_factory=lambda: [40000, 40999])
    gpu_margin_bytes: Annotated[int, Field(ge=0)] = GIB
    cache_dir: str = Field(
        default="/var/lib/maas/cache",
        description="For plans made from the repository; an agent uses its own.",
    )
    policy: Policy = Field(
        default_factory=Policy,
        description="Checked when the repository is planned; an agent applies the rules stated "
        "here only to narrow its own policy.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> RepoSettings:
        if self.port_range[0] > self.port_range[1]:
            raise ValueError("port_range must be [low, high]")
        return self


class RepoConfig(Strict):
    """The optional `maas.yaml` of a config repository."""

    apiVersion: Literal["maas/v1"]
    kind: Literal["Config"]
    spec: RepoSettings = Field(default_factory=RepoSettings)


@dataclass
class FleetPlan:
    """The compiled repository: one Plan per node and where every replica went."""

    plans: dict[str, Plan] = field(default_factory=dict)
    assignment: Assignment = field(default_factory=dict)
    # deployment name -> the nodes of its distributed group, primary first
    groups: dict[str, list[str]] = field(default_factory=dict)

    def located(self) -> dict[str, tuple[str, PlanDeployment]]:
        """deployment name -> (node name, its PlanDeployment on the first node that runs it)."""
        out: dict[str, tuple[str, PlanDeployment]] = {}
        for node_name in sorted(self.plans):
            for deployment in self.plans[node_name].deployments:
                out.setdefault(deployment.name, (node_name, deployment))
        return out


def repo_files(paths: list[str]) -> list[str]:
    """The files of a repository listing that belong to the convention."""
    return sorted(
        p
        for p in paths
        if p == CONFIG_FILE or (p.startswith(FOLDERS) and p.endswith((".yaml", ".yml")))
    )


def load_settings(sources: Mapping[str, str]) -> RepoSettings:
    text = sources.get(CONFIG_FILE)
    if text is None:
        return RepoSettings()
    docs = load_text(text, CONFIG_FILE)
    if len(docs) != 1 or not isinstance(docs[0].data, dict):
        raise MaasError.single(
            "config",
            "maas.yaml must hold one Config document",
            position=Position(CONFIG_FILE, 1, 1),
        )
    try:
        return RepoConfig.model_validate(docs[0].data).spec
    except ValidationError as exc:
        raise MaasError(diagnostics_from_validation(exc, docs[0], RepoConfig)) from None


def compile_repo(
    sources: Mapping[str, str],
    *,
    previous: FleetPlan | None = None,
    root: str = "",
    models: Mapping[str, ModelMetadata] | None = None,
) -> FleetPlan:
    """Validate, assign and compile a whole repository; raises MaasError with every problem.

    `root` prefixes file names in diagnostics (e.g. "config-repo/") so they are clickable.
    """
    settings = load_settings(sources)
    documents = load_sources({root + k: v for k, v in sources.items() if k != CONFIG_FILE})
    # Every file's problems at once: the specs that parsed are checked even when others did not.
    raise_if_errors(documents.diagnostics + check_deployments(documents.deployments))
    misplaced = _misplaced(documents.deployments, documents.nodes, root)
    raise_if_errors(misplaced)
    options = CompileOptions(
        cache_dir=settings.cache_dir,
        port_range=(settings.port_range[0], settings.port_range[1]),
        gpu_margin_bytes=settings.gpu_margin_bytes,
        policy=settings.policy,
    )
    nodes = [n.model for n in documents.nodes]

    def fit(loaded: Loaded[Deployment], node: Node) -> Charge:
        return place_on_node(loaded, node, options=options, models=models or {})

    def fit_whole(
        loaded: Loaded[Deployment], node: Node
    ) -> tuple[Placement, Estimate, bool, int | None]:
        metadata = (models or {}).get(loaded.model.metadata.name)
        placement, estimate, known = place_whole(loaded, node, options=options, models=models or {})
        return placement, estimate, known, metadata.block_count if metadata else None

    result = assign(
        documents.deployments,
        nodes,
        fit,
        strategy=settings.strategy,
        previous=previous.assignment if previous else None,
        margin=settings.gpu_margin_bytes,
        fit_whole=fit_whole,
        previous_groups=previous.groups if previous else None,
    )
    raise_if_errors(result.diagnostics)
    single = {k: v for k, v in result.assignment.items() if k not in result.groups}
    counts = replicas_per_node(single)
    fleet = FleetPlan(
        assignment=result.assignment,
        groups={k: g.nodes for k, g in sorted(result.groups.items())},
    )
    by_name = {d.model.metadata.name: d for d in documents.deployments}
    groups = member_ports(list(result.groups.values()), options.port_range, _member_ports(previous))
    for node in nodes:
        name = node.metadata.name
        chosen = [_with_replicas(by_name[d], k) for d, k in sorted(counts.get(name, {}).items())]
        shares = {}
        for group in groups:
            share = group.share(name)
            if share is not None:
                chosen.append(by_name[group.deployment])
                shares[group.deployment] = share
        fleet.plans[name] = compile_plan(
            chosen,
            node,
            options=options,
            previous=previous.plans.get(name) if previous else None,
            models=models,
            shares=shares,
        )
    by_node = {n.metadata.name: n for n in nodes}
    fleet.plans = link(fleet.plans, groups, by_node, options.cache_dir)
    return fleet


def _member_ports(previous: FleetPlan | None) -> dict[tuple[str, str], int]:
    """(deployment, node) -> the port the previous fleet plan gave that group member."""
    if previous is None:
        return {}
    return {
        (d.name, node): d.port
        for node, plan in previous.plans.items()
        for d in plan.deployments
        if d.group is not None
    }


def _with_replicas(loaded: Loaded[Deployment], replicas: int) -> Loaded[Deployment]:
    spec = loaded.model.spec.model_copy(update={"replicas": replicas})
    return Loaded(loaded.model.model_copy(update={"spec": spec}), loaded.doc)


def _misplaced(
    deployments: list[Loaded[Deployment]], nodes: list[Loaded[Node]], root: str
) -> list[Diagnostic]:
    found = []
    for loaded in deployments:
        if not loaded.doc.file.startswith(root + "deployments/"):
            found.append(
                Diagnostic(
                    "layout",
                    "Deployment documents belong under deployments/",
                    loaded.doc.at(("kind",)),
                )
            )
    for loaded_node in nodes:
        if not loaded_node.doc.file.startswith(root + "nodes/"):
            found.append(
                Diagnostic(
                    "layout", "Node documents belong under nodes/", loaded_node.doc.at(("kind",))
                )
            )
    return found
