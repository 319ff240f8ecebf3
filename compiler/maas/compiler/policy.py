"""Admission policy: what a node lets a Deployment ask for.

The default policy denies privileged containers, host network/PID/IPC, bind mounts outside the
allowed roots, extra devices, added capabilities and the environment names that belong to the
platform (GPU visibility, the dynamic loader); an optional allowlist restricts image registries,
matched on the parsed image reference. The compiler checks it (so `maasctl plan` and `validate`
report a denied spec at its line:col, naming the rule), and the agent re-checks it with its own
policy before acting, bind mounts on the paths they resolve to right before a container is
created (`mount_denial` is the one rule for both).

The model cache is the platform's: `<cache>/models` (what the agent downloads) may be mounted
read-only, and `<cache>/deployments/<name>` is the one writable folder of deployment `<name>`,
never mountable by another one. A repository's policy can only narrow a node's (`narrow`).
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydantic import Field, field_validator

from maas.compiler.diagnostics import Diagnostic
from maas.compiler.documents import Loaded
from maas.compiler.models import Deployment, DeploymentBody, Strict

# Environment names the platform owns. GPU visibility: the NVIDIA Container Toolkit reads these
# from the container's environment ("Specialized Configurations with Docker", docs.nvidia.com/
# datacenter/cloud-native/container-toolkit: NVIDIA_VISIBLE_DEVICES, NVIDIA_DRIVER_CAPABILITIES,
# NVIDIA_REQUIRE_*, NVIDIA_DISABLE_REQUIRE, NVIDIA_MIG_CONFIG_DEVICES, ...); CUDA, ROCm and HIP
# pick devices by the *_VISIBLE_DEVICES names. The loader: every LD_* name of ld.so(8)'s
# ENVIRONMENT section, and GCONV_PATH (glibc's sysdeps/generic/unsecvars.h: it loads code).
PLATFORM_ENV = (
    "NVIDIA_*",
    "CUDA_VISIBLE_DEVICES",
    "CUDA_DEVICE_ORDER",
    "HIP_VISIBLE_DEVICES",
    "ROCR_VISIBLE_DEVICES",
    "GPU_DEVICE_ORDINAL",
    "LD_*",
    "GCONV_PATH",
)


class Policy(Strict):
    allow_privileged: bool = False
    allow_host_network: bool = False
    allow_host_pid: bool = False
    allow_host_ipc: bool = False
    allowed_mount_roots: list[str] = Field(
        default_factory=lambda: ["/models", "/srv/models"],
        description="Host folders that may be bind-mounted (and hold local_path models), "
        "compared on the paths they resolve to; the cache's model store is always allowed "
        "read-only.",
    )
    allowed_devices: list[str] = Field(default_factory=list)
    allowed_capabilities: list[str] = Field(default_factory=list)
    allowed_registries: list[str] | None = Field(
        default=None,
        description="Registries, or registry/path prefixes, images may come from (e.g. "
        "'ghcr.io', 'ghcr.io/org'), matched on the parsed reference; null: any.",
    )
    allow_distributed: bool = Field(
        default=False,
        description="Whether deployments may be split across nodes (spec.distributed). The "
        "traffic between a group's nodes is not authenticated (llama.cpp calls its RPC "
        "'fragile and insecure'): allow it only where every node's rpc_address is on a "
        "private network that nothing else reaches.",
    )
    allowed_env: list[str] = Field(
        default_factory=list,
        description="Environment names that belong to the platform (GPU visibility, the "
        "dynamic loader: " + ", ".join(PLATFORM_ENV) + ") which specs may set nonetheless.",
    )

    @field_validator("allowed_registries")
    @classmethod
    def _registries(cls, value: list[str] | None) -> list[str] | None:
        for entry in value or []:
            if parse_registry_entry(entry) is None:
                raise ValueError(
                    f"'{entry}' is not a registry or registry/path prefix (e.g. 'ghcr.io/org')"
                )
        return value


def _under(path: str, roots: Sequence[str]) -> bool:
    normal = posixpath.normpath(path)
    for root in roots:
        base = posixpath.normpath(root)
        if normal == base or normal.startswith(base.rstrip("/") + "/"):
            return True
    return False


def model_store(cache_dir: str) -> str:
    """Where the agent keeps downloaded models; mounted read-only into containers."""
    return f"{cache_dir}/models"


def work_dir(cache_dir: str, deployment: str) -> str:
    """The one writable folder of `deployment` under the cache (its backend's own downloads)."""
    return f"{cache_dir}/deployments/{deployment}"


def mount_denial(
    path: str, *, read_only: bool, deployment: str, policy: Policy, cache_dir: str
) -> str | None:
    """Why `policy` denies bind-mounting host `path` into `deployment`; None when it allows it.

    The compiler passes the path's text, the agent the real path it resolves to (and real roots).
    """
    if _under(path, [work_dir(cache_dir, deployment)]):
        return None
    if _under(path, [f"{cache_dir}/deployments"]):
        return "is another deployment's private folder"
    if _under(path, [model_store(cache_dir)]):
        return None if read_only else "is in the model store, which is mounted read-only"
    if _under(path, policy.allowed_mount_roots):
        return None
    allowed = ", ".join(policy.allowed_mount_roots) or "none"
    return f"is outside the allowed roots ({allowed})"


Violation = tuple[str, str, tuple[str | int, ...]]  # rule, message, path under `spec`


def check_policy(
    loaded: Loaded[Deployment], policy: Policy, *, cache_dir: str, image: str
) -> list[Diagnostic]:
    """Every way `loaded` breaks `policy`, each at the offending field, naming the rule."""
    spec, doc = loaded.model.spec, loaded.doc
    found = [
        *_host_access(spec, policy),
        *_mounts(spec, loaded.model.metadata.name, policy, cache_dir),
        *_devices_and_capabilities(spec, policy),
        *_environment(spec, policy),
        *_registry(spec, policy, image),
        *_distributed(spec, policy),
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


def _distributed(spec: DeploymentBody, policy: Policy) -> list[Violation]:
    if spec.distributed and not policy.allow_distributed:
        return [
            (
                "allow_distributed",
                "distributed inference across nodes is denied (its traffic is not authenticated)",
                ("distributed",),
            )
        ]
    return []


def _mounts(spec: DeploymentBody, name: str, policy: Policy, cache_dir: str) -> list[Violation]:
    found: list[Violation] = []
    for i, volume in enumerate(spec.volumes):
        why = mount_denial(
            volume.host_path,
            read_only=volume.read_only,
            deployment=name,
            policy=policy,
            cache_dir=cache_dir,
        )
        if why:
            found.append(
                (
                    "allowed_mount_roots",
                    f"bind mount of '{volume.host_path}' {why}",
                    ("volumes", i, "host_path"),
                )
            )
    if spec.source == "local_path" and spec.path:
        why = mount_denial(
            spec.path, read_only=True, deployment=name, policy=policy, cache_dir=cache_dir
        )
        if why:
            found.append(("allowed_mount_roots", f"model path '{spec.path}' {why}", ("path",)))
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


def platform_env(name: str) -> bool:
    """Whether an environment name belongs to the platform (compared in upper case: a runtime
    that folds case must not let `ld_preload` through)."""
    upper = name.upper()
    return any(fnmatch.fnmatchcase(upper, pattern) for pattern in PLATFORM_ENV)


def _environment(spec: DeploymentBody, policy: Policy) -> list[Violation]:
    return [
        (
            "allowed_env",
            f"environment name '{name}' belongs to the platform (GPU visibility or the "
            "dynamic loader)",
            ("env", name),
        )
        for name in spec.env
        if platform_env(name) and name not in policy.allowed_env
    ]


# Image references, after distribution/reference (github.com/distribution/reference, regexp.go
# and normalize.go's splitDockerDomain): the first component is a registry host when it holds a
# '.' or ':' or is 'localhost' (or has upper case); else the image is on docker.io, and a
# one-component name there is under 'library/'.
_HOST = re.compile(
    r"^(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
    r"(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*(?::[0-9]+)?$"
    r"|^\[[a-fA-F0-9:]+\](?::[0-9]+)?$"
)
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}$")
DEFAULT_REGISTRY = "docker.io"


@dataclass(frozen=True)
class ImageName:
    """A parsed image reference without its tag or digest: registry host and path components."""

    host: str
    path: tuple[str, ...]

    def within(self, other: ImageName) -> bool:
        """Whether every image this name covers is covered by `other` (same host, its path a
        prefix of ours): 'ghcr.io/org' is within 'ghcr.io', not within 'ghcr.io/orgevil'."""
        return self.host == other.host and self.path[: len(other.path)] == other.path


def _split_host(name: str) -> tuple[str, str]:
    first, slash, rest = name.partition("/")
    if slash and (any(c in first for c in ".:") or first == "localhost" or first != first.lower()):
        host = first.lower()
        return ("docker.io" if host == "index.docker.io" else host), rest
    return DEFAULT_REGISTRY, name


def parse_image(reference: str) -> ImageName | None:
    """The registry and path of an image reference; None when it is not a valid reference."""
    name, at, digest = reference.partition("@")
    if at and not _DIGEST.match(digest):
        return None
    last = name.rfind("/")
    colon = name.rfind(":")
    if colon > last:
        name, tag = name[:colon], name[colon + 1 :]
        if not _TAG.match(tag):
            return None
    host, rest = _split_host(name)
    components = tuple(rest.split("/"))
    if not _HOST.match(host) or not all(_COMPONENT.match(c) for c in components):
        return None
    if host == DEFAULT_REGISTRY and len(components) == 1:
        components = ("library", *components)
    return ImageName(host, components)


def parse_registry_entry(entry: str) -> ImageName | None:
    """An allowlist entry: a registry host ('ghcr.io', 'registry.local:5000'), optionally with a
    path prefix ('ghcr.io/org/'); a name without a host is on docker.io ('nvidia')."""
    text = entry.strip().rstrip("/")
    if not text:
        return None
    first = text.split("/", 1)[0]
    components: tuple[str, ...] = ()
    if "/" not in text and (any(c in first for c in ".:") or first == "localhost"):
        host = first.lower()
    else:
        host, rest = _split_host(text)
        components = tuple(rest.split("/"))
        if not all(_COMPONENT.match(c) for c in components):
            return None
    if not _HOST.match(host):
        return None
    return ImageName("docker.io" if host == "index.docker.io" else host, components)


def _registry(spec: DeploymentBody, policy: Policy, image: str) -> list[Violation]:
    if policy.allowed_registries is None:
        return []
    where = ("image",) if spec.image else ("backend",)
    parsed = parse_image(image)
    if parsed is None:
        return [("allowed_registries", f"image '{image}' is not a valid image reference", where)]
    entries = [parse_registry_entry(e) for e in policy.allowed_registries]
    if any(entry is not None and parsed.within(entry) for entry in entries):
        return []
    return [("allowed_registries", f"image '{image}' is not from an allowed registry", where)]


def narrow(node: Policy, repository: Policy | None) -> Policy:
    """What both policies allow: a repository's policy can take away from the node's, never add.

    Flags are and-ed; mount roots, registries (as path prefixes) meet at the deeper of two nested
    entries; devices, capabilities and environment names are intersected.
    """
    if repository is None:
        return node
    roots = _meet(
        node.allowed_mount_roots,
        repository.allowed_mount_roots,
        lambda a, b: _under(a, [b]),
    )
    registries: list[str] | None
    if node.allowed_registries is None or repository.allowed_registries is None:
        registries = (
            repository.allowed_registries
            if node.allowed_registries is None
            else node.allowed_registries
        )
    else:

        def within(a: str, b: str) -> bool:
            pa, pb = parse_registry_entry(a), parse_registry_entry(b)
            return pa is not None and pb is not None and pa.within(pb)

        registries = _meet(node.allowed_registries, repository.allowed_registries, within)
    caps = {c.upper().removeprefix("CAP_") for c in repository.allowed_capabilities}
    return Policy(
        allow_privileged=node.allow_privileged and repository.allow_privileged,
        allow_host_network=node.allow_host_network and repository.allow_host_network,
        allow_distributed=node.allow_distributed and repository.allow_distributed,
        allow_host_pid=node.allow_host_pid and repository.allow_host_pid,
        allow_host_ipc=node.allow_host_ipc and repository.allow_host_ipc,
        allowed_mount_roots=roots,
        allowed_devices=[d for d in node.allowed_devices if d in repository.allowed_devices],
        allowed_capabilities=[
            c for c in node.allowed_capabilities if c.upper().removeprefix("CAP_") in caps
        ],
        allowed_registries=registries,
        allowed_env=[n for n in node.allowed_env if n in repository.allowed_env],
    )


def _meet(ours: list[str], theirs: list[str], within: Callable[[str, str], bool]) -> list[str]:
    """Entries allowed by both lists of prefixes: of each nested pair, the narrower one."""
    found: list[str] = []
    for a in ours:
        for b in theirs:
            narrower = a if within(a, b) else b if within(b, a) else None
            if narrower is not None and narrower not in found:
                found.append(narrower)
    return found
