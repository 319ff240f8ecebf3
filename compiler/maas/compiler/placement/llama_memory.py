"""Memory and speed estimates for llama.cpp (llama-box) from model metadata, per device.

Calibrated against what llama.cpp itself reports (`llama-fit-params -fitp on`, CUDA, flash attention
on, n_ubatch 512; bench/results/gpu-memory.md):
- weights: exact bytes per layer from the tensor table. `-ngl N` puts the output head first, then
  the last N-1 repeating layers, on the GPU; the token embedding always stays in host memory;
- KV cache: per layer as llama.cpp allocates it (estimate_attention): n_ctx (padded to 256) x
  (K + V width) for full attention, window + ubatch cells for sliding-window layers, the
  compressed K only for MLA, a fixed state per sequence for recurrent layers; times the slots;
  only for the layers on each device;
- compute buffers: the peak of the graph on each device. The GPU holds the logits of one ubatch,
  the activations of its layers and, when any weight stays on the CPU, a copy of the largest such
  tensor (llama.cpp offloads large-batch matrix products to the GPU).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Literal

from maas.compiler.metadata import ModelMetadata
from maas.compiler.metadata.model import LayerBytes
from maas.compiler.placement.attention import attention_rows, layer_caches, window_size

N_UBATCH = 512
F32 = 4
CTX_PAD = 256
# What llama.cpp's --fit moves to host memory of the one MoE layer it splits (common/fit.cpp,
# common_layer_fraction_t and get_overflow_pattern): "down" is LAYER_FRACTION_GATE (ffn_down*),
# "gate_down" LAYER_FRACTION_UP (ffn_gate* and ffn_down*), "ffn" LAYER_FRACTION_ATTN (every
# ffn_gate/up/down* tensor, shared experts and router included).
SplitFfn = Literal["down", "gate_down", "ffn"]


@dataclass(frozen=True)
class DeviceMemory:
    model: int = 0
    kv: int = 0
    compute: int = 0

    @property
    def total(self) -> int:
        return self.model + self.kv + self.compute


@dataclass(frozen=True)
class LlamaLayout:
    """Where each part of the model lives. Blocks on GPUs are the last ones, in device order."""

    gpu_blocks: tuple[int, ...] = ()  # repeating layers per GPU
    output_on_gpu: bool = False
    experts_on_cpu: frozenset[int] = field(default_factory=frozenset)  # block indices
    n_ubatch: int = N_UBATCH  # llama.cpp's -ub (and -b): tokens per graph evaluation
    # the first layer of experts_on_cpu moves this part of its FFN instead of its routed experts
    split_ffn: SplitFfn | None = None

    def ffn_on_cpu(self, i: int, layer: LayerBytes) -> int:
        """Bytes of layer `i`'s weights that stay in host memory although the layer is on a GPU."""
        if i not in self.experts_on_cpu:
            return 0
        if self.split_ffn is None or i != min(self.experts_on_cpu):
            return layer.experts
        return {"down": layer.ffn_down, "gate_down": layer.ffn_gate_down, "ffn": layer.ffn}[
            self.split_ffn
        ]

    @property
    def n_gpu_layers(self) -> int:
        """llama.cpp's `-ngl`: the output head counts as the first offloaded layer."""
        return sum(self.gpu_blocks) + (1 if self.output_on_gpu else 0)


@dataclass(frozen=True)
class LlamaMemory:
    gpus: tuple[DeviceMemory, ...]
    host: DeviceMemory


@cache
def cache_type_size(cache_type: str) -> tuple[int, int]:
    """(block size, bytes per block) of a KV cache type, from the gguf package's table."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    return GGML_QUANT_SIZES[GGMLQuantizationType[cache_type.upper()]]


def padded_context(n_ctx: int) -> int:
    return -(-n_ctx // CTX_PAD) * CTX_PAD


def slot_context(n_ctx: int, parallel: int = 1) -> int:
    """Cells per slot when llama-server runs `--parallel N --ctx-size N*n_ctx` (no --kv-unified):
    llama-context.cpp, llama_context::llama_context pads n_ctx to 256, then n_ctx_seq = n_ctx /
    n_seq_max, padded to 256 again; llama-kv-cache.cpp keeps one stream of n_ctx_seq per slot."""
    return padded_context(padded_context(n_ctx * parallel) // parallel)


def layer_cache_bytes(
    meta: ModelMetadata,
    n_ctx: int,
    cache_type: str = "f16",
    parallel: int = 1,
    n_ubatch: int = N_UBATCH,
) -> list[int]:
    """Bytes of each repeating layer's cache (KV cells or recurrent state), all slots together."""
    block, size = cache_type_size(cache_type)
    per_slot = slot_context(n_ctx, parallel)
    # llama-kv-cache-iswa.cpp, llama_kv_cache_iswa::llama_kv_cache_iswa: window layers keep
    # GGML_PAD(min(size_base, n_swa * (unified ? n_seq_max : 1) + n_ubatch), 256) cells per
    # stream (--swa-full off; we never render --kv-unified, so one window per slot)
    window = padded_context(min(per_slot, window_size(meta) + n_ubatch))
    out: list[int] = []
    for kind, elements in layer_caches(meta):
        if kind == "recurrent":
            # llama-memory-recurrent.cpp: r and s rows in f32, one per sequence (n_rs_seq 0)
            out.append(elements * F32 * parallel)
        else:
            cells = window if kind == "swa" else per_slot
            out.append(cells * parallel * elements * size // block)
    return out


def block_owner(layout: LlamaLayout, n_layer: int) -> list[int | None]:
    """GPU index of each repeating layer, or None for the CPU."""
    owners: list[int | None] = [None] * n_layer
    start = n_layer - sum(layout.gpu_blocks)
    for gpu, count in enumerate(layout.gpu_blocks):
        for i in range(start, start + count):
            owners[i] = gpu
        start += count
    return owners


def _ffn_rows(meta: ModelMetadata) -> int:
    """Intermediate FFN rows per token: used experts x expert width for MoE."""
    if meta.is_moe:
        width = meta.expert_feed_forward_length or meta.feed_forward_length or 0
        return max(meta.expert_used_count, 1) * width
    return meta.feed_forward_length or 4 * meta.embedding_length


def _activations(meta: ModelMetadata, n_ctx: int, ub: int = N_UBATCH) -> int:
    """Peak activations of one layer for one ubatch: the wider of the FFN intermediates and the
    attention's query/output (wide for MLA's 128 heads of 576), plus residuals and KQ mask."""
    ffn = 2 * ub * _ffn_rows(meta) * F32
    attention = attention_rows(meta) * ub * F32
    return (
        max(ffn, attention)
        + 5 * meta.embedding_length * ub * F32
        + 3 * padded_context(n_ctx) * ub * 2
    )


def _logits(meta: ModelMetadata, ub: int = N_UBATCH) -> int:
    # the worst-case graph llama.cpp reserves has an output row per token of the ubatch
    return ((meta.vocab_size or 0) + meta.embedding_length) * ub * F32


def llama_memory(
    meta: ModelMetadata,
    layout: LlamaLayout,
    *,
    n_ctx: int,
    cache_type: str = "f16",
    parallel: int = 1,
) -> LlamaMemory:
    """Bytes per GPU (model, KV, compute) and in host memory for one llama.cpp instance whose
    `parallel` slots hold `n_ctx` tokens each."""
    n_layer = meta.block_count
    owners = block_owner(layout, n_layer)
    ub = layout.n_ubatch
    caches = layer_cache_bytes(meta, n_ctx, cache_type, parallel, ub)
    cpu_kv = 0
    n_gpus = len(layout.gpu_blocks)
    model = [0] * n_gpus
    kv_gpu = [0] * n_gpus
    host_model = meta.token_embd_bytes + (0 if layout.output_on_gpu else meta.output_bytes)
    host_kv = 0
    cpu_largest = 0 if layout.output_on_gpu else meta.output_bytes
    for i, layer in enumerate(meta.layers):
        gpu = owners[i]
        on_cpu = layout.ffn_on_cpu(i, layer)
        if gpu is None:
            host_model += layer.total
            host_kv += caches[i]
            cpu_kv = max(cpu_kv, caches[i])
            cpu_largest = max(cpu_largest, layer.largest)
        else:
            model[gpu] += layer.total - on_cpu
            kv_gpu[gpu] += caches[i]
            host_model += on_cpu
            if on_cpu:
                cpu_largest = max(cpu_largest, layer.largest_expert)
    host = DeviceMemory(host_model, host_kv, _host_compute(meta, n_ctx, ub))
    if n_gpus == 0:
        return LlamaMemory((), host)
    # attention of a CPU layer runs on a GPU copy of its KV (cpu_kv: the largest such layer)
    compute = _gpu_compute(meta, layout, n_ctx, cpu_largest, cpu_kv)
    gpus = tuple(DeviceMemory(model[g], kv_gpu[g], compute[g]) for g in range(n_gpus))
    if layout.output_on_gpu:
        last = gpus[-1]
        gpus = (*gpus[:-1], DeviceMemory(last.model + meta.output_bytes, last.kv, last.compute))
    return LlamaMemory(gpus, host)


def _gpu_compute(
    meta: ModelMetadata, layout: LlamaLayout, n_ctx: int, cpu_largest: int, cpu_kv: int
) -> list[int]:
    acts = _activations(meta, n_ctx, layout.n_ubatch)
    logits = _logits(meta, layout.n_ubatch)
    out: list[int] = []
    for gpu, blocks in enumerate(layout.gpu_blocks):
        peak = acts if blocks else 0
        is_last = gpu == len(layout.gpu_blocks) - 1
        if is_last and layout.output_on_gpu:
            peak = max(peak, logits)
        if gpu == 0 and cpu_largest:
            # the main GPU runs large-batch products of CPU weights on a copy of them
            peak = max(peak, cpu_largest + acts, cpu_kv * 3 // 2 + acts)
            if not layout.output_on_gpu:
                peak = max(peak, meta.output_bytes + logits)
            if not sum(layout.gpu_blocks):
                # no layer of its own: llama.cpp's scheduler was seen to keep layer activations
                # next to the logits here (up to +198 MiB at -ngl 0/1); stay on the safe side
                peak = max(peak, logits + acts + (0 if layout.output_on_gpu else meta.output_bytes))
        out.append(peak)
    return out


def _host_compute(meta: ModelMetadata, n_ctx: int, ub: int = N_UBATCH) -> int:
    return 2 * meta.embedding_length * ub * F32 + padded_context(n_ctx) * ub * 2


def cpu_only_memory(
    meta: ModelMetadata, *, n_ctx: int, cache_type: str = "f16", parallel: int = 1
) -> DeviceMemory:
    """A CPU build of llama.cpp: everything, the whole graph included, in host memory."""
    kv = sum(layer_cache_bytes(meta, n_ctx, cache_type, parallel))
    compute = max(_logits(meta), _activations(meta, n_ctx)) + _host_compute(meta, n_ctx)
    return DeviceMemory(meta.weight_bytes, kv, compute)


def bytes_per_token(meta: ModelMetadata, layout: LlamaLayout) -> tuple[int, int]:
    """Weight bytes read per decoded token on the GPUs and on the CPU (active experts only)."""
    owners = block_owner(layout, meta.block_count)
    share = meta.expert_used_count / meta.expert_count if meta.is_moe else 1.0
    gpu = meta.output_bytes if layout.output_on_gpu else 0
    cpu = 0 if layout.output_on_gpu else meta.output_bytes
    for i, layer in enumerate(meta.layers):
        dense, experts = layer.total - layer.experts, int(layer.experts * share)
        moved = layout.ffn_on_cpu(i, layer)
        if owners[i] is None:
            cpu += dense + experts
        elif moved:
            # a split layer moves part of its experts (read at the routed share) and, for
            # "ffn", its dense FFN too (read whole)
            moved_dense = max(0, moved - layer.experts)
            moved_experts = int((moved - moved_dense) * share)
            gpu += dense - moved_dense + experts - moved_experts
            cpu += moved_dense + moved_experts
        else:
            gpu += dense + experts
    return gpu, cpu


def decode_tokens_per_s(
    gpu_bytes: int,
    cpu_bytes: int,
    *,
    gpu_bandwidth: float | None,
    cpu_bandwidth: float | None,
    fixed_s: float = 0.0,
) -> float | None:
    """Decode reads every active weight (and the KV cache) once per token on its device, plus a
    fixed time per token (`fixed_s`: kernel launches and synchronisation of every layer)."""
    seconds = fixed_s
    for amount, bandwidth in ((gpu_bytes, gpu_bandwidth), (cpu_bytes, cpu_bandwidth)):
        if amount:
            if not bandwidth:
                return None
            seconds += amount / bandwidth
    return round(1 / seconds, 1) if seconds > fixed_s else None
