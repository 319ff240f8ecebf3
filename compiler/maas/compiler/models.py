"""The documents users write: `Deployment` specs and `Node` profiles (apiVersion maas/v1).

These pydantic models are the public contract and the source of the committed JSON Schemas.
Unknown keys are errors; fields are strict so that `replicas: "2"` is reported, not coerced.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

API_VERSION = "maas/v1"
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
CPU_LIST = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")

Source = Literal["huggingface", "modelscope", "local_path"]
BackendName = Literal["auto", "llama-box", "vllm", "vox-box", "custom"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _check_labels(labels: dict[str, str]) -> dict[str, str]:
    for key in labels:
        if not LABEL_KEY.match(key) or len(key) > 253:
            raise ValueError(f"invalid label key '{key}'")
    return labels


class Metadata(Strict):
    name: str = Field(
        description="DNS-1123 label: lowercase letters, digits and '-', at most 63.",
        json_schema_extra={"pattern": DNS_LABEL.pattern, "maxLength": 63},
    )
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        if not DNS_LABEL.match(value):
            raise ValueError(
                f"'{value}' is not a DNS-1123 label (lowercase letters, digits and '-', "
                "starting and ending with a letter or digit, at most 63 characters)"
            )
        return value

    _labels = field_validator("labels")(classmethod(lambda cls, v: _check_labels(v)))


class Health(Strict):
    path: str | None = Field(
        default=None, description="HTTP path probed for readiness; the backend's own by default."
    )
    startup_timeout_s: Annotated[int, Field(ge=1, le=86400)] = 1800
    period_s: Annotated[int, Field(ge=1, le=3600)] = 10

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError("health path must start with '/'")
        return value


class SecretRef(Strict):
    secret: str = Field(description="Name of a node-local secret the agent resolves at start.")


class Resources(Strict):
    memory_bytes: Annotated[int, Field(ge=1)] | None = Field(
        default=None,
        description="Container memory limit; also the host memory reserved for a deployment "
        "whose need the compiler cannot estimate (custom backends, no model metadata).",
    )
    cpus: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    gpu_memory_bytes: Annotated[int, Field(ge=1)] | None = Field(
        default=None,
        description="GPU memory per GPU reserved for a deployment whose need the compiler "
        "cannot estimate; estimated deployments ignore it.",
    )


GpuIntent = Literal["auto", "none"] | Annotated[int, Field(ge=1, le=64)] | list[int | str]


class Volume(Strict):
    host_path: str = Field(description="Absolute path on the host; must be under an allowed root.")
    container_path: str
    read_only: bool = True

    @field_validator("host_path", "container_path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must be an absolute path")
        return value


class OnDemand(Strict):
    """Scale to zero: the deployment runs only while it is used (its minimum is 0 replicas, its
    maximum `replicas`, all started by the first request the gateway holds for it)."""

    idle_timeout_s: Annotated[int, Field(ge=1, le=7 * 86400)] = Field(
        default=600,
        description="Stop its replicas after this long without a request (none in flight).",
    )
    group: str | None = Field(
        default=None,
        description="Deployments of one group take turns: the plan reserves on each device the "
        "largest member's need, not the sum, and the agent stops the least recently used idle "
        "member to start another (a busy one yields its turn once another's request waits). "
        "Without a group the deployment reserves its whole need.",
        json_schema_extra={"pattern": DNS_LABEL.pattern, "maxLength": 63},
    )

    @field_validator("group")
    @classmethod
    def _dns_label(cls, value: str | None) -> str | None:
        if value is not None and not DNS_LABEL.match(value):
            raise ValueError(f"group '{value}' is not a DNS-1123 label")
        return value


class DeploymentBody(Strict):
    source: Source
    repo_id: str | None = Field(default=None, description="ORG/NAME on the hub.")
    file: str | None = Field(default=None, description="File name or glob inside the repo.")
    path: str | None = Field(default=None, description="Absolute host path for local_path.")
    revision: str | None = None
    backend: BackendName = "auto"
    image: Annotated[str, Field(min_length=1)] | None = None
    entrypoint: list[str] | None = None
    command: str | list[str] | None = None
    backend_parameters: list[str] = Field(default_factory=list)
    allow_cpu_offload: bool = False
    gpus: GpuIntent = Field(
        default="auto",
        description="'auto' (the compiler chooses), 'none' (CPU only: no GPU is handed to the "
        "container), a number of GPUs, or a list of GPU indexes or UUIDs.",
    )
    priority: Annotated[int, Field(ge=-1000, le=1000)] = Field(
        default=0,
        description="Higher is placed first when a node's memory is shared out.",
    )
    replicas: Annotated[int, Field(ge=0, le=64)] = 1
    on_demand: OnDemand | None = Field(
        default=None,
        description="Run only while used: stopped after an idle timeout, started again by the "
        "gateway's first request (replicas is then the maximum).",
    )
    context_length: Annotated[int, Field(ge=1)] | None = None
    parallel: Annotated[int, Field(ge=1, le=256)] = Field(
        default=1,
        description="llama-box: requests served at once (llama-server's --parallel slots); each "
        "slot holds context_length tokens, so the KV cache grows with it.",
    )
    env: dict[str, str | SecretRef] = Field(default_factory=dict)
    worker_selector: dict[str, str] = Field(default_factory=dict)
    health: Health = Field(default_factory=Health)
    resources: Resources = Field(default_factory=Resources)
    aliases: list[str] = Field(
        default_factory=list, description="Extra model names the gateway routes here."
    )
    privileged: bool = Field(default=False, description="Denied unless the node policy allows.")
    host_network: bool = False
    host_pid: bool = False
    host_ipc: bool = False
    volumes: list[Volume] = Field(default_factory=list, description="Extra bind mounts.")
    devices: list[str] = Field(default_factory=list, description="Host device paths to pass in.")
    cap_add: list[str] = Field(default_factory=list, description="Linux capabilities to add.")
    generic_proxy: bool = Field(
        default=False, description="Expose /proxy/<name>/<path> on the gateway."
    )
    distributed: bool = Field(
        default=False,
        description="Allow distributed inference across workers: when no single node fits the "
        "model, a config repository may split it over several nodes (llama.cpp RPC for GGUF, "
        "vLLM multi-node). The node policy must also allow it (allow_distributed), and every "
        "node of the group needs a Node profile naming its rpc_address.",
    )

    @field_validator("gpus")
    @classmethod
    def _gpu_list(cls, value: GpuIntent) -> GpuIntent:
        if isinstance(value, list):
            if not value:
                raise ValueError("a GPU list needs at least one index or UUID (or use 'none')")
            if len({str(v) for v in value}) != len(value):
                raise ValueError("a GPU is listed twice")
        return value

    @field_validator("repo_id")
    @classmethod
    def _repo_id(cls, value: str | None) -> str | None:
        # '..' is forbidden as on the hub (huggingface_hub.utils.validate_repo_id): the id
        # becomes a host path under the agent's caches.
        if value is not None and (not re.match(r"^[\w.-]+/[\w.-]+$", value) or ".." in value):
            raise ValueError(f"'{value}' is not ORG/NAME")
        return value

    @field_validator("file", "revision")
    @classmethod
    def _inside(cls, value: str | None) -> str | None:
        # Both become parts of host paths under the agent's caches: they must stay inside.
        if value is not None and (value.startswith("/") or ".." in value.split("/")):
            raise ValueError(f"'{value}' must be a relative name without '..'")
        return value

    @field_validator("path")
    @classmethod
    def _absolute_path(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError("path must be absolute")
        return value


class Deployment(Strict):
    """A `kind: Deployment` document."""

    model_config = ConfigDict(
        json_schema_extra={"title": "MaaS-Base Deployment", "$id": "deployment.schema.json"}
    )
    apiVersion: Literal["maas/v1"]
    kind: Literal["Deployment"]
    metadata: Metadata
    spec: DeploymentBody


class NumaNode(Strict):
    id: Annotated[int, Field(ge=0)]
    cpus: str = Field(description="CPU list as in /sys, e.g. '0-15,32-47'.")
    memory_bytes: Annotated[int, Field(ge=0)] | None = None

    @field_validator("cpus")
    @classmethod
    def _cpu_list(cls, value: str) -> str:
        if not CPU_LIST.match(value):
            raise ValueError(f"'{value}' is not a CPU list such as '0-15,32-47'")
        return value


class Cpu(Strict):
    cores: Annotated[int, Field(ge=1)]
    threads: Annotated[int, Field(ge=1)]
    numa_nodes: list[NumaNode] = Field(default_factory=list)
    memory_bandwidth_bytes_per_s: Annotated[int, Field(ge=1)] | None = None
    model: str | None = None


class Memory(Strict):
    total_bytes: Annotated[int, Field(ge=1)]
    available_bytes: Annotated[int, Field(ge=0)] | None = None


class Disk(Strict):
    """The file system of the agent's model cache."""

    total_bytes: Annotated[int, Field(ge=1)]
    free_bytes: Annotated[int, Field(ge=0)] | None = None


class Gpu(Strict):
    index: Annotated[int, Field(ge=0)]
    uuid: str
    name: str
    vendor: Literal["nvidia", "amd", "intel", "apple", "other"] = "nvidia"
    memory_total_bytes: Annotated[int, Field(ge=1)]
    memory_free_bytes: Annotated[int, Field(ge=0)] | None = None
    compute_capability: str | None = None
    memory_bus_width_bits: Annotated[int, Field(ge=1)] | None = None
    memory_clock_max_mhz: Annotated[int, Field(ge=1)] | None = None
    memory_bandwidth_bytes_per_s: Annotated[int, Field(ge=1)] | None = None
    pci_bus_id: str | None = Field(default=None, description="NVML's PCI bus id.")
    numa_node: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="NUMA node the GPU's PCI slot hangs off (sysfs numa_node)."
    )

    @property
    def free_bytes(self) -> int:
        return self.memory_total_bytes if self.memory_free_bytes is None else self.memory_free_bytes


class NodeBody(Strict):
    cpu: Cpu
    memory: Memory
    gpus: list[Gpu] = Field(default_factory=list)
    disk: Disk | None = Field(default=None, description="The model cache's file system.")
    driver_version: str | None = None
    cuda_version: str | None = None
    rpc_address: str | None = Field(
        default=None,
        description="The IP address of this node on the private network that carries the "
        "unauthenticated traffic of distributed groups (llama.cpp rpc-server, vLLM's "
        "torch.distributed); what their processes bind to. Unset: the node takes part in no "
        "group. Never a wildcard address.",
    )

    @field_validator("rpc_address")
    @classmethod
    def _one_interface(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"'{value}' is not an IP address") from None
        if address.is_unspecified:
            # llama.cpp's rpc-server README: "never run the RPC server on an open network".
            raise ValueError(
                f"'{value}' binds every interface; name the address of the private network "
                "the group's traffic stays on"
            )
        return value

    @model_validator(mode="after")
    def _unique_gpus(self) -> NodeBody:
        seen: set[str] = set()
        for gpu in self.gpus:
            if gpu.uuid in seen:
                raise ValueError(f"GPU uuid '{gpu.uuid}' appears twice")
            seen.add(gpu.uuid)
        return self


class Node(Strict):
    """A `kind: Node` document: the hardware facts of one host."""

    model_config = ConfigDict(
        json_schema_extra={"title": "MaaS-Base Node profile", "$id": "node.schema.json"}
    )
    apiVersion: Literal["maas/v1"]
    kind: Literal["Node"]
    metadata: Metadata
    spec: NodeBody
