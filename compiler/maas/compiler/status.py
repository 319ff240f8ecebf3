"""The status contract: the document the node agent serves at `GET /v1/status`, as typed models.

The agent builds a `NodeStatus` and serialises it (`document()`); `maasctl` and the gateway read
it back with `parse_status`, so a document that does not fit is one clear error (naming the field)
instead of a KeyError deep in a reader. Unknown fields are ignored, so a reader keeps working
against an agent that reports more. Pure: values only, no I/O.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from maas.compiler.diagnostics import MaasError

# pending, pulling, downloading, starting, running, failed (`PHASES`, worst first)
Phase = Literal["failed", "pulling", "downloading", "pending", "starting", "running"]
PHASES: tuple[Phase, ...] = ("failed", "pulling", "downloading", "pending", "starting", "running")


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class ProgressBar(_Part):
    """Long work in figures: `done` of `total` `unit`s (bytes or seconds), a short note."""

    what: str  # pull, download, startup
    done: float = 0.0
    total: float | None = None
    unit: str = "B"
    note: str = ""


class ContainerStatus(_Part):
    """One container of a deployment, as Docker reports it and the probes judge it."""

    id: str  # the first 12 hex digits
    replica: int
    state: str  # Docker's: created, running, restarting, exited, paused, dead
    port: int | None = None
    restarts: int = 0
    rollouts: int = 0
    ready: bool = False  # routable: the readiness probe passed for this very container
    spec_hash: str | None = None


class ReplicaStatus(_Part):
    """What the agent knows of one replica, container or not (a failed pull has none)."""

    replica: int
    phase: Phase = "pending"
    spec_hash: str | None = None
    attempts: int = 0
    last_error: str | None = None
    permanent: bool = False  # not retried until the desired state is submitted again
    crash_loop: bool = False
    next_retry_at: float | None = None  # wall time
    restarts: int = 0
    rollouts: int = 0
    progress: ProgressBar | None = None


class WakeStatus(_Part):
    """An on-demand deployment's last wake: asked for, its replicas started, all ready."""

    requested_at: float
    started_at: float | None = None
    ready_at: float | None = None


class OnDemandStatus(_Part):
    """The `on_demand` part of an on-demand deployment's status (issue 18)."""

    state: str  # sleeping, waking, awake, running
    reason: str = ""
    idle_timeout_s: float | None = None
    idle_s: float | None = None
    in_flight: int = 0
    wake: WakeStatus | None = None


class GroupMemberStatus(_Part):
    node: str
    role: str  # primary, worker
    endpoint: str  # address:port it serves the group on
    share: float  # of the model's memory


class GroupStatus(_Part):
    """A deployment split over several nodes (issue 17): this node's role, every member, and the
    workers its primary waits for."""

    name: str
    role: str
    members: list[GroupMemberStatus]
    held_back_by: list[str] = Field(default_factory=list)


class DeploymentStatus(_Part):
    name: str
    # A phase, or for an on-demand deployment with no ready replica because of that, why.
    state: Phase | Literal["sleeping", "waking"]
    replicas: int
    ready_replicas: int
    last_error: str | None = None
    progress: str | None = None  # the pull's or download's last line
    backend: str
    image: str
    aliases: list[str] = Field(default_factory=list)
    generic_proxy: bool = False
    spec_hash: str
    gpus: list[str] = Field(default_factory=list)
    containers: list[ContainerStatus] = Field(default_factory=list)
    replica_states: list[ReplicaStatus] = Field(default_factory=list)
    progress_bar: ProgressBar | None = None
    on_demand: OnDemandStatus | None = None
    group: GroupStatus | None = None


class DiagnosticStatus(_Part):
    """A Diagnostic as status carries it (`Diagnostic.as_dict`)."""

    code: str
    severity: str
    message: str
    file: str | None = None
    line: int | None = None
    col: int | None = None
    hints: list[str] = Field(default_factory=list)


class TaskStatus(_Part):
    """One long-running task of the agent (reconcile, probes, events, pull)."""

    alive: bool
    restarts: int = 0
    failures: int = 0
    last_error: str | None = None
    last_error_at: float | None = None


class ActionStatus(_Part):
    kind: str
    deployment: str
    replica: int
    reason: str
    container_id: str | None = None


class PassStatus(_Part):
    at: float  # when the last pass started (wall time)
    duration_s: float
    ok: bool
    actions: list[ActionStatus] = Field(default_factory=list)  # noops left out


class SourceStatus(_Part):
    """Pull mode: the repository followed, the commit in force and the last refused one."""

    url: str
    branch: str
    applied_commit: str | None = None
    refused_commit: str | None = None
    error: list[str] = Field(default_factory=list)  # why refused_commit was refused
    fetch_error: list[str] = Field(default_factory=list)
    fetched_at: float | None = None


class RemovalError(_Part):
    error: str
    permanent: bool


class ForeignGpuProcess(_Part):
    """A process holding GPU memory outside this node's containers."""

    gpu: int
    uuid: str
    pid: int
    name: str
    used_bytes: int


class CachedRevision(_Part):
    source: str
    repo: str
    revision: str
    folder: str
    bytes: int
    complete: bool
    last_used: float | None = None
    used_by: list[str] = Field(default_factory=list)


class CachedModel(_Part):
    source: str
    repo: str
    bytes: int
    revisions: list[CachedRevision] = Field(default_factory=list)


class RollBack(_Part):
    failed_spec_hash: str
    running_spec_hash: str
    reason: str


class Preparing(_Part):
    """A new version pulled or downloaded while the old container serves."""

    deployment: str
    phase: str
    progress: str = ""
    progress_bar: ProgressBar | None = None


class KeptContainer(_Part):
    """A container kept as it is while the desired state cannot be read."""

    deployment: str
    replica: int
    id: str
    state: str
    port: int | None = None


class NodeStatus(_Part):
    """The whole document. `desired` is `pending` before the first pass read the desired state
    (an empty list of deployments then means "not known yet"), `refused` while it cannot be
    read (every container is kept: `kept`, and `removing` is empty); absent otherwise."""

    node: str
    applied_at: float | None = None
    errors: list[DiagnosticStatus] = Field(default_factory=list)
    warnings: list[DiagnosticStatus] = Field(default_factory=list)
    tasks: dict[str, TaskStatus] = Field(default_factory=dict)
    last_pass: PassStatus | None = None
    source: SourceStatus | None = None
    removal_errors: dict[str, RemovalError] = Field(default_factory=dict)
    gpu_foreign: list[ForeignGpuProcess] = Field(default_factory=list)
    cache: list[CachedModel] = Field(default_factory=list)
    rolled_back: dict[str, RollBack] = Field(default_factory=dict)
    preparing: list[Preparing] = Field(default_factory=list)
    deployments: list[DeploymentStatus] = Field(default_factory=list)
    removing: list[str] = Field(default_factory=list)
    desired: Literal["pending", "refused"] | None = None
    kept: list[KeptContainer] | None = None

    def document(self) -> dict[str, Any]:
        """The JSON document; the optional parts (`source`, `desired`, `kept`) only when set."""
        data = self.model_dump(mode="json")
        for key in ("source", "desired", "kept"):
            if data[key] is None:
                del data[key]
        return data

    def deployment(self, name: str) -> DeploymentStatus | None:
        return next((d for d in self.deployments if d.name == name), None)


def parse_status(data: object, origin: str = "the agent's status") -> NodeStatus:
    """A status document (parsed JSON) -> NodeStatus; MaasError naming the first bad field."""
    try:
        return NodeStatus.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the document"
        raise MaasError.single(
            "status-invalid",
            f"{origin} is not a status document: {where}: {first['msg']}",
            hints=("the agent and this program may be of different versions",),
        ) from None
