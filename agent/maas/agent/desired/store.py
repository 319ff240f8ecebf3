"""The state directory: desired state written atomically, read back strictly.

`desired.json` holds the submitted spec sources (in pull mode: those of the commit, with the
replicas assigned to this node and the repository's policy) and the last compiled Plan. Writes go
to a temp file in the same folder, are fsynced, then renamed over the old file (and the folder
fsynced), so a crash or a full disk leaves the old file whole. A file that cannot be parsed makes
the agent refuse to act (never "empty desired state", which would delete every container).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from maas.compiler import MaasError, Plan, PlanDeployment, Position

STORE_VERSION = 1


class Desired(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int = STORE_VERSION
    sources: dict[str, str] = Field(default_factory=dict)
    plan: Plan | None = None
    applied_at: float | None = None
    source_commit: str | None = None
    # Pull mode: the replicas of each deployment the fleet assigned to this node (None: all of
    # them, push mode), and the repository's policy, which can only narrow the node's.
    assigned: dict[str, int] | None = None
    policy: dict[str, Any] | None = None  # the rules maas.yaml states, as it states them
    # Pull mode: this node's members of distributed groups, as the fleet rendered and wired
    # them (a member's share and its peers' endpoints are the fleet's, not one node's).
    groups: dict[str, PlanDeployment] = Field(default_factory=dict)

    def commit_in_force(self) -> str | None:
        """The commit whose inputs this state holds. None for the state file of an older agent
        that stored only the plan compiled from a commit (no sources): pull mode then reads that
        commit again and stores this node's share of it as inputs, compiled as a push is."""
        if self.source_commit is not None and not self.sources and self.assigned is None:
            return None
        return self.source_commit


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class Store:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "desired.json"

    def load(self) -> Desired:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return Desired()
        except OSError as exc:
            raise self._corrupt(f"cannot read: {exc.strerror}") from exc
        try:
            data: Any = json.loads(raw)
            desired = Desired.model_validate(data)
        except (ValueError, ValidationError) as exc:
            raise self._corrupt(f"not a valid state file ({str(exc).splitlines()[0]})") from None
        if desired.version != STORE_VERSION:
            raise self._corrupt(f"state format {desired.version} is not {STORE_VERSION}")
        return desired

    def save(self, desired: Desired) -> None:
        try:
            write_atomic(self.path, desired.model_dump_json(indent=1).encode())
        except OSError as exc:
            raise MaasError.single(
                "store",
                f"cannot write the desired state: {exc.strerror}",
                position=Position(str(self.path)),
                retryable=True,
                hints=("the previous state file is unchanged",),
            ) from exc

    def _corrupt(self, why: str) -> MaasError:
        return MaasError.single(
            "store-corrupt",
            f"{why}; refusing to act so that no container is touched",
            position=Position(str(self.path)),
            hints=("inspect the file; re-submit with 'maasctl apply' after moving it away",),
        )
