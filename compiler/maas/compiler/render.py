"""Rendering: one checked Deployment plus its placement -> the exact container of the Plan.

Produces image, argv (never interpreted by a shell), env, mounts, limits, health and the model
reference the agent fetches, then stamps the spec hash.

Mounts give a container only what it needs: its model read-only (the repository's folder in the
cache's model store, or the local_path), its own writable folder under the cache when its backend
downloads by itself (custom backends, or a command that uses `{{hf_cache}}`), and the spec's
volumes; never the whole cache, which deployments would share.
"""

from __future__ import annotations

from dataclasses import dataclass

from maas.compiler.backends import Backend, BackendRule
from maas.compiler.diagnostics import Diagnostic
from maas.compiler.documents import Loaded
from maas.compiler.models import Deployment, DeploymentBody
from maas.compiler.plan import (
    Estimate,
    HealthCheck,
    Limits,
    ModelRef,
    Mount,
    OnDemandPlan,
    Placement,
    PlanDeployment,
    PlanDiagnostic,
    Security,
    spec_hash,
)
from maas.compiler.policy import Policy, model_store, work_dir
from maas.compiler.template import placeholders, render, split_command
from maas.compiler.units import GIB

GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class CompileOptions:
    """Node-level settings the compiler needs; the agent fills them from its configuration."""

    cache_dir: str = "/var/lib/maas/cache"
    port_range: tuple[int, int] = (40000, 40999)
    gpu_margin_bytes: int = GIB
    policy: Policy | None = None  # None: no admission check (the CLI and agent pass one)
    # Ports the node's containers hold outside the plan (the spare port of an overlapping
    # roll-out's container, maas.agent.reconcile.overlap): given to no deployment.
    reserved_ports: frozenset[int] = frozenset()

    def hf_cache(self, deployment: str) -> str:
        """The Hugging Face cache of a backend that downloads by itself: in its own folder."""
        return f"{work_dir(self.cache_dir, deployment)}/huggingface"


# The revision a hub serves when none is named (huggingface_hub's DEFAULT_REVISION; ModelScope's
# DEFAULT_MODEL_REVISION in modelscope/hub/constants.py).
DEFAULT_REVISION = {"huggingface": "main", "modelscope": "master"}


def model_dir(options: CompileOptions, source: str, repo_id: str) -> str:
    """A hub repository's folder in the model store: one folder per revision inside."""
    return f"{model_store(options.cache_dir)}/{source}/{repo_id}"


def revision_dir(options: CompileOptions, spec: DeploymentBody, commit: str | None) -> str:
    """The folder of one revision: named by its commit when the edge resolved it (a plan that
    is reproducible), else by the revision's name."""
    assert spec.repo_id is not None
    name = commit or spec.revision or DEFAULT_REVISION[spec.source]
    return f"{model_dir(options, spec.source, spec.repo_id)}/{name}"


def model_ref(
    spec: DeploymentBody,
    options: CompileOptions,
    resolved_file: str | None,
    *,
    commit: str | None = None,
    backend_downloads: bool = False,
) -> ModelRef:
    if spec.source == "local_path":
        assert spec.path is not None
        return ModelRef(source="local_path", path=spec.path, download=False, fetched_by="none")
    assert spec.repo_id is not None
    if backend_downloads:
        # The backend fetches the model into its own folder (`{{hf_cache}}`): nothing to mount.
        return ModelRef(
            source=spec.source,
            repo_id=spec.repo_id,
            file=spec.file,
            revision=spec.revision,
            path=model_dir(options, spec.source, spec.repo_id),
            download=False,
            fetched_by="backend",
        )
    base = revision_dir(options, spec, commit)
    file = resolved_file or spec.file
    path = f"{base}/{file}" if file and not (GLOB_CHARS & set(file)) else base
    return ModelRef(
        source=spec.source,
        repo_id=spec.repo_id,
        file=spec.file,
        revision=spec.revision,
        commit=commit,
        folder=base,
        path=path,
        download=True,
        fetched_by="agent",
    )


def render_deployment(
    loaded: Loaded[Deployment],
    *,
    backend: Backend,
    rule: BackendRule,
    placement: Placement,
    estimate: Estimate,
    ports: list[int],
    options: CompileOptions,
    resolved_file: str | None = None,
    commit: str | None = None,
    warnings: list[Diagnostic] | None = None,
) -> PlanDeployment:
    deployment = loaded.model
    spec = deployment.spec
    if spec.command is not None:
        template, _ = split_command(spec.command, loaded.doc, ("spec", "command"))
        base = list(template.args) if template else []
    else:
        base = list(backend.template)
    # A custom backend fetches its model itself unless its command names `{{model_path}}`.
    backend_downloads = backend.name == "custom" and "model_path" not in placeholders(base)
    model = model_ref(
        spec, options, resolved_file, commit=commit, backend_downloads=backend_downloads
    )
    values = {
        "port": str(ports[0]),
        "model_path": model.path,
        "model_name": deployment.metadata.name,
        "hf_cache": options.hf_cache(deployment.metadata.name),
        "gpu_ids": ",".join(placement.gpus),
        "gpu_count": str(len(placement.gpus)),
    }
    command = render(base, values) + placement_flags(backend, spec, placement)
    command += list(spec.backend_parameters)
    image = spec.image or backend.image_for(gpu=placement.mode != "cpu")
    assert image is not None, "checked: custom backends carry an image"
    if spec.source == "local_path":
        mounts = [Mount(source=model.path, target=model.path, read_only=True)]
    elif model.folder is not None:
        # Only its own revision, read-only: deployments of the same revision share it.
        mounts = [Mount(source=model.folder, target=model.folder, read_only=True)]
    else:
        mounts = []
    if backend.name == "custom" or "hf_cache" in placeholders(base):
        own = work_dir(options.cache_dir, deployment.metadata.name)
        mounts.append(Mount(source=own, target=own))
    mounts += [
        Mount(source=v.host_path, target=v.container_path, read_only=v.read_only)
        for v in spec.volumes
    ]
    health_paths = [spec.health.path] if spec.health.path else list(backend.health_paths)
    rendered = PlanDeployment(
        name=deployment.metadata.name,
        backend=backend.name,
        backend_rule=rule,
        image=image,
        entrypoint=spec.entrypoint,
        command=command,
        env=dict(sorted(spec.env.items())),
        port=ports[0],
        ports=ports[: spec.replicas],
        replicas=spec.replicas,
        mounts=mounts,
        limits=Limits(
            memory_bytes=spec.resources.memory_bytes,
            nano_cpus=int(spec.resources.cpus * 1e9) if spec.resources.cpus else None,
        ),
        health=HealthCheck(
            paths=health_paths,
            startup_timeout_s=spec.health.startup_timeout_s,
            period_s=spec.health.period_s,
        ),
        model=model,
        labels=dict(sorted(deployment.metadata.labels.items())),
        aliases=list(spec.aliases),
        generic_proxy=spec.generic_proxy,
        security=Security(
            privileged=spec.privileged,
            host_network=spec.host_network,
            host_pid=spec.host_pid,
            host_ipc=spec.host_ipc,
            devices=list(spec.devices),
            cap_add=list(spec.cap_add),
        ),
        placement=placement,
        estimate=estimate,
        on_demand=(
            OnDemandPlan(idle_timeout_s=spec.on_demand.idle_timeout_s, group=spec.on_demand.group)
            if spec.on_demand
            else None
        ),
        diagnostics=[PlanDiagnostic.of(d) for d in warnings or []],
    )
    return rendered.model_copy(update={"spec_hash": spec_hash(rendered)})


def placement_flags(backend: Backend, spec: DeploymentBody, placement: Placement) -> list[str]:
    """Arguments through which the backend learns the placement, in catalogue order."""
    flags = _context_flags(backend, spec, placement)
    if backend.gpu_layers_flag:
        layers = {"gpu": 999, "cpu": 0}.get(placement.mode, placement.gpu_layers or 0)
        if placement.mode == "gpu" and placement.layers_total is not None:
            layers = placement.layers_total
        flags += [backend.gpu_layers_flag, str(layers)]
    if backend.tensor_split_flag and placement.tensor_split:
        flags += [backend.tensor_split_flag, ",".join(f"{x:g}" for x in placement.tensor_split)]
    if backend.override_tensor_flag and placement.expert_offload:
        flags += [backend.override_tensor_flag, ",".join(placement.expert_offload)]
    if backend.tensor_parallel_flag and placement.tensor_parallel_size:
        flags += [backend.tensor_parallel_flag, str(placement.tensor_parallel_size)]
    for flag in backend.batch_flags if placement.batch_size else ():
        flags += [flag, str(placement.batch_size)]
    if backend.threads_flag and placement.threads:
        flags += [backend.threads_flag, str(placement.threads)]
    if backend.gpu_memory_utilization_flag and placement.gpu_memory_utilization:
        flags += [backend.gpu_memory_utilization_flag, f"{placement.gpu_memory_utilization:g}"]
    if backend.cpu_offload_flag and placement.cpu_offload_gb:
        flags += [backend.cpu_offload_flag, str(placement.cpu_offload_gb)]
    return flags + list(backend.pinned_args)


def _context_flags(backend: Backend, spec: DeploymentBody, placement: Placement) -> list[str]:
    flags: list[str] = []
    context = placement.context_length or spec.context_length  # placement may lower it
    slots = spec.parallel if backend.parallel_flag else 1
    if backend.context_flag and context:
        # llama-server divides --ctx-size among its slots (llama-context.cpp: n_ctx_seq =
        # n_ctx / n_seq_max without --kv-unified), so each slot gets context_length
        flags += [backend.context_flag, str(context * slots)]
    if backend.parallel_flag:
        flags += [backend.parallel_flag, str(slots)]
    return flags
