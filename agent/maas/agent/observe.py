"""Observed state: what the Docker engine reports about the containers this node owns.

Pure parsing of `docker inspect`-shaped dicts (as docker-py's `container.attrs` gives them), so the
rest of the agent never reads engine structures directly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

LABEL_MANAGED = "maas.managed"
LABEL_NODE = "maas.node"
LABEL_DEPLOYMENT = "maas.deployment"
LABEL_REPLICA = "maas.replica"
LABEL_HASH = "maas.spec-hash"
LABEL_PORT = "maas.port"


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

    @property
    def running(self) -> bool:
        return self.state == "running"


def labels_for(
    node: str, deployment: str, replica: int, spec_hash: str, port: int
) -> dict[str, str]:
    return {
        LABEL_MANAGED: "true",
        LABEL_NODE: node,
        LABEL_DEPLOYMENT: deployment,
        LABEL_REPLICA: str(replica),
        LABEL_HASH: spec_hash,
        LABEL_PORT: str(port),
    }


def container_name(node: str, deployment: str, replica: int) -> str:
    return f"maas-{node}-{deployment}-{replica}"


def parse_container(attrs: Mapping[str, Any]) -> ObservedContainer | None:
    """One container's inspect data, or None when it is not a well-formed container of ours."""
    labels = (attrs.get("Config") or {}).get("Labels") or {}
    try:
        replica = int(labels[LABEL_REPLICA])
        deployment = labels[LABEL_DEPLOYMENT]
    except (KeyError, ValueError):
        return None
    state = attrs.get("State") or {}
    port = labels.get(LABEL_PORT, "")
    return ObservedContainer(
        id=str(attrs.get("Id", "")),
        name=str(attrs.get("Name", "")).lstrip("/"),
        deployment=deployment,
        replica=replica,
        spec_hash=labels.get(LABEL_HASH, ""),
        state=str(state.get("Status", "unknown")),
        exit_code=int(state.get("ExitCode") or 0),
        started_at=str(state.get("StartedAt", "")),
        finished_at=str(state.get("FinishedAt", "")),
        port=int(port) if port.isdigit() else None,
        error=str(state.get("Error") or ""),
    )


def observe(containers: Iterable[Mapping[str, Any]]) -> list[ObservedContainer]:
    found = [c for c in (parse_container(a) for a in containers) if c is not None]
    return sorted(found, key=lambda c: (c.deployment, c.replica, c.id))
