"""The Plan: the compiled, fully resolved desired state of one node, as canonical JSON.

Each deployment carries a versioned spec hash over exactly the fields that define its containers,
so the agent recreates a container when (and only when) one of them changes.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)

from maas.compiler.diagnostics import Diagnostic, Position
from maas.compiler.models import SecretRef

SPEC_HASH_VERSION = "v1"


class PlanModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReplicaCpus(PlanModel):
    cpuset: str = Field(description="CPUs of the replica's NUMA node (Docker's cpuset_cpus).")
    cpuset_mems: str = Field(description="Its memory node (Docker's cpuset_mems).")


class Placement(PlanModel):
    mode: Literal["gpu", "hybrid", "cpu"]
    gpus: list[str] = Field(default_factory=list, description="GPU UUIDs.")
    gpu_layers: int | None = None
    layers_total: int | None = None
    tensor_parallel_size: int | None = None
    tensor_split: list[float] | None = None
    expert_offload: list[str] = Field(default_factory=list, description="Tensor overrides to CPU.")
    cpuset: str | None = None
    cpuset_mems: str | None = None
    replica_cpus: list[ReplicaCpus] | None = Field(
        default=None,
        description="Per replica, in replica order, where each has a NUMA node of its own (one "
        "replica per socket); cpuset and cpuset_mems are then unset.",
    )
    threads: int | None = None
    context_length: int | None = Field(default=None, description="Context the backend is given.")
    batch_size: int | None = Field(
        default=None, description="llama.cpp's -b/-ub when not its default (experts on the CPU)."
    )
    gpu_memory_utilization: float | None = None
    cpu_offload_gb: int | None = None
    reason: str = ""


class Estimate(PlanModel):
    vram_bytes: list[int] = Field(default_factory=list, description="Per GPU, in placement order.")
    ram_bytes: int | None = None
    decode_tokens_per_s: float | None = None
    details: dict[str, int] = Field(default_factory=dict)


class Mount(PlanModel):
    source: str
    target: str
    read_only: bool = False


class HealthCheck(PlanModel):
    paths: list[str] = Field(default_factory=list, description="Empty: a TCP connect suffices.")
    startup_timeout_s: int = 1800
    period_s: int = 10


class ModelRef(PlanModel):
    source: Literal["huggingface", "modelscope", "local_path"]
    repo_id: str | None = None
    file: str | None = None
    revision: str | None = None
    commit: str | None = Field(
        default=None, description="The hub commit the revision resolved to: the pinned revision."
    )
    folder: str | None = Field(
        default=None, description="The revision's folder in the cache (mounted read-only)."
    )
    path: str = Field(description="Where the model is on the host (and in the container).")
    download: bool = Field(description="Whether the agent fetches it into the cache before start.")
    fetched_by: Literal["agent", "backend", "none"] = Field(
        default="agent", description="Who downloads it: the agent, the backend itself, or nobody."
    )


class Limits(PlanModel):
    memory_bytes: int | None = None
    nano_cpus: int | None = None


class Security(PlanModel):
    """What the container may do beyond the default; admitted by the node policy."""

    privileged: bool = False
    host_network: bool = False
    host_pid: bool = False
    host_ipc: bool = False
    devices: list[str] = Field(default_factory=list)
    cap_add: list[str] = Field(default_factory=list)


class OnDemandPlan(PlanModel):
    """A deployment that runs only while used; members of a group take turns on its devices."""

    idle_timeout_s: int
    group: str | None = None


Role = Literal["primary", "worker"]


class GroupMember(PlanModel):
    node: str
    role: Role
    address: str = Field(description="The node's rpc_address: what the member binds to.")
    port: int = Field(
        default=0, description="Worker: its rpc-server's port; primary: its serving port."
    )
    share: float = Field(description="Fraction of the model's memory on this node.")
    devices: list[str] = Field(
        default_factory=list, description="Backend device names the member gives the group."
    )


class Group(PlanModel):
    """One deployment split over several nodes: this node's role and every member, primary
    first, then the workers in the order the primary lists them (llama-server's --rpc)."""

    name: str
    role: Role
    node: str = Field(default="", description="The member this plan's node is.")
    members: list[GroupMember]

    @property
    def primary(self) -> GroupMember:
        return self.members[0]

    @property
    def workers(self) -> list[GroupMember]:
        return self.members[1:]

    def me(self, node: str | None = None) -> GroupMember:
        wanted = self.node if node is None else node
        return next(m for m in self.members if m.node == wanted)


class PlanDiagnostic(PlanModel):
    """A warning the compiler left on a deployment, as the plan stores it (position included)."""

    code: str
    severity: Literal["error", "warning"]
    message: str
    file: str | None = None
    line: int | None = None
    col: int | None = None
    hints: list[str] = Field(default_factory=list)

    @classmethod
    def of(cls, d: Diagnostic) -> PlanDiagnostic:
        return cls.model_validate(d.as_dict())

    def diagnostic(self) -> Diagnostic:
        position = Position(self.file, self.line or 0, self.col or 0) if self.file else None
        return Diagnostic(self.code, self.message, position, self.severity, tuple(self.hints))


class PlanDeployment(PlanModel):
    @model_validator(mode="before")
    @classmethod
    def _without_action(cls, data: Any) -> Any:
        # Plans stored before 0.2 carry an `action` that was always "create" (the agent's diff
        # decides actions); dropped so that their state files still load.
        if isinstance(data, dict) and "action" in data:
            return {k: v for k, v in data.items() if k != "action"}
        return data

    name: str
    backend: str
    backend_rule: Literal["explicit", "gguf", "speech", "default"] = Field(
        description="Which rule chose the backend: explicit, gguf, speech or default (vllm)."
    )
    image: str
    entrypoint: list[str] | None = None
    command: list[str]
    env: dict[str, str | SecretRef] = Field(default_factory=dict)
    port: int = Field(description="The port the backend listens on; replica 0's host port.")
    ports: list[int] = Field(default_factory=list, description="Host port per replica.")
    replicas: int = 1
    mounts: list[Mount] = Field(default_factory=list)
    limits: Limits = Field(default_factory=Limits)
    health: HealthCheck = Field(default_factory=HealthCheck)
    model: ModelRef
    labels: dict[str, str] = Field(default_factory=dict)
    aliases: list[str] = Field(default_factory=list)
    generic_proxy: bool = False
    security: Security = Field(default_factory=Security)
    placement: Placement
    estimate: Estimate = Field(default_factory=Estimate)
    on_demand: OnDemandPlan | None = Field(
        default=None, description="Runs only while used (scale to zero); None: always on."
    )
    group: Group | None = Field(
        default=None, description="Set when the deployment is split over several nodes."
    )
    spec_hash: str = ""
    diagnostics: list[PlanDiagnostic] = Field(default_factory=list)


class DeviceTotal(PlanModel):
    """What the plan puts on one device of the node (a GPU or the host's memory)."""

    device: str = Field(description="'gpu<index>' or 'host'.")
    uuid: str | None = None
    name: str
    usable_bytes: int = Field(description="GPU: free memory minus the margin; host: available.")
    allocated_bytes: int = Field(
        description="Reserved: all deployments and replicas together, a group of on-demand "
        "deployments that take turns counted once, at its largest member's need."
    )
    all_at_once_bytes: int = Field(
        default=0,
        description="What every deployment would hold if all ran at once (the groups' members "
        "summed); equal to allocated_bytes without groups.",
    )
    groups: dict[str, int] = Field(
        default_factory=dict,
        description="Per group of on-demand deployments taking turns here: the bytes it "
        "reserves (its largest member's need); by_deployment has each member's own need.",
    )
    headroom_bytes: int
    process_overhead_bytes: int = Field(
        default=0,
        description="CUDA contexts of the llama.cpp processes beyond the first on a GPU (the "
        "margin holds the first); part of allocated_bytes.",
    )
    by_deployment: dict[str, int] = Field(default_factory=dict)
    unknown_need: list[str] = Field(
        default_factory=list,
        description="Deployments on this device whose need is not estimated (they hold what "
        "they declare in resources, else nothing).",
    )


class Plan(PlanModel):
    model_config = ConfigDict(
        json_schema_extra={"title": "MaaS-Base Plan", "$id": "plan.schema.json"}
    )
    format_version: Literal[1] = 1
    node: str
    deployments: list[PlanDeployment] = Field(default_factory=list)
    totals: list[DeviceTotal] = Field(
        default_factory=list, description="Per GPU and host memory, in that order."
    )

    def deployment(self, name: str) -> PlanDeployment | None:
        return next((d for d in self.deployments if d.name == name), None)


HASHED_FIELDS = (
    "image",
    "entrypoint",
    "command",
    "env",
    "port",
    "mounts",
    "limits",
    "model",
    "security",
)


UNHASHED_WHEN_UNSET = ("context_length", "gpu_memory_utilization", "cpu_offload_gb", "replica_cpus")


def spec_hash(deployment: PlanDeployment) -> str:
    """`v1:<hex>` over what defines a container; replicas, health and labels are left out."""
    data = deployment.model_dump(mode="json", include=set(HASHED_FIELDS))
    placement = deployment.placement.model_dump(mode="json", exclude={"reason"})
    for key in UNHASHED_WHEN_UNSET:  # fields added later: unset, they keep earlier hashes
        if placement.get(key) is None:
            placement.pop(key, None)
    payload = canonical_json({"deployment": data, "placement": placement})
    return f"{SPEC_HASH_VERSION}:{hashlib.sha256(payload.encode()).hexdigest()[:24]}"


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def plan_to_json(plan: Plan, *, indent: int | None = 2) -> str:
    return json.dumps(plan.model_dump(mode="json"), indent=indent, sort_keys=False) + "\n"
