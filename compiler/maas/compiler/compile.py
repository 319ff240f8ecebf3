"""Compilation: checked Deployments + a Node profile -> a Plan, or every Diagnostic at once.

The whole pipeline is pure: `load -> check -> select node -> allocate -> ports -> render`.
Allocation places the deployments one at a time against the node's ledger, in a fixed order:
higher `priority` first, then deployments the previous plan already ran (so adding an unrelated
deployment never moves or shrinks them), then those whose need is estimated (a custom backend
must not take a GPU a known backend then lacks), then by name. vLLM deployments first take the
fraction of the GPU their context needs; what no deployment takes is then handed to them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from maas.compiler.allocation import Charge, Ledger, charge_of
from maas.compiler.backends import Backend, BackendRule, resolve_backend
from maas.compiler.checks import check_deployments, check_disk
from maas.compiler.diagnostics import Diagnostic, raise_if_errors
from maas.compiler.documents import Loaded
from maas.compiler.groups import Share
from maas.compiler.metadata import ModelMetadata
from maas.compiler.models import Deployment, Gpu, Node
from maas.compiler.placement.entry import PlacementResult, estimated, place
from maas.compiler.placement.vllm import DEFAULT_UTILIZATION, vllm_vram
from maas.compiler.plan import Estimate, Placement, Plan, PlanDeployment
from maas.compiler.policy import check_policy
from maas.compiler.ports import allocate_ports
from maas.compiler.render import CompileOptions, render_deployment


@dataclass
class _Placed:
    loaded: Loaded[Deployment]
    backend: Backend
    rule: BackendRule
    result: PlacementResult
    unknown: bool
    kept: bool = False  # a running vLLM deployment kept its previous memory fraction

    @property
    def name(self) -> str:
        return self.loaded.model.metadata.name

    @property
    def replicas(self) -> int:
        return self.loaded.model.spec.replicas

    @property
    def placement(self) -> Placement:
        assert self.result.placement is not None, "only placed deployments are kept"
        return self.result.placement


def compile_plan(
    deployments: Sequence[Loaded[Deployment]],
    node: Node,
    *,
    options: CompileOptions | None = None,
    previous: Plan | None = None,
    resolved_files: Mapping[str, str] | None = None,
    models: Mapping[str, ModelMetadata] | None = None,
    shares: Mapping[str, Share] | None = None,
) -> Plan:
    """The Plan of `node` for `deployments`; raises `MaasError` with all problems found.

    `models` holds the model metadata per deployment name (fetched at the edge); without it a
    deployment is placed by the foundation rules and its estimate is unknown. `shares` holds
    this node's part of the distributed groups the fleet chose (`groups.link` wires them).
    """
    options = options or CompileOptions()
    models = models or {}
    placed, ledger = _allocate(deployments, node, options, previous, models, shares or {})
    _share_leftover(placed, ledger)
    previous_ports = {d.name: d.ports for d in previous.deployments} if previous else None
    # A group member's port was chosen by the fleet (distinct among its members): it is held
    # here so that no other deployment of the node takes it.
    fixed = {n: [s.port] for n, s in (shares or {}).items() if s.port is not None}
    ports = allocate_ports(
        {p.name: p.replicas for p in placed if p.name not in fixed},
        options.port_range,
        previous_ports,
        reserved=frozenset(_held(shares or {}, placed)) | options.reserved_ports,
    ) | {p.name: fixed[p.name] for p in placed if p.name in fixed}
    rendered = [
        render_deployment(
            p.loaded,
            backend=p.backend,
            rule=p.rule,
            placement=p.placement,
            estimate=p.result.estimate,
            ports=ports[p.name],
            options=options,
            resolved_file=(resolved_files or {}).get(p.name) or _first_file(models.get(p.name)),
            commit=_commit(models.get(p.name)),
            warnings=[d for d in p.result.diagnostics if d.severity == "warning"],
        )
        for p in placed
    ]
    rendered.sort(key=lambda d: d.name)
    return Plan(node=node.metadata.name, deployments=rendered, totals=ledger.totals())


def _held(shares: Mapping[str, Share], placed: Sequence[_Placed]) -> set[int]:
    """The ports group members hold on the node: theirs, and a vLLM primary's port + 1 (the
    `--master-port` its followers connect to)."""
    backends = {p.name: p.backend.name for p in placed}
    held: set[int] = set()
    for name, share in shares.items():
        if share.port is not None:
            held.add(share.port)
            if share.role == "primary" and backends.get(name) == "vllm":
                held.add(share.port + 1)
    return held


def place_on_node(
    deployment: Loaded[Deployment],
    node: Node,
    *,
    options: CompileOptions,
    models: Mapping[str, ModelMetadata],
) -> Charge:
    """What one deployment would hold on `node` (checked as `compile_plan` checks it, not
    rendered, vLLM at the fraction it needs): fleet placement charges a node with it."""
    (placed,), _ = _allocate([deployment], node, options, None, models, {})
    return _charge(placed)


def place_whole(
    deployment: Loaded[Deployment],
    node: Node,
    *,
    options: CompileOptions,
    models: Mapping[str, ModelMetadata],
) -> tuple[Placement, Estimate, bool]:
    """Where one deployment goes on `node` and what it needs, checked as `compile_plan` checks
    it, and whether that need is estimated; a distributed group splits this placement made on
    its members' combined node."""
    (placed,), _ = _allocate([deployment], node, options, None, models, {})
    return placed.placement, placed.result.estimate, not placed.unknown


def _allocate(  # noqa: PLR0917
    deployments: Sequence[Loaded[Deployment]],
    node: Node,
    options: CompileOptions,
    previous: Plan | None,
    models: Mapping[str, ModelMetadata],
    shares: Mapping[str, Share],
) -> tuple[list[_Placed], Ledger]:
    """Every deployment placed against the node's ledger in allocation order, and the ledger;
    raises `MaasError` with every problem."""
    diagnostics = check_deployments(deployments) + check_disk(deployments, node, models)
    ledger = Ledger(node, options.gpu_margin_bytes)
    placed: list[_Placed] = []
    for loaded in _allocation_order(deployments, node, models, previous, shares):
        selector_problem = _selector_mismatch(loaded, node)
        if selector_problem:
            diagnostics.append(selector_problem)
            continue
        share = shares.get(loaded.model.metadata.name)
        if share is not None:
            # The fleet split the model over several nodes: this node holds its share as given.
            backend, rule = resolve_backend(loaded.model.spec)
            result = PlacementResult(share.placement, share.estimate, [])
            entry = _Placed(loaded, backend, rule, result, unknown=False)
        else:
            entry = _place_one(loaded, node, ledger, options, models, previous)
        diagnostics.extend(entry.result.diagnostics)
        placement = entry.result.placement
        if placement is None:
            continue
        if options.policy is not None:
            image = loaded.model.spec.image or entry.backend.image_for(gpu=bool(placement.gpus))
            diagnostics.extend(
                check_policy(loaded, options.policy, cache_dir=options.cache_dir, image=image or "")
            )
        ledger.charges.append(_charge(entry))
        placed.append(entry)
    raise_if_errors(diagnostics)
    return placed, ledger


def _charge(entry: _Placed) -> Charge:
    return charge_of(
        entry.name,
        entry.placement,
        entry.result.estimate,
        entry.replicas,
        unknown=entry.unknown,
        processes=_processes(entry.loaded, entry.backend, unknown=entry.unknown),
        group=_group(entry.loaded),
    )


def _group(loaded: Loaded[Deployment]) -> str | None:
    """The group of on-demand deployments it takes turns with, if any."""
    on_demand = loaded.model.spec.on_demand
    return on_demand.group if on_demand is not None else None


def _first_file(metadata: ModelMetadata | None) -> str | None:
    """The file a `file` glob resolved to where the metadata was read (a split model's first)."""
    return metadata.files[0] if metadata is not None and metadata.files else None


def _commit(metadata: ModelMetadata | None) -> str | None:
    return metadata.commit if metadata is not None else None


def _allocation_order(
    deployments: Sequence[Loaded[Deployment]],
    node: Node,
    models: Mapping[str, ModelMetadata],
    previous: Plan | None,
    shares: Mapping[str, Share],
) -> list[Loaded[Deployment]]:
    running = {d.name for d in previous.deployments} if previous else set()

    def key(loaded: Loaded[Deployment]) -> tuple[bool, int, bool, bool, str]:
        name = loaded.model.metadata.name
        backend, _ = resolve_backend(loaded.model.spec)
        known = estimated(backend, models.get(name), node)
        # Group shares were charged first by the fleet: they come first here too.
        priority = -loaded.model.spec.priority
        return (name not in shares, priority, name not in running, not known, name)

    return sorted(deployments, key=key)


def _place_one(  # noqa: PLR0917
    loaded: Loaded[Deployment],
    node: Node,
    ledger: Ledger,
    options: CompileOptions,
    models: Mapping[str, ModelMetadata],
    previous: Plan | None,
) -> _Placed:
    spec = loaded.model.spec
    name = loaded.model.metadata.name
    backend, rule = resolve_backend(spec)
    metadata = models.get(name)
    unknown = not estimated(backend, metadata, node)
    gpus, count, problem = _intended_gpus(loaded, node)
    if problem is not None:
        return _Placed(loaded, backend, rule, PlacementResult(None, Estimate(), [problem]), unknown)
    before = previous.deployment(name) if previous else None
    if before is not None and before.placement.gpus:
        # What runs stays where it is when it still can, even where another GPU now has more
        # room: its GPUs are tried first.
        same = [g for g in gpus if g.uuid in before.placement.gpus]
        if len(same) == len(before.placement.gpus):
            placed = _placed_on(loaded, backend, same, count, ledger, options, metadata, before)
            if placed.result.placement == before.placement:
                return _Placed(loaded, backend, rule, placed.result, unknown, kept=placed.kept)
    placed = _placed_on(loaded, backend, gpus, count, ledger, options, metadata, before)
    return _Placed(loaded, backend, rule, placed.result, unknown, kept=placed.kept)


@dataclass(frozen=True)
class _Attempt:
    result: PlacementResult
    kept: bool


def _placed_on(  # noqa: PLR0917
    loaded: Loaded[Deployment],
    backend: Backend,
    gpus: list[Gpu],
    count: int | None,
    ledger: Ledger,
    options: CompileOptions,
    metadata: ModelMetadata | None,
    before: PlanDeployment | None,
) -> _Attempt:
    processes = _processes(loaded, backend, unknown=metadata is None)
    view = ledger.view(gpus, loaded.model.spec.replicas, processes, _group(loaded))
    result = place(
        loaded,
        backend,
        view,
        metadata=metadata,
        gpu_margin_bytes=options.gpu_margin_bytes,
        gpu_count=count,
    )
    if result.placement is None:
        return _Attempt(_name_holders(loaded, result, ledger, gpus), kept=False)
    kept = _keep_running_share(result, before, view, options)
    return _Attempt(kept or result, kept=kept is not None)


def _processes(loaded: Loaded[Deployment], backend: Backend, *, unknown: bool) -> int:
    """How many processes of the deployment hold a CUDA context outside their estimate on each
    of its GPUs: llama.cpp's replicas (vLLM's fraction and a declared need include theirs)."""
    return 0 if unknown or backend.name != "llama-box" else loaded.model.spec.replicas


def _intended_gpus(
    loaded: Loaded[Deployment], node: Node
) -> tuple[list[Gpu], int | None, Diagnostic | None]:
    """The GPUs the spec's `gpus` lets the deployment use, the exact count it asks for, or why
    the node cannot give them."""
    intent = loaded.model.spec.gpus
    gpus = sorted(node.spec.gpus, key=lambda g: g.index)
    name = loaded.model.metadata.name
    if intent == "auto":
        return gpus, None, None
    if intent == "none":
        return [], None, None
    if isinstance(intent, int):
        if intent > len(gpus):
            return (
                [],
                None,
                _gpu_problem(
                    loaded,
                    ("spec", "gpus"),
                    f"'{name}' asks for {intent} GPU(s); node "
                    f"'{node.metadata.name}' has {len(gpus)}",
                ),
            )
        return gpus, intent, None
    chosen = []
    for i, wanted in enumerate(intent):
        found = next((g for g in gpus if wanted in (g.index, g.uuid, str(g.index))), None)
        if found is None:
            have = ", ".join(f"{g.index} ({g.uuid})" for g in gpus) or "none"
            return (
                [],
                None,
                _gpu_problem(
                    loaded,
                    ("spec", "gpus", i),
                    f"node '{node.metadata.name}' has no GPU '{wanted}' (its GPUs: {have})",
                ),
            )
        chosen.append(found)
    return chosen, len(chosen), None


def _gpu_problem(
    loaded: Loaded[Deployment], path: tuple[str | int, ...], message: str
) -> Diagnostic:
    return Diagnostic(
        "gpus",
        message,
        loaded.doc.at(path),
        hints=("use 'gpus: auto' to let the compiler choose, or a worker_selector for the node",),
    )


def _name_holders(
    loaded: Loaded[Deployment], result: PlacementResult, ledger: Ledger, gpus: list[Gpu]
) -> PlacementResult:
    """A does-not-fit error says that its figures are per replica, which deployments hold the
    node's memory, and what helps."""
    holders = ledger.holders([g.uuid for g in gpus])
    replicas = loaded.model.spec.replicas
    if not holders and replicas <= 1:
        return result
    each = f" (figures per replica: its {replicas} replicas share what is left)"
    held = f"; the node's other deployments hold: {', '.join(holders)}"
    hints = ["or use fewer replicas"] if replicas > 1 else []
    if holders:
        hints.append(
            "or run it on another node (worker_selector), or give it a higher priority than "
            "the deployments holding the memory"
        )
    named = [
        Diagnostic(
            d.code,
            d.message + (each if replicas > 1 else "") + (held if holders else ""),
            d.position,
            hints=(*d.hints, *hints),
        )
        if d.severity == "error" and d.code == "does-not-fit"
        else d
        for d in result.diagnostics
    ]
    return PlacementResult(result.placement, result.estimate, named)


def _keep_running_share(
    result: PlacementResult,
    before: PlanDeployment | None,
    view: Node,
    options: CompileOptions,
) -> PlacementResult | None:
    """A vLLM deployment that already runs keeps the memory fraction it was given (its KV cache
    fills it) while that still fits, claimed as soon as it is placed: a newcomer gets what is
    left and never shrinks or grows it. None when there is nothing to keep."""
    placement = result.placement
    assert placement is not None
    now = placement.gpu_memory_utilization
    if before is None or now is None or before.placement.gpus != placement.gpus:
        return None
    had = before.placement.gpu_memory_utilization
    if had is None or had < now:
        return None
    by_uuid = {g.uuid: g for g in view.spec.gpus}
    chosen = [by_uuid[u] for u in placement.gpus]
    margin = options.gpu_margin_bytes
    if any(had * g.memory_total_bytes > g.free_bytes - margin for g in chosen):
        return None
    return result if had == now else _with_utilization(result, had, chosen)


def _with_utilization(
    result: PlacementResult, utilization: float, gpus: list[Gpu]
) -> PlacementResult:
    placement = result.placement
    assert placement is not None
    placement = placement.model_copy(
        update={
            "gpu_memory_utilization": utilization,
            "reason": f"{placement.reason}; given {utilization:g} (its KV cache fills the rest)",
        }
    )
    estimate = result.estimate.model_copy(update={"vram_bytes": vllm_vram(utilization, gpus)})
    return PlacementResult(placement, estimate, result.diagnostics)


def _share_leftover(placed: list[_Placed], ledger: Ledger) -> None:
    """What is left on a GPU after every deployment took its need goes, in equal parts per
    replica, to the vLLM deployments on it (up to vLLM's default 0.9 together), except to those
    that kept the fraction a previous plan gave them."""
    vllm = [
        p
        for p in placed
        if not p.kept
        and p.replicas
        and p.result.placement
        and p.result.placement.gpu_memory_utilization
    ]
    if not vllm:
        return
    gpus = {g.uuid: g for g in ledger.node.spec.gpus}
    sharers: dict[str, int] = {}
    for p in vllm:
        assert p.result.placement is not None
        for uuid in p.result.placement.gpus:
            sharers[uuid] = sharers.get(uuid, 0) + p.replicas
    # Together they stay within vLLM's own default share of each GPU (0.9).
    left = {
        uuid: max(
            0,
            min(
                ledger.gpu_left(gpus[uuid]),
                int(DEFAULT_UTILIZATION * gpus[uuid].memory_total_bytes) - ledger.gpu_used(uuid),
            ),
        )
        for uuid in sharers
    }
    for p in vllm:
        placement = p.result.placement
        assert placement is not None and placement.gpu_memory_utilization is not None
        util = placement.gpu_memory_utilization
        mine = [gpus[u] for u in placement.gpus]
        grown = min(
            # rounded first: the bytes charged were truncated from this very fraction
            math.floor(
                round(
                    (util * g.memory_total_bytes + left[g.uuid] // sharers[g.uuid])
                    / g.memory_total_bytes
                    * 100,
                    6,
                )
            )
            / 100
            for g in mine
        )
        grown = min(DEFAULT_UTILIZATION, grown)
        if grown <= util:
            continue
        p.result = _with_utilization(p.result, grown, mine)
        index = next(i for i, c in enumerate(ledger.charges) if c.deployment == p.name)
        ledger.charges[index] = _charge(p)


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
