"""vLLM sizing from model metadata: tensor-parallel size, max model length, memory utilisation.

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

from maas.compiler.metadata import ModelMetadata
from maas.compiler.models import Gpu
from maas.compiler.units import DEFAULT_CONTEXT, GIB, default_context

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
