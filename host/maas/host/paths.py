"""Host paths the agent hands to Docker or opens itself, checked against the node policy on the
paths they resolve to, right before use.

Docker follows symlinks in a bind source, so a check of the path's text is bypassed by a link
under an allowed root (`/models/etc -> /etc`), planted before or after planning. Right before a
container is created every bind source is resolved (`os.path.realpath`, strict), checked with the
compiler's one rule (`mount_denial`) against the policy's roots (resolved too), and Docker gets
the resolved path. The platform's own folders (a repository's folder in the model store, a
deployment's writable folder) are created first. Model files the agent reads for their headers
are opened only when the policy admits their real path, and only when they are regular files:
opened with O_NONBLOCK and checked with fstat, so a FIFO never blocks a thread.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from maas.compiler import (
    MaasError,
    Mount,
    PlanDeployment,
    Policy,
    model_store,
    mount_denial,
    work_dir,
)


def _real_policy(policy: Policy) -> Policy:
    roots = [os.path.realpath(root) for root in policy.allowed_mount_roots]
    return policy.model_copy(update={"allowed_mount_roots": roots})


def _refusal(message: str, *hints: str) -> MaasError:
    return MaasError.single("policy", message, hints=hints)


def resolved_mounts(planned: PlanDeployment, *, policy: Policy, cache_dir: Path) -> list[Mount]:
    """The plan's mounts with their sources resolved and admitted; raises MaasError (permanent,
    code 'policy') naming the mount when one is missing or resolves outside what is allowed."""
    cache = str(cache_dir)
    own = work_dir(cache, planned.name)
    store = model_store(cache)
    real_cache = os.path.realpath(cache)
    real = _real_policy(policy)
    mounts = []
    for mount in planned.mounts:
        source = mount.source
        if source == own or source.startswith(store + "/"):
            # The platform's folders; an empty one is harmless (a custom backend's model folder
            # stays empty: such backends download into their own folder).
            try:
                Path(source).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise _refusal(
                    f"deployment '{planned.name}': cannot create '{source}': {exc.strerror}"
                ) from None
        try:
            target = os.path.realpath(source, strict=True)
        except FileNotFoundError:
            raise _refusal(
                f"deployment '{planned.name}': bind source '{source}' does not exist",
                f"create {source} on the host (Docker would create it as root-owned folder)",
            ) from None
        except OSError as exc:
            raise _refusal(
                f"deployment '{planned.name}': bind source '{source}' cannot be resolved: "
                f"{exc.strerror}"
            ) from None
        why = mount_denial(
            target,
            read_only=mount.read_only,
            deployment=planned.name,
            policy=real,
            cache_dir=real_cache,
        )
        if why:
            shown = f"'{source}'"
            if target != source:
                shown += f" resolves to '{target}', which"
            raise _refusal(
                f"deployment '{planned.name}': bind source {shown} {why} "
                "(policy rule 'allowed_mount_roots')",
                "links are followed: the policy applies to the path a link leads to",
            )
        mounts.append(Mount(source=target, target=mount.target, read_only=mount.read_only))
    return mounts


def admitted(path: Path, *, policy: Policy, cache_dir: Path, deployment: str) -> Path | None:
    """The real path of a local_path model when the policy lets `deployment` read it there."""
    target = os.path.realpath(path)
    why = mount_denial(
        target,
        read_only=True,
        deployment=deployment,
        policy=_real_policy(policy),
        cache_dir=os.path.realpath(cache_dir),
    )
    return Path(target) if why is None else None


def read_regular(path: Path, size: int | None = None) -> bytes:
    """Up to `size` bytes (all without it) of a regular file; anything else is refused at once,
    never waited on (a FIFO, a device, a socket)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise MaasError.single("model-metadata", f"cannot read {path}: {exc.strerror}") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # before fdopen, which refuses a folder itself
        os.close(fd)
        raise MaasError.single("model-metadata", f"{path} is not a regular file")
    with os.fdopen(fd, "rb") as handle:
        return handle.read() if size is None else handle.read(size)
