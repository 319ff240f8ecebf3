"""Observed state: what the Docker engine reports about the containers this node owns.

Pure parsing of `docker inspect`-shaped dicts (as docker-py's `container.attrs` gives them), so the
rest of the agent never reads engine structures directly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_NAMESPACE = "maas"


@dataclass(frozen=True)
class Owner:
    """Whose containers an agent manages: its node name within a label namespace.

    An agent sees only the containers labelled `<namespace>.managed=true` and
    `<namespace>.node=<node>`, and names its own `<namespace>-<node>-<deployment>-<replica>`, so
    agents that share one engine (tests, or a host split between teams) are kept apart by either.
    """

    node: str
    namespace: str = DEFAULT_NAMESPACE

    def label(self, key: str) -> str:
        return f"{self.namespace}.{key}"

    def filters(self) -> list[str]:
        """docker's label filters that select this owner's containers."""
        return [f"{self.label('managed')}=true", f"{self.label('node')}={self.node}"]

    def labels(self, deployment: str, replica: int, spec_hash: str, port: int) -> dict[str, str]:
        return {
            self.label("managed"): "true",
            self.label("node"): self.node,
            self.label("deployment"): deployment,
            self.label("replica"): str(replica),
            self.label("spec-hash"): spec_hash,
            self.label("port"): str(port),
        }

    def container_name(self, deployment: str, replica: int) -> str:
        return f"{self.namespace}-{self.node}-{deployment}-{replica}"


@dataclass(frozen=True)
class ObservedContainer:
    id: str
    name: str
    deployment: str
    replica: int
    spec_hash: str
    state: str  # created, running, restarting, exited, paused, dead
    exit_code: int
    started_at: str
    finished_at: str
    port: int | None
    error: str
    sandbox: str = ""  # the ID of the network sandbox it joins (reconcile/sandbox.py), if any

    @property
    def running(self) -> bool:
        return self.state == "running"


def parse_container(attrs: Mapping[str, Any], owner: Owner) -> ObservedContainer | None:
    """One container's inspect data, or None when it is not a well-formed replica of ours (a
    network sandbox is none)."""
    labels = (attrs.get("Config") or {}).get("Labels") or {}
    if owner.label("role") in labels:
        return None
    try:
        replica = int(labels[owner.label("replica")])
        deployment = labels[owner.label("deployment")]
    except (KeyError, ValueError):
        return None
    state = attrs.get("State") or {}
    port = labels.get(owner.label("port"), "")
    return ObservedContainer(
        id=str(attrs.get("Id", "")),
        name=str(attrs.get("Name", "")).lstrip("/"),
        deployment=deployment,
        replica=replica,
        spec_hash=labels.get(owner.label("spec-hash"), ""),
        state=str(state.get("Status", "unknown")),
        exit_code=int(state.get("ExitCode") or 0),
        started_at=str(state.get("StartedAt", "")),
        finished_at=str(state.get("FinishedAt", "")),
        port=int(port) if port.isdigit() else None,
        error=str(state.get("Error") or ""),
        sandbox=labels.get(owner.label("sandbox"), ""),
    )


def observe(containers: Iterable[Mapping[str, Any]], owner: Owner) -> list[ObservedContainer]:
    found = [c for c in (parse_container(a, owner) for a in containers) if c is not None]
    return sorted(found, key=lambda c: (c.deployment, c.replica, c.id))
