"""llama.cpp's placement of one deployment (llama-box): the fit (llama_fit) and memory
(llama_memory) turned into the Plan's Placement, Estimate and Diagnostics.

Says why in `Placement.reason`, gives per-GPU VRAM, host RAM and the predicted decode speed in the
Estimate, and, when a model does not fit, an error with the numbers and what
`allow_cpu_offload: true` would give.
"""

from __future__ import annotations

from maas.compiler.diagnostics import Diagnostic
from maas.compiler.documents import Loaded
from maas.compiler.metadata import ModelMetadata
from maas.compiler.models import Deployment, Node
from maas.compiler.placement.attention import known_architecture
from maas.compiler.placement.common import (
    FIXED_S_PER_LAYER,
    Pinning,
    PlacementResult,
    allows_cpu,
    cpu_bandwidth,
    cpu_pinning,
    gpu_bandwidth,
    host_memory,
    replica_cpus,
    spec_position,
)
from maas.compiler.placement.llama_fit import LlamaChoice, experts_pattern, place_llama
from maas.compiler.placement.llama_memory import N_UBATCH, bytes_per_token, decode_tokens_per_s
from maas.compiler.plan import Estimate, Placement
from maas.compiler.units import default_context, gib

SPLIT_WORDS = {
    "down": "only the down projections",
    "gate_down": "only the gate and down projections",
    "ffn": "the whole FFN",
}


def llama_context(deployment: Loaded[Deployment], meta: ModelMetadata) -> int:
    return default_context(meta.context_length, deployment.model.spec.context_length)


def place_llama_box(
    deployment: Loaded[Deployment],
    node: Node,
    meta: ModelMetadata,
    margin: int,
    gpu_count: int | None = None,
) -> PlacementResult:
    spec = deployment.model.spec
    n_ctx = llama_context(deployment, meta)
    gpus = node.spec.gpus
    allow_cpu = allows_cpu(spec)
    slots = spec.parallel
    full, offloaded = place_llama(
        meta,
        gpus,
        n_ctx=n_ctx,
        margin=margin,
        allow_cpu=allow_cpu,
        gpu_count=gpu_count,
        parallel=slots,
    )
    if full is not None:
        return _llama_result(deployment, node, meta, full, n_ctx, Pinning(None, None, 0, ""))
    if not allow_cpu:
        _, would = place_llama(
            meta,
            gpus,
            n_ctx=n_ctx,
            margin=margin,
            allow_cpu=True,
            gpu_count=gpu_count,
            parallel=slots,
        )
        assert would is not None
        return PlacementResult(
            None, Estimate(), [_no_fit(deployment, node, meta, would, n_ctx, margin)]
        )
    assert offloaded is not None
    pin = cpu_pinning(node, offloaded.host_bytes, offloaded.gpus, spec.replicas)
    if offloaded.host_bytes > host_memory(node):
        message = (
            f"'{deployment.model.metadata.name}' fits nowhere: its CPU part needs "
            f"{gib(offloaded.host_bytes)} of host memory and node '{node.metadata.name}' has "
            f"{gib(host_memory(node))} available"
        )
        hint = "use a smaller quantization, a shorter context_length or a larger node"
        position = spec_position(deployment, "allow_cpu_offload")
        problem = Diagnostic("does-not-fit", message, position, hints=(hint,))
        return PlacementResult(None, Estimate(), [problem])
    return _llama_result(deployment, node, meta, offloaded, n_ctx, pin)


def _speed(
    node: Node, meta: ModelMetadata, choice: LlamaChoice, pin: Pinning, slots: int = 1
) -> float | None:
    """Decode tok/s of one request: weights, and the KV cache at half the planned context (the
    average over a conversation that fills it) divided among the slots."""
    on_gpu, on_cpu = bytes_per_token(meta, choice.layout)
    kv_gpu = sum(m.kv for m in choice.gpu_memory) // (2 * slots)
    return decode_tokens_per_s(
        on_gpu + kv_gpu,
        on_cpu + choice.host.kv // (2 * slots),
        gpu_bandwidth=gpu_bandwidth(choice.gpus),
        cpu_bandwidth=cpu_bandwidth(node, pin),
        fixed_s=FIXED_S_PER_LAYER * meta.block_count,
    )


def _llama_result(  # noqa: PLR0917
    deployment: Loaded[Deployment],
    node: Node,
    meta: ModelMetadata,
    choice: LlamaChoice,
    n_ctx: int,
    pin: Pinning,
) -> PlacementResult:
    layout = choice.layout
    total = meta.block_count + 1
    mode = {"gpu": "gpu", "cpu": "cpu"}.get(choice.kind, "hybrid")
    split = None
    if len(choice.gpus) > 1:
        split = [float(c) for c in layout.gpu_blocks]
        split[-1] += 1  # the output head is on the last GPU
    experts = sorted(layout.experts_on_cpu)
    placement = Placement(
        mode=mode,
        gpus=[g.uuid for g in choice.gpus],
        gpu_layers=layout.n_gpu_layers if mode != "cpu" else 0,
        layers_total=total,
        tensor_split=split,
        expert_offload=experts_pattern(experts, layout.split_ffn),
        cpuset=pin.cpuset,
        cpuset_mems=pin.mems,
        replica_cpus=replica_cpus(pin),
        threads=(pin.threads or node.spec.cpu.cores) if mode != "gpu" else None,
        context_length=n_ctx,
        batch_size=layout.n_ubatch if layout.n_ubatch != N_UBATCH else None,
        reason=_llama_reason(node, meta, choice, experts) + pin.reason,
    )
    details = {
        "context_length": n_ctx,
        "parallel": deployment.model.spec.parallel,
        "host_model_bytes": choice.host.model,
        "host_kv_bytes": choice.host.kv,
        "host_compute_bytes": choice.host.compute,
    }
    for i, memory in enumerate(choice.gpu_memory):
        details |= {
            f"gpu{i}_model_bytes": memory.model,
            f"gpu{i}_kv_bytes": memory.kv,
            f"gpu{i}_compute_bytes": memory.compute,
        }
    estimate = Estimate(
        vram_bytes=[m.total for m in choice.gpu_memory],
        ram_bytes=choice.host.total,
        decode_tokens_per_s=_speed(node, meta, choice, pin, deployment.model.spec.parallel),
        details=details,
    )
    return PlacementResult(placement, estimate, _architecture_warning(deployment, meta))


def _architecture_warning(deployment: Loaded[Deployment], meta: ModelMetadata) -> list[Diagnostic]:
    if known_architecture(meta):
        return []
    return [
        Diagnostic(
            "unknown-architecture",
            f"'{deployment.model.metadata.name}': the memory estimate does not know llama.cpp's "
            f"cache layout for architecture '{meta.architecture}'; it assumes full-context KV "
            "on every layer, which may be far from what llama.cpp allocates",
            spec_position(deployment, "file"),
            severity="warning",
            hints=("check the container's log for its KV and compute buffer sizes",),
        )
    ]


def _llama_reason(node: Node, meta: ModelMetadata, choice: LlamaChoice, experts: list[int]) -> str:
    total = meta.block_count + 1
    vram = ", ".join(
        f"{gib(m.total)} on GPU {g.index}"
        for g, m in zip(choice.gpus, choice.gpu_memory, strict=True)
    )
    if choice.kind == "gpu":
        return f"all {total} layers on {len(choice.gpus)} GPU(s): {vram}"
    if choice.kind == "experts":
        split = choice.layout.split_ffn
        part = f"; of layer {experts[0]} {SPLIT_WORDS[split]}, as llama.cpp's fit" if split else ""
        return (
            f"all {total} layers on the GPU ({vram}) with the routed experts of "
            f"{len(experts)}/{meta.block_count} layers in host memory ({gib(choice.host.total)}"
            f"{part})"
        )
    if choice.kind == "layers":
        return (
            f"{choice.layout.n_gpu_layers}/{total} layers on the GPU ({vram}), the rest in "
            f"host memory ({gib(choice.host.total)})"
        )
    if not node.spec.gpus:  # none on the node, or `gpus: none`
        return f"on the CPU; {gib(choice.host.total)} in host memory"
    return (
        f"no GPU of node '{node.metadata.name}' has room left; {gib(choice.host.total)} in "
        "host memory"
    )


def _no_fit(  # noqa: PLR0917
    deployment: Loaded[Deployment],
    node: Node,
    meta: ModelMetadata,
    would: LlamaChoice,
    n_ctx: int,
    margin: int,
) -> Diagnostic:
    from maas.compiler.placement.llama_memory import LlamaLayout, llama_memory

    slots = deployment.model.spec.parallel
    whole = llama_memory(
        meta, LlamaLayout((meta.block_count,), True), n_ctx=n_ctx, parallel=slots
    ).gpus[0]
    need = whole.total + margin
    frees = ", ".join(f"{gib(g.free_bytes)} free on {g.uuid}" for g in node.spec.gpus) or "no GPU"
    message = (
        f"'{deployment.model.metadata.name}' needs {gib(need)} VRAM (model {gib(whole.model)}, "
        f"KV cache {gib(whole.kv)} for {n_ctx} tokens, compute {gib(whole.compute)}, margin "
        f"{gib(margin)}); node '{node.metadata.name}' has {frees}"
    )
    speed = _speed(node, meta, would, Pinning(None, None, 0, ""), slots)
    about = f" (about {speed:g} tok/s)" if speed else ""
    if would.kind == "cpu":
        offload = f"with allow_cpu_offload: true it would run on the CPU{about}"
    elif would.kind == "experts":
        offload = (
            f"with allow_cpu_offload: true it would keep the routed experts of "
            f"{len(would.layout.experts_on_cpu)}/{meta.block_count} layers on the CPU{about}"
        )
    else:
        offload = (
            f"with allow_cpu_offload: true it would run {would.layout.n_gpu_layers}/"
            f"{meta.block_count + 1} layers on the GPU{about}"
        )
    return Diagnostic(
        "does-not-fit",
        message,
        spec_position(deployment, "allow_cpu_offload"),
        hints=(offload, "or use a smaller quantization or a shorter context_length"),
    )
