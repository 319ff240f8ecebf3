"""A snapshot of the node: the frozen value the reconciler publishes after each pass (and after
each probe result), which the API, the probes, the metrics and the daemon read instead of the
reconciler's working fields. A reader takes `Reconciler.snapshot` once and sees one consistent
state, while the next pass builds the one after it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from maas.agent.reconcile.diff import Action, Replica
from maas.agent.reconcile.health import ReplicaHealth
from maas.agent.reconcile.observe import ObservedContainer
from maas.compiler import Diagnostic, Plan, PlanDeployment
from maas.host.gpuroom import ForeignProcess

if TYPE_CHECKING:
    from maas.agent.reconcile.prepare import Job


@dataclass(frozen=True)
class PassResult:
    """One pass, as status and the metrics report it."""

    started: float = 0.0
    duration_s: float = 0.0
    actions: tuple[Action, ...] = ()
    ok: bool = True


def _empty() -> Mapping[str, object]:
    return MappingProxyType({})


@dataclass(frozen=True)
class NodeSnapshot:
    """Plan, Observed, replica health and the progress of the work going on, after a pass.

    `healths` are copies taken at publication (a later probe result publishes a new snapshot);
    a preparation's progress (`preparing`, a health's `bar`) is the live object its worker
    thread updates, so figures move between passes.
    """

    node_name: str
    plan: Plan | None = None
    observed: tuple[ObservedContainer, ...] = ()
    healths: Mapping[Replica, ReplicaHealth] = field(default_factory=_empty)  # type: ignore[arg-type]
    errors: tuple[Diagnostic, ...] = ()
    refused: bool = False  # the desired state cannot be read: nothing is touched
    passes: int = 0
    last: PassResult = PassResult()
    applied_at: float | None = None  # when the desired state was last submitted
    removal_errors: Mapping[str, Mapping[str, object]] = field(default_factory=_empty)  # type: ignore[arg-type]
    foreign: tuple[ForeignProcess, ...] = ()  # GPU memory held outside our containers
    cache_usage: tuple[Mapping[str, object], ...] = ()
    # A roll-out taken back: {deployment: (failed spec hash, the version brought back, why)}.
    rollbacks: Mapping[str, tuple[str, PlanDeployment, str]] = field(default_factory=_empty)  # type: ignore[arg-type]
    preparing: Mapping[str, Job] = field(default_factory=_empty)  # type: ignore[arg-type]
    # A distributed group's primary held back: {deployment: the workers it waits for}.
    group_waiting: Mapping[str, tuple[str, ...]] = field(default_factory=_empty)  # type: ignore[arg-type]

    def ready_replicas(self) -> int:
        return sum(1 for h in self.healths.values() if h.ready)

    def container(self, deployment: str, replica: int) -> ObservedContainer | None:
        return next(
            (c for c in self.observed if c.deployment == deployment and c.replica == replica),
            None,
        )
