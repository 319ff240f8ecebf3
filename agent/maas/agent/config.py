"""The agent's configuration: /etc/maas/agent.yaml, overridden by command-line flags."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from maas.agent.reconcile.observe import DEFAULT_NAMESPACE
from maas.compiler import GIB, CompileOptions, Policy
from maas.host.settings import load_settings

DEFAULT_PATH = Path("/etc/maas/agent.yaml")


class GitSourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str
    branch: str = "main"
    interval_s: Annotated[float, Field(gt=0)] = 30.0
    verify_signatures: bool = False


_NAMESPACE = re.compile(r"^[a-z0-9]+([.-][a-z0-9]+)*$")


class AgentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    node_name: str | None = Field(default=None, description="Default: the probe's host name.")
    label_namespace: str = Field(
        default=DEFAULT_NAMESPACE,
        max_length=63,
        description="Prefix of the container labels and names this agent owns.",
    )
    state_dir: Path = Path("/var/lib/maas")
    socket: Path = Path("/run/maas/agent.sock")
    socket_group: str | None = Field(default="maas", description="Group that may use the socket.")
    cache_dir: Path = Path("/var/lib/maas/cache")
    secrets_dir: Path = Path("/etc/maas/secrets")
    port_range: tuple[int, int] = (40000, 40999)
    gpu_margin_bytes: Annotated[int, Field(ge=0)] = GIB
    bind_address: str = "127.0.0.1"
    resync_s: Annotated[float, Field(gt=0)] = 30.0
    stop_timeout_s: Annotated[int, Field(ge=0, le=3600)] = 30
    drain_s: Annotated[float, Field(ge=0, le=600)] = Field(
        default=2.0,
        description="A replica a roll-out replaces is reported not ready this long before it "
        "stops: the gateway's poll and the requests in flight. 0: no drain.",
    )
    metrics_address: str = "127.0.0.1"
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = 9464
    node_file: Path | None = Field(default=None, description="A Node profile instead of probing.")
    policy: Policy = Field(default_factory=Policy)
    source: GitSourceConfig | None = None
    download_models: bool = Field(
        default=True,
        description="False: offline; models come only from the cache, the hubs are not asked.",
    )
    cache_max_idle_s: Annotated[float, Field(ge=0)] = Field(
        default=7 * 86400.0,
        description="A model revision that no deployment has used for this long is removed.",
    )
    request_timeout_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=30.0,
        description="A client of the socket must send a request's headers, and then its body, "
        "within this long (an idle connection is closed after it too).",
    )

    @field_validator("label_namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        # It becomes a label key prefix and a container name prefix: both take this shape.
        if not _NAMESPACE.match(value):
            raise ValueError(
                f"{value!r} is not a label namespace: use lower-case letters and digits, "
                "joined by '.' or '-' (e.g. team-a)"
            )
        return value

    def compile_options(self) -> CompileOptions:
        return CompileOptions(
            cache_dir=str(self.cache_dir),
            port_range=self.port_range,
            gpu_margin_bytes=self.gpu_margin_bytes,
            policy=self.policy,
        )


def load_config(path: Path | None, overrides: dict[str, Any]) -> AgentConfig:
    """The file (when it exists, or when named explicitly) merged with non-None overrides."""
    return load_settings(AgentConfig, path, DEFAULT_PATH, overrides)
