"""vLLM's placement of one deployment: tensor-parallel size, max model length and memory
utilisation from model metadata, as the Plan's Placement, Estimate and Diagnostics.

vLLM takes `--gpu-memory-utilization` x total memory on every rank for weights / tp, an activation
reserve and the KV cache (2 x layers x kv_heads per rank x head_dim x dtype bytes per token).
The chosen fraction must not exceed what is free on each GPU (minus the margin). The context is the
spec's `context_length`, else min(model maximum, 8192); when its KV cache does not fit it is lowered
(with a warning). Weights too large for the GPUs go partly to host memory with `--cpu-offload-gb`
when the spec allows it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from maas.compiler.diagnostics import Diagnostic
from maas.compiler.documents import Loaded
from maas.compiler.metadata import ModelMetadata
from maas.compiler.models import Deployment, Gpu, Node
from maas.compiler.placement.common import (
    FIXED_S_PER_LAYER,
    PlacementResult,
    gpu_bandwidth,
    host_memory,
    spec_position,
)
from maas.compiler.plan import Estimate, Placement
from maas.compiler.units import DEFAULT_CONTEXT, GIB, default_context, gib

DEFAULT_UTILIZATION = 0.9
ACTIVATION_RESERVE = 2 * GIB  # profile-run activations, CUDA graphs, non-torch allocations
MIN_CONTEXT = 1024
CONTEXT_STEP = 256


@dataclass(frozen=True)
class VllmChoice:
    gpus: tuple[Gpu, ...]
    tensor_parallel_size: int
    max_model_len: int
    utilization: float
    cpu_offload_gb: int
    weight_bytes_per_gpu: int
    kv_bytes_per_gpu: int
    wanted_len: int

    @property
    def lowered(self) -> bool:
        return self.max_model_len < self.wanted_len


def kv_bytes_per_token(meta: ModelMetadata, tp: int) -> int:
    kv_heads = max(1, meta.head_count_kv // tp)
    dtype = max(meta.dtype_bytes or 2.0, 2.0)  # quantized weights keep a 16-bit KV cache
    return int(2 * meta.block_count * kv_heads * meta.key_length * dtype)


def wanted_context(meta: ModelMetadata, spec_context: int | None) -> int:
    return default_context(meta.context_length, spec_context)


def _tp_sizes(meta: ModelMetadata, n_gpus: int, exact: int | None) -> list[int]:
    sizes = [exact] if exact else [1, 2, 4, 8, 16]
    return [tp for tp in sizes if tp <= n_gpus and meta.head_count % tp == 0]


def _utilization(gpus: Sequence[Gpu], margin: int) -> float:
    fractions = [(g.free_bytes - margin) / g.memory_total_bytes for g in gpus]
    return max(0.0, min(DEFAULT_UTILIZATION, math.floor(min(fractions) * 100) / 100))


def needed_utilization(need_bytes: int, gpus: Sequence[Gpu], cap: float) -> float:
    """The smallest fraction (in hundredths) of each GPU's total memory that holds `need_bytes`,
    never above `cap`; the rest of the GPU stays free for the node's other deployments."""
    smallest = min(g.memory_total_bytes for g in gpus)
    return min(cap, math.ceil(need_bytes / smallest * 100) / 100)


def size_vllm(
    meta: ModelMetadata,
    gpus: Sequence[Gpu],
    *,
    spec_context: int | None,
    margin: int,
    allow_cpu: bool,
    gpu_count: int | None = None,
) -> VllmChoice | None:
    """The smallest tensor-parallel size that holds weights, reserve and KV; None if none can.

    `gpus` carry what is left of each GPU for this deployment; the fraction chosen is the one its
    weights, reserve and KV cache for the wanted context need (`compile_plan` later hands it what
    the node's other deployments leave). `gpu_count` (the spec's `gpus: N`) fixes the size."""
    wanted = wanted_context(meta, spec_context)
    by_free = sorted(gpus, key=lambda g: (-g.free_bytes, g.index))
    best_short: VllmChoice | None = None
    sizes = _tp_sizes(meta, len(by_free), gpu_count)
    for tp in sizes:
        chosen = tuple(sorted(by_free[:tp], key=lambda g: g.index))
        cap = _utilization(chosen, margin)
        budget = int(cap * min(g.memory_total_bytes for g in chosen))
        weights = -(-meta.weight_bytes // tp)
        room = budget - weights - ACTIVATION_RESERVE
        per_token = kv_bytes_per_token(meta, tp)
        fitting = min(wanted, room // per_token // CONTEXT_STEP * CONTEXT_STEP) if room > 0 else 0
        kv = fitting * per_token
        util = needed_utilization(weights + ACTIVATION_RESERVE + kv, chosen, cap)
        choice = VllmChoice(chosen, tp, fitting, util, 0, weights, kv, wanted)
        if fitting >= wanted:
            return choice
        if fitting >= MIN_CONTEXT and best_short is None:
            best_short = replace(choice, utilization=cap)
    if best_short is not None or not allow_cpu or not by_free or not sizes:
        return best_short
    return _cpu_offload(meta, by_free, wanted, margin, max(sizes))


def _cpu_offload(
    meta: ModelMetadata, by_free: Sequence[Gpu], wanted: int, margin: int, tp: int
) -> VllmChoice | None:
    chosen = tuple(sorted(by_free[:tp], key=lambda g: g.index))
    util = _utilization(chosen, margin)
    budget = int(util * min(g.memory_total_bytes for g in chosen))
    per_token = kv_bytes_per_token(meta, tp)
    weights = -(-meta.weight_bytes // tp)
    length = min(wanted, DEFAULT_CONTEXT)
    gpu_weights = budget - ACTIVATION_RESERVE - length * per_token
    if gpu_weights <= 0:
        return None
    offload_gb = math.ceil((weights - gpu_weights) / GIB)
    return VllmChoice(chosen, tp, length, util, offload_gb, weights, length * per_token, wanted)


def place_vllm(
    deployment: Loaded[Deployment],
    node: Node,
    meta: ModelMetadata,
    margin: int,
    gpu_count: int | None = None,
) -> PlacementResult:
    spec = deployment.model.spec
    if gpu_count and meta.head_count % gpu_count:
        problem = Diagnostic(
            "tensor-parallel",
            f"'{deployment.model.metadata.name}' asks for {gpu_count} GPUs, but vLLM's tensor "
            f"parallel size must divide the model's {meta.head_count} attention heads",
            spec_position(deployment, "gpus"),
            hints=("use a GPU count that divides the heads (1, 2, 4 or 8 usually)",),
        )
        return PlacementResult(None, Estimate(), [problem])
    choice = size_vllm(
        meta,
        node.spec.gpus,
        spec_context=spec.context_length,
        margin=margin,
        allow_cpu=spec.allow_cpu_offload,
        gpu_count=gpu_count,
    )
    if choice is None:
        return PlacementResult(None, Estimate(), [_vllm_no_fit(deployment, node, meta, margin)])
    problems: list[Diagnostic] = []
    if choice.cpu_offload_gb and choice.cpu_offload_gb * GIB > host_memory(node):
        problems.append(
            Diagnostic(
                "does-not-fit",
                f"'{deployment.model.metadata.name}' needs {choice.cpu_offload_gb} GiB of "
                f"host memory for --cpu-offload-gb; node '{node.metadata.name}' has "
                f"{gib(host_memory(node))} available",
                spec_position(deployment, "allow_cpu_offload"),
            )
        )
        return PlacementResult(None, Estimate(), problems)
    if choice.lowered:
        problems.append(_lowered(deployment, choice))
    return PlacementResult(_vllm_placement(choice), _vllm_estimate(meta, choice), problems)


def _vllm_placement(choice: VllmChoice) -> Placement:
    offload = (
        f", {choice.cpu_offload_gb} GiB of weights per GPU in host memory"
        if (choice.cpu_offload_gb)
        else ""
    )
    return Placement(
        mode="hybrid" if choice.cpu_offload_gb else "gpu",
        gpus=[g.uuid for g in choice.gpus],
        tensor_parallel_size=choice.tensor_parallel_size,
        context_length=choice.max_model_len,
        gpu_memory_utilization=choice.utilization,
        cpu_offload_gb=choice.cpu_offload_gb or None,
        reason=(
            f"tensor parallel over {choice.tensor_parallel_size} GPU(s): "
            f"{gib(choice.weight_bytes_per_gpu)} weights + {gib(choice.kv_bytes_per_gpu)} KV for "
            f"{choice.max_model_len} tokens per GPU need {choice.utilization:g} of its memory"
            f"{offload}"
        ),
    )


def _vllm_estimate(meta: ModelMetadata, choice: VllmChoice) -> Estimate:
    bandwidth = gpu_bandwidth(choice.gpus)
    speed = None
    if bandwidth and not choice.cpu_offload_gb:
        per_token = choice.weight_bytes_per_gpu / bandwidth + FIXED_S_PER_LAYER * meta.block_count
        speed = round(1 / per_token, 1)
    return Estimate(
        vram_bytes=vllm_vram(choice.utilization, choice.gpus),
        ram_bytes=choice.cpu_offload_gb * GIB * len(choice.gpus) or None,
        decode_tokens_per_s=speed,
        details={
            "weight_bytes": meta.weight_bytes,
            "kv_bytes_per_gpu": choice.kv_bytes_per_gpu,
            "activation_reserve_bytes": ACTIVATION_RESERVE,
            "context_length": choice.max_model_len,
        },
    )


def vllm_vram(utilization: float, gpus: Sequence[Gpu]) -> list[int]:
    """What vLLM takes on each GPU: `--gpu-memory-utilization` x the GPU's total memory (its KV
    cache fills whatever its weights and activations leave of that share)."""
    return [int(utilization * g.memory_total_bytes) for g in gpus]


def _lowered(deployment: Loaded[Deployment], choice: VllmChoice) -> Diagnostic:
    return Diagnostic(
        "context-lowered",
        f"'{deployment.model.metadata.name}': the KV cache for {choice.wanted_len} tokens does not "
        f"fit; --max-model-len lowered to {choice.max_model_len}",
        spec_position(deployment, "context_length"),
        severity="warning",
        hints=("set context_length to choose, or use more GPUs",),
    )


def _vllm_no_fit(
    deployment: Loaded[Deployment], node: Node, meta: ModelMetadata, margin: int
) -> Diagnostic:
    frees = ", ".join(f"{gib(g.free_bytes)} free on {g.uuid}" for g in node.spec.gpus)
    return Diagnostic(
        "does-not-fit",
        f"'{deployment.model.metadata.name}' needs {gib(meta.weight_bytes + ACTIVATION_RESERVE)} "
        f"for weights and activations plus its KV cache; node '{node.metadata.name}' has {frees} "
        f"(margin {gib(margin)} per GPU)",
        spec_position(deployment, "allow_cpu_offload"),
        hints=(
            "with allow_cpu_offload: true part of the weights can stay in host memory "
            "(--cpu-offload-gb)",
        ),
    )
