"""The gateway's configuration: /etc/maas/gateway.yaml, overridden by command-line flags, and the
rule that an unauthenticated gateway listens on localhost only unless told otherwise."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from maas.compiler import MaasError
from maas.host.settings import load_settings

DEFAULT_PATH = Path("/etc/maas/gateway.yaml")
DEFAULT_KEYS_FILE = Path("/etc/maas/gateway.keys")
MiB = 1024 * 1024


class GatewayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    agent_socket: Path | None = Field(
        default=None,
        description="Default: found like maasctl finds it (maas.host.discovery).",
    )
    upstream_host: str = Field(
        default="127.0.0.1", description="Where replicas' published ports answer."
    )
    keys_file: Path | None = DEFAULT_KEYS_FILE
    allow_unauthenticated_remote: bool = False
    max_body_bytes: Annotated[int, Field(gt=0)] = 16 * MiB
    max_upload_bytes: Annotated[int, Field(gt=0)] = 64 * MiB
    connect_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    read_timeout_s: Annotated[float, Field(gt=0)] = Field(
        default=600.0, description="Longest silence from a replica (prompt processing included)."
    )
    total_timeout_s: Annotated[float, Field(gt=0)] = Field(
        default=3600.0, description="Longest request, streams included."
    )
    poll_interval_s: Annotated[float, Field(gt=0)] = 1.0
    eject_s: Annotated[float, Field(gt=0)] = 10.0
    retry_after_s: Annotated[int, Field(gt=0)] = 5
    max_attempts: Annotated[int, Field(ge=1, le=10)] = 3
    shutdown_timeout_s: Annotated[float, Field(ge=0)] = 30.0
    wake_timeout_s: Annotated[float, Field(gt=0)] = Field(
        default=120.0,
        description="How long a request for a sleeping on-demand model waits for its start.",
    )
    wake_queue: Annotated[int, Field(ge=1)] = Field(
        default=64, description="Requests per sleeping model held while it starts; more get 503."
    )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name may resolve to anything: treat it as remote


def check_exposure(config: GatewayConfig, keys_required: bool) -> None:
    """Refuse to serve every model on the network to anyone, unless explicitly allowed."""
    if keys_required or config.allow_unauthenticated_remote or is_loopback(config.host):
        return
    raise MaasError.single(
        "gateway-exposure",
        f"refusing to listen on {config.host} without API keys",
        hints=(
            f"create {config.keys_file or 'a keys file'} with `maas-gateway key new`",
            "or pass --allow-unauthenticated-remote if the network is trusted",
        ),
    )


def load_config(path: Path | None, overrides: dict[str, Any]) -> GatewayConfig:
    """The file (when it exists, or when named explicitly) merged with non-None overrides."""
    return load_settings(GatewayConfig, path, DEFAULT_PATH, overrides)
