"""The agent's configuration: /etc/maas/agent.yaml, overridden by command-line flags."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from maas.compiler.diagnostics import MaasError, Position
from maas.compiler.documents import diagnostics_from_validation
from maas.compiler.loader import load_text
from maas.compiler.policy import Policy
from maas.compiler.render import CompileOptions

DEFAULT_PATH = Path("/etc/maas/agent.yaml")


class GitSourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str
    branch: str = "main"
    interval_s: Annotated[float, Field(gt=0)] = 30.0
    verify_signatures: bool = False


class AgentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    node_name: str | None = Field(default=None, description="Default: the probe's host name.")
    state_dir: Path = Path("/var/lib/maas")
    socket: Path = Path("/run/maas/agent.sock")
    socket_group: str | None = Field(default="maas", description="Group that may use the socket.")
    cache_dir: Path = Path("/var/lib/maas/cache")
    secrets_dir: Path = Path("/etc/maas/secrets")
    port_range: tuple[int, int] = (40000, 40999)
    gpu_margin_bytes: Annotated[int, Field(ge=0)] = 1 << 30
    bind_address: str = "127.0.0.1"
    resync_s: Annotated[float, Field(gt=0)] = 30.0
    stop_timeout_s: Annotated[int, Field(ge=0, le=3600)] = 30
    metrics_address: str = "127.0.0.1"
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = 9464
    node_file: Path | None = Field(default=None, description="A Node profile instead of probing.")
    policy: Policy = Field(default_factory=Policy)
    source: GitSourceConfig | None = None
    download_models: bool = True

    def compile_options(self) -> CompileOptions:
        return CompileOptions(
            cache_dir=str(self.cache_dir),
            port_range=self.port_range,
            gpu_margin_bytes=self.gpu_margin_bytes,
            policy=self.policy,
        )


def load_config(path: Path | None, overrides: dict[str, Any]) -> AgentConfig:
    """The file (when it exists, or when named explicitly) merged with non-None overrides."""
    data: dict[str, Any] = {}
    file = path or DEFAULT_PATH
    doc = None
    if path is not None or file.exists():
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise MaasError.single(
                "config", f"cannot read: {exc.strerror}", position=Position(str(file))
            ) from exc
        docs = load_text(text, str(file))
        if docs:
            doc = docs[0]
            if not isinstance(doc.data, dict):
                raise MaasError.single(
                    "config", "the configuration must be a mapping", position=doc.at(())
                )
            data = dict(doc.data)
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return AgentConfig.model_validate(data)
    except ValidationError as exc:
        if doc is None:
            raise MaasError.single("config", str(exc).splitlines()[0]) from None
        raise MaasError(diagnostics_from_validation(exc, doc, AgentConfig)) from None
