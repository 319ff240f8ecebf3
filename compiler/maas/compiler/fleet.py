"""Fleet placement: assign each replica of each Deployment to a Node of the inventory.

Candidates are filtered by `worker_selector`, ordered by the strategy (`spread`: fewest replicas
first; `binpack`: fullest node first), and the first on which the deployment fits wins. Fit is
decided by the same compiler that renders the node's Plan (injected as `fit`), and each accepted
replica takes its estimated VRAM and RAM out of the node, so later replicas see what is left.
Replicas keep the node a previous assignment gave them while they still fit there: adding an
unrelated deployment or node moves nothing. Each node's memory is kept in the same `Ledger` that
compiles the node's own Plan, so what the fleet puts on a node fits it as a whole.

A deployment that opted in to distributed inference and fits no single node is split over the
fewest nodes that hold it together (`groups`); a group the previous assignment formed keeps its
members while they still hold it, claimed before any newcomer is placed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from maas.compiler.allocation import Charge, Ledger
from maas.compiler.backends import resolve_backend
from maas.compiler.diagnostics import Diagnostic, MaasError
from maas.compiler.documents import Loaded
from maas.compiler.groups import GroupPlacement, combined_node, split, vllm_even
from maas.compiler.models import Deployment, Node
from maas.compiler.plan import Estimate, Placement
from maas.compiler.units import GIB

Strategy = Literal["spread", "binpack"]
Fit = Callable[[Loaded[Deployment], Node], Charge]
# Placement of a whole model on a group's combined node: where, its need, whether estimated,
# and the model's layer count (llama.cpp) when known.
FitWhole = Callable[[Loaded[Deployment], Node], tuple[Placement, Estimate, bool, int | None]]
# name -> node name of each replica, in replica order
Assignment = dict[str, list[str]]


@dataclass
class _NodeState:
    """One node while replicas are assigned: its ledger holds what each accepted replica takes."""

    ledger: Ledger
    replicas: int = 0

    @property
    def name(self) -> str:
        return self.ledger.node.metadata.name

    @property
    def node(self) -> Node:
        """The node as the next replica sees it: what is left of each GPU and of host memory."""
        # one more process: its CUDA context is charged where the GPU already has processes
        return self.ledger.view(self.ledger.node.spec.gpus, 1, processes=1)

    def free_bytes(self) -> int:
        gpus = sum(self.ledger.gpu_left(g) for g in self.ledger.node.spec.gpus)
        return gpus + self.ledger.host_left()

    def take(self, charge: Charge) -> None:
        """Charge what one replica is estimated to use."""
        self.replicas += 1
        self.ledger.charges.append(charge)


@dataclass
class FleetResult:
    assignment: Assignment = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    groups: dict[str, GroupPlacement] = field(default_factory=dict)


def assign(
    deployments: Sequence[Loaded[Deployment]],
    nodes: Sequence[Node],
    fit: Fit,
    *,
    strategy: Strategy = "spread",
    previous: Mapping[str, Sequence[str]] | None = None,
    margin: int = GIB,
    fit_whole: FitWhole | None = None,
    previous_groups: Mapping[str, Sequence[str]] | None = None,
) -> FleetResult:
    """Assign every replica; unschedulable ones become diagnostics naming each node's reason.

    With `fit_whole`, a distributed deployment that fits no node alone is split into a group."""
    states = {
        n.metadata.name: _NodeState(Ledger(n, margin))
        for n in sorted(nodes, key=lambda n: n.metadata.name)
    }
    result = FleetResult()
    ordered = sorted(deployments, key=lambda d: d.model.metadata.name)
    # Sticky pass first, so that kept replicas reserve their capacity before newcomers place.
    pending: list[tuple[Loaded[Deployment], int]] = []
    for loaded in ordered:
        name = loaded.model.metadata.name
        result.assignment[name] = []
        if _keep_group(loaded, states, fit_whole, previous_groups, result):
            continue
        kept = list((previous or {}).get(name, ()))
        for replica in range(loaded.model.spec.replicas):
            home = kept[replica] if replica < len(kept) else None
            if home in states and _try(loaded, states[home], fit) is None:
                result.assignment[name].append(home)
            else:
                pending.append((loaded, replica))
    failed: dict[str, tuple[Loaded[Deployment], list[int], list[str]]] = {}
    for loaded, replica in pending:
        node_name, reasons = _place_one(loaded, list(states.values()), fit, strategy)
        name = loaded.model.metadata.name
        if node_name is None:
            failed.setdefault(name, (loaded, [], reasons))[1].append(replica)
            continue
        result.assignment[name].append(node_name)
    if fit_whole is not None:
        _form_groups(failed, list(states.values()), fit_whole, result)
    result.diagnostics = [_unschedulable(*failed[name]) for name in sorted(failed)]
    return result


def _keep_group(
    loaded: Loaded[Deployment],
    states: Mapping[str, _NodeState],
    fit_whole: FitWhole | None,
    previous_groups: Mapping[str, Sequence[str]] | None,
    result: FleetResult,
) -> bool:
    """Whether the group the previous assignment formed still holds the deployment (it is then
    recorded and charged)."""
    name = loaded.model.metadata.name
    members = list((previous_groups or {}).get(name, ()))
    if fit_whole is None or not members or any(m not in states for m in members):
        return False
    group = _try_group(loaded, [states[m] for m in members], fit_whole)
    if isinstance(group, str):
        return False
    result.groups[name] = group
    result.assignment[name].append(group.nodes[0])
    return True


def _form_groups(
    failed: dict[str, tuple[Loaded[Deployment], list[int], list[str]]],
    states: list[_NodeState],
    fit_whole: FitWhole,
    result: FleetResult,
) -> None:
    """Distributed deployments that fit no node alone become groups where they can; the others
    stay in `failed` with the reason no group holds them."""
    for name in sorted(failed):
        loaded, _, reasons = failed[name]
        if not loaded.model.spec.distributed:
            continue
        if loaded.model.spec.replicas != 1:
            reasons.append("a deployment is split over several nodes only with 1 replica")
            continue
        group, why = _place_group(loaded, states, fit_whole)
        if group is None:
            reasons.append(why)
            continue
        result.groups[name] = group
        result.assignment[name].append(group.nodes[0])
        del failed[name]


def _place_group(
    loaded: Loaded[Deployment], states: list[_NodeState], fit_whole: FitWhole
) -> tuple[GroupPlacement | None, str]:
    """The fewest nodes that hold the model together, those with the most memory left first."""
    selector = loaded.model.spec.worker_selector
    candidates = [
        s
        for s in states
        if s.ledger.node.spec.rpc_address
        and all(s.ledger.node.metadata.labels.get(k) == v for k, v in selector.items())
    ]
    if len(candidates) < 2:
        return None, (
            "no group: fewer than 2 matching nodes name an rpc_address in their Node profile"
        )
    candidates.sort(key=lambda s: (not s.ledger.node.spec.gpus, -s.free_bytes(), s.name))
    problem = ""
    for count in range(2, len(candidates) + 1):
        group = _try_group(loaded, candidates[:count], fit_whole)
        if not isinstance(group, str):
            return group, ""
        problem = group
    names = ", ".join(s.name for s in candidates)
    return None, f"no group of {names}: {problem}"


def _try_group(
    loaded: Loaded[Deployment], members: list[_NodeState], fit_whole: FitWhole
) -> GroupPlacement | str:
    """The group on exactly `members` (primary first), charged to their ledgers; else why it
    cannot be formed there."""
    backend, _ = resolve_backend(loaded.model.spec)
    views = [m.node for m in members]
    if backend.name == "vllm" and not vllm_even(views):
        return "vLLM needs the same number of GPUs on every node of a group"
    single = Loaded(_one_replica(loaded.model), loaded.doc)
    try:
        placement, estimate, known, layers = fit_whole(single, combined_node(views))
    except MaasError as exc:
        errors = [d for d in exc.diagnostics if d.severity == "error"] or list(exc.diagnostics)
        return "together: " + errors[0].message
    if not known:
        return "its need is not estimated (no model metadata), so it cannot be split"
    group = split(loaded.model.metadata.name, backend.name, placement, estimate, views, layers)
    if group is None:
        return "a member would hold nothing"
    charges = group.charges()
    for member in members:
        member.take(charges[member.name])
    return group


def _place_one(
    loaded: Loaded[Deployment], states: list[_NodeState], fit: Fit, strategy: Strategy
) -> tuple[str | None, list[str]]:
    reasons: list[str] = []
    selector = loaded.model.spec.worker_selector
    candidates = []
    for state in states:
        labels = state.ledger.node.metadata.labels
        missing = [f"{k}={v}" for k, v in sorted(selector.items()) if labels.get(k) != v]
        if missing:
            reasons.append(f"{state.name}: labels do not match {', '.join(missing)}")
        else:
            candidates.append(state)
    # Nodes with GPUs come first: a model is only put on a CPU-only node when no GPU node fits.
    if strategy == "spread":
        candidates.sort(
            key=lambda s: (not s.ledger.node.spec.gpus, s.replicas, -s.free_bytes(), s.name)
        )
    else:
        candidates.sort(key=lambda s: (not s.ledger.node.spec.gpus, s.free_bytes(), s.name))
    for state in candidates:
        problem = _try(loaded, state, fit)
        if problem is None:
            return state.name, reasons
        reasons.append(f"{state.name}: {problem}")
    return None, reasons


def _try(loaded: Loaded[Deployment], state: _NodeState, fit: Fit) -> str | None:
    """None when one replica fits on the node (and then takes its share), else the reason."""
    single = Loaded(_one_replica(loaded.model), loaded.doc)
    try:
        charge = fit(single, state.node)
    except MaasError as exc:
        errors = [d for d in exc.diagnostics if d.severity == "error"] or list(exc.diagnostics)
        return errors[0].message
    state.take(charge)
    return None


def _one_replica(deployment: Deployment) -> Deployment:
    spec = deployment.spec.model_copy(update={"replicas": 1})
    return deployment.model_copy(update={"spec": spec})


def _unschedulable(
    loaded: Loaded[Deployment], replicas: list[int], reasons: list[str]
) -> Diagnostic:
    name = loaded.model.metadata.name
    total = loaded.model.spec.replicas
    which = f"{len(replicas)} of {total} replicas" if total > 1 else "the replica"
    return Diagnostic(
        "unschedulable",
        f"{which} of '{name}' fit on no node",
        loaded.doc.at(("metadata", "name")),
        hints=tuple(reasons)
        or (
            "the repository has no Node profiles under nodes/: on each host run "
            "maasctl probe -o yaml > nodes/HOSTNAME.yaml",
        ),
    )


def replicas_per_node(assignment: Assignment) -> dict[str, dict[str, int]]:
    """node name -> deployment name -> replica count."""
    out: dict[str, dict[str, int]] = {}
    for name, node_names in assignment.items():
        for node_name in node_names:
            per = out.setdefault(node_name, {})
            per[name] = per.get(name, 0) + 1
    return out
