"""Network sandboxes of on-demand replicas: a wake starts a container, not a network.

A wake's platform share (issue 18) is mostly Docker: starting a stopped container on the default
bridge sets up its network namespace, a veth pair, the port's NAT rules and docker-proxy
(0.33 s of 0.45 s on this project's VM), and stopping one tears them down again (0.22 s). A
container that joins the network namespace of another (`network_mode: container:<name>`) does
none of that: 0.11 s to start, 0.10 s to stop, the same as host networking but without its
exposure. This is how Kubernetes runs a pod: a pause container holds the namespace and the
ports, the application containers join it (kubernetes.io, "Pod networking"; the kubelet's
`PodSandbox`).

So each replica of an on-demand deployment gets a sandbox: a container of the deployment's own
image (already on the host: no registry is needed) that only sleeps (`sleep infinity`: no GPU,
no mounts, no capabilities, a read-only root, 16 MiB), publishes the replica's port on the
agent's bind address, and runs while the replica sleeps, so the port stays held for it. The
replica's container joins it by ID, as Docker resolves a name at creation: a kept container
whose sandbox was made anew since (an agent's bind address changed, a sandbox removed by hand)
is replaced, not started.
An image without `sleep` gets no sandbox: its replicas publish their own port, as always-on
ones do, and the wake is slower (logged once per deployment).

Sandboxes carry the `role=sandbox` label, so `observe` never takes one for a replica; one that
no container of ours joins and no on-demand replica of the plan wants is removed each pass.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from maas.agent.reconcile.containers import planned_port
from maas.agent.reconcile.observe import ObservedContainer, Owner
from maas.compiler import MaasError, Plan, PlanDeployment

log = structlog.get_logger("maas.agent")
ROLE = "sandbox"
MEMORY_BYTES = 16 << 20
NO_SLEEP = "executable file not found"  # runc's words for an image without `sleep`


class SandboxEngine(Protocol):
    def create_and_start(self, spec: dict[str, Any]) -> str: ...
    def start(self, container_id: str) -> None: ...
    def remove(self, container_id: str, *, stop_timeout: int = 30) -> None: ...


@dataclass(frozen=True)
class ObservedSandbox:
    id: str
    name: str
    deployment: str
    replica: int
    port: int | None
    bind_address: str
    image: str
    running: bool


def wants_sandbox(planned: PlanDeployment) -> bool:
    """On-demand replicas that publish a port (host networking has nothing to hold)."""
    return planned.on_demand is not None and not planned.security.host_network


def sandbox_name(owner: Owner, deployment: str, replica: int) -> str:
    return f"{owner.container_name(deployment, replica)}-net"


def sandbox_spec(
    planned: PlanDeployment, replica: int, *, owner: Owner, bind_address: str
) -> dict[str, Any]:
    port = planned_port(planned, replica)
    return {
        "image": planned.image,
        "entrypoint": ["sleep"],
        "command": ["infinity"],
        "name": sandbox_name(owner, planned.name, replica),
        "labels": {
            **owner.labels(planned.name, replica, "", port),
            owner.label("role"): ROLE,
            owner.label("bind-address"): bind_address,
            owner.label("image"): planned.image,
        },
        "ports": {f"{planned.port}/tcp": (bind_address, port)},
        "detach": True,
        "restart_policy": {"Name": "no"},
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "read_only": True,
        "mem_limit": MEMORY_BYTES,
        "pids_limit": 4,
    }


def parse_sandboxes(containers: Iterable[Mapping[str, Any]], owner: Owner) -> list[ObservedSandbox]:
    found = []
    for attrs in containers:
        labels = (attrs.get("Config") or {}).get("Labels") or {}
        if labels.get(owner.label("role")) != ROLE:
            continue
        try:
            replica = int(labels[owner.label("replica")])
            deployment = labels[owner.label("deployment")]
        except (KeyError, ValueError):
            continue
        port = labels.get(owner.label("port"), "")
        found.append(
            ObservedSandbox(
                id=str(attrs.get("Id", "")),
                name=str(attrs.get("Name", "")).lstrip("/"),
                deployment=deployment,
                replica=replica,
                port=int(port) if port.isdigit() else None,
                bind_address=labels.get(owner.label("bind-address"), ""),
                image=labels.get(owner.label("image"), ""),
                running=(attrs.get("State") or {}).get("Status") == "running",
            )
        )
    return found


def matches(sandbox: ObservedSandbox, planned: PlanDeployment, bind_address: str) -> bool:
    """Whether `sandbox` is what the replica needs: its port on the agent's address, and the
    deployment's image (an old one would stay pinned by it)."""
    return (
        sandbox.port == planned_port(planned, sandbox.replica)
        and sandbox.bind_address == bind_address
        and sandbox.image == planned.image
    )


def stale(
    sandboxes: Sequence[ObservedSandbox],
    plan: Plan,
    observed: Sequence[ObservedContainer],
    bind_address: str,
) -> list[ObservedSandbox]:
    """The sandboxes to remove: joined by no container of ours, and wanted by no on-demand
    replica of `plan` (its full plan, sleeping deployments included) as they are."""
    joined = {c.sandbox for c in observed if c.sandbox}
    planned = {d.name: d for d in plan.deployments if wants_sandbox(d)}
    out = []
    for sandbox in sandboxes:
        if sandbox.id in joined:
            continue
        wanted = planned.get(sandbox.deployment)
        if (
            wanted is None
            or sandbox.replica >= wanted.replicas
            or not matches(sandbox, wanted, bind_address)
        ):
            out.append(sandbox)
    return out


class Sandboxes:
    """The sandboxes this agent keeps: seen once a pass, made or started right before the
    replica that joins them."""

    def __init__(self, engine: SandboxEngine, owner: Owner, bind_address: str) -> None:
        self.engine = engine
        self.owner = owner
        self.bind_address = bind_address
        self.seen: dict[str, ObservedSandbox] = {}
        self.unusable: dict[str, str] = {}  # image -> why it cannot hold a sandbox
        self._lock = threading.Lock()

    def observe(self, containers: Iterable[Mapping[str, Any]]) -> None:
        with self._lock:
            self.seen = {s.name: s for s in parse_sandboxes(containers, self.owner)}

    def ensure(self, planned: PlanDeployment, replica: int) -> str | None:
        """The ID of the replica's running sandbox, made or started now as needed; None
        where the replica publishes its own port (not on demand, or the image cannot)."""
        if not wants_sandbox(planned) or planned.image in self.unusable:
            return None
        name = sandbox_name(self.owner, planned.name, replica)
        with self._lock:
            found = self.seen.get(name)
        try:
            if found is not None and not matches(found, planned, self.bind_address):
                self.engine.remove(found.id, stop_timeout=0)
                found = None
            if found is None:
                spec = sandbox_spec(
                    planned, replica, owner=self.owner, bind_address=self.bind_address
                )
                found = ObservedSandbox(
                    id=self.engine.create_and_start(spec),
                    name=name,
                    deployment=planned.name,
                    replica=replica,
                    port=planned_port(planned, replica),
                    bind_address=self.bind_address,
                    image=planned.image,
                    running=True,
                )
            elif not found.running:
                self.engine.start(found.id)
        except MaasError as exc:
            why = exc.diagnostics[0].message
            if NO_SLEEP not in why:
                raise  # the replica's own create would meet it too (a port taken, the engine)
            self.unusable[planned.image] = why
            log.warning(
                "no network sandbox: the replica publishes its own port (a slower wake)",
                deployment=planned.name,
                image=planned.image,
                error=why,
            )
            return None
        with self._lock:
            self.seen[name] = dataclasses.replace(found, running=True)
        return found.id

    def tidy(self, plan: Plan, observed: Sequence[ObservedContainer]) -> None:
        """Remove the sandboxes nothing needs any more (a failure is retried next pass)."""
        with self._lock:
            seen = list(self.seen.values())
        for sandbox in stale(seen, plan, observed, self.bind_address):
            try:
                self.engine.remove(sandbox.id, stop_timeout=0)
            except MaasError as exc:
                log.warning(
                    "sandbox not removed", name=sandbox.name, error=exc.diagnostics[0].message
                )
                continue
            with self._lock:
                self.seen.pop(sandbox.name, None)
