"""Admission policy: what a node lets a Deployment ask for.

The default policy denies privileged containers, host network/PID/IPC, bind mounts outside the
allowed roots (the model cache is always allowed), extra devices and added capabilities; an
optional allowlist restricts image registries. The compiler checks it (so `maasctl plan` and
`validate` report a denied spec at its line:col, naming the rule), and the agent re-checks it with
its own policy before acting.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence

from pydantic import Field

from maas.compiler.diagnostics import Diagnostic
from maas.compiler.documents import Loaded
from maas.compiler.models import Deployment, DeploymentBody, Strict


class Policy(Strict):
    allow_privileged: bool = False
    allow_host_network: bool = False
    allow_host_pid: bool = False
    allow_host_ipc: bool = False
    allowed_mount_roots: list[str] = Field(
        default_factory=lambda: ["/models", "/srv/models"],
        description="Host folders that may be bind-mounted (and hold local_path models); the "
        "model cache is always allowed.",
    )
    allowed_devices: list[str] = Field(default_factory=list)
    allowed_capabilities: list[str] = Field(default_factory=list)
    allowed_registries: list[str] | None = Field(
        default=None, description="Image name prefixes allowed (e.g. 'ghcr.io/'); null: any."
    )


def _under(path: str, roots: Sequence[str]) -> bool:
    normal = posixpath.normpath(path)
    return any(
        normal == posixpath.normpath(root) or normal.startswith(posixpath.normpath(root) + "/")
        for root in roots
    )


Violation = tuple[str, str, tuple[str | int, ...]]  # rule, message, path under `spec`


def check_policy(
    loaded: Loaded[Deployment], policy: Policy, *, cache_dir: str, image: str
) -> list[Diagnostic]:
    """Every way `loaded` breaks `policy`, each at the offending field, naming the rule."""
    spec, doc = loaded.model.spec, loaded.doc
    found = [
        *_host_access(spec, policy),
        *_mounts(spec, [*policy.allowed_mount_roots, cache_dir]),
        *_devices_and_capabilities(spec, policy),
        *_registry(spec, policy, image),
    ]
    return [
        Diagnostic(
            "policy",
            f"{message} (policy rule '{rule}')",
            doc.at(("spec", *path)),
            hints=(f"ask the node's operator to set '{rule}' in the policy if this is intended",),
        )
        for rule, message, path in found
    ]


def _host_access(spec: DeploymentBody, policy: Policy) -> list[Violation]:
    return [
        (f"allow_{flag}", f"'{flag}: true' is denied", (flag,))
        for flag in ("privileged", "host_network", "host_pid", "host_ipc")
        if getattr(spec, flag) and not getattr(policy, f"allow_{flag}")
    ]


def _mounts(spec: DeploymentBody, roots: list[str]) -> list[Violation]:
    allowed = ", ".join(roots) if roots else "none"
    found: list[Violation] = [
        (
            "allowed_mount_roots",
            f"bind mount of '{v.host_path}' is outside the allowed roots ({allowed})",
            ("volumes", i, "host_path"),
        )
        for i, v in enumerate(spec.volumes)
        if not _under(v.host_path, roots)
    ]
    if spec.source == "local_path" and spec.path and not _under(spec.path, roots):
        found.append(
            (
                "allowed_mount_roots",
                f"model path '{spec.path}' is outside the allowed roots ({allowed})",
                ("path",),
            )
        )
    return found


def _devices_and_capabilities(spec: DeploymentBody, policy: Policy) -> list[Violation]:
    allowed_caps = {c.upper().removeprefix("CAP_") for c in policy.allowed_capabilities}
    return [
        *[
            ("allowed_devices", f"device '{d}' is denied", ("devices", i))
            for i, d in enumerate(spec.devices)
            if d not in policy.allowed_devices
        ],
        *[
            ("allowed_capabilities", f"capability '{c}' is denied", ("cap_add", i))
            for i, c in enumerate(spec.cap_add)
            if c.upper().removeprefix("CAP_") not in allowed_caps
        ],
    ]


def _registry(spec: DeploymentBody, policy: Policy, image: str) -> list[Violation]:
    if policy.allowed_registries is None:
        return []
    if any(image.startswith(prefix) for prefix in policy.allowed_registries):
        return []
    where = ("image",) if spec.image else ("backend",)
    return [("allowed_registries", f"image '{image}' is not from an allowed registry", where)]
