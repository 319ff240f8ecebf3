"""From one PlanDeployment replica to the engine's container-create arguments (pure but for
secret values, which are resolved here at the last moment and never leave the returned dict)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from maas.agent.reconcile.observe import Owner
from maas.compiler import Placement, PlanDeployment, SecretRef


def planned_port(planned: PlanDeployment, replica: int) -> int:
    """The host port the plan gives `replica`."""
    return planned.ports[replica] if replica < len(planned.ports) else planned.port


def container_spec(
    planned: PlanDeployment,
    replica: int,
    *,
    owner: Owner,
    bind_address: str,
    secret: Callable[[str], str],
    host_port: int | None = None,
    name: str | None = None,
    sandbox: str | None = None,
) -> dict[str, Any]:
    """`host_port` and `name` other than the plan's: a new container that starts beside the
    old one of its replica (reconcile/overlap.py); `sandbox`: the ID of the container whose
    network it joins, which publishes its port (reconcile/sandbox.py)."""
    host_port = host_port or planned_port(planned, replica)
    security = planned.security
    spec: dict[str, Any] = {
        "image": planned.image,
        "command": list(planned.command),
        "name": name or owner.container_name(planned.name, replica),
        "labels": owner.labels(planned.name, replica, planned.spec_hash, host_port),
        "environment": {
            key: secret(value.secret) if isinstance(value, SecretRef) else value
            for key, value in planned.env.items()
        },
        "volumes": {
            m.source: {"bind": m.target, "mode": "ro" if m.read_only else "rw"}
            for m in planned.mounts
        },
        "detach": True,
        "restart_policy": {"Name": "no"},  # restarts are the agent's, with back-off
        "privileged": security.privileged,
        "cap_add": list(security.cap_add) or None,
        "devices": [f"{d}:{d}:rwm" for d in security.devices] or None,
    }
    if planned.entrypoint is not None:
        spec["entrypoint"] = list(planned.entrypoint)
    if security.host_network:
        spec["network_mode"] = "host"
    elif sandbox:
        spec["network_mode"] = f"container:{sandbox}"
        spec["labels"][owner.label("sandbox")] = sandbox
    else:
        spec["ports"] = {f"{planned.port}/tcp": (bind_address, host_port)}
    if security.host_pid:
        spec["pid_mode"] = "host"
    if security.host_ipc:
        spec["ipc_mode"] = "host"
    placement = planned.placement
    if placement.gpus:
        spec["device_requests"] = [
            {"driver": "nvidia", "device_ids": list(placement.gpus), "capabilities": [["gpu"]]}
        ]
    spec |= _cpuset(placement, replica)
    if planned.limits.memory_bytes:
        spec["mem_limit"] = planned.limits.memory_bytes
    if planned.limits.nano_cpus:
        spec["nano_cpus"] = planned.limits.nano_cpus
    return spec


def _cpuset(placement: Placement, replica: int) -> dict[str, str]:
    """The CPUs and memory node of one replica: its own NUMA node where the plan gives each
    replica one (one replica per socket), else the deployment's."""
    cpus, mems = placement.cpuset, placement.cpuset_mems
    if placement.replica_cpus and replica < len(placement.replica_cpus):
        own = placement.replica_cpus[replica]
        cpus, mems = own.cpuset, own.cpuset_mems
    out = {}
    if cpus:
        out["cpuset_cpus"] = cpus
    if mems:
        out["cpuset_mems"] = mems
    return out
