"""Placement of a llama.cpp (llama-box) deployment from model metadata: gpu, hybrid or cpu.

Order of preference, as llama.cpp's own `--fit` does it:
1. the whole model on one GPU (the one with most free memory), else split over several GPUs in
   proportion to their free memory (`--tensor-split`);
2. with `allow_cpu_offload`, a MoE model keeps every layer's attention on the GPU and moves the
   routed experts of the last layers to the CPU (`--override-tensor`), the fewest that fit, then
   splits the FFN of the first of them as llama.cpp does (part of one more layer on the GPU);
3. else (dense, or MoE whose dense part does not fit) the most layers that fit, filled back to
   front, the last GPU first (`--n-gpu-layers`);
4. with no room on any GPU, the CPU build.
Every candidate is checked with `estimate_llama.llama_memory` against each GPU's free memory minus
the per-GPU margin.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from maas.compiler.metadata import ModelMetadata
from maas.compiler.models import Gpu
from maas.compiler.placement.llama_memory import (
    DeviceMemory,
    LlamaLayout,
    LlamaMemory,
    SplitFfn,
    cpu_only_memory,
    llama_memory,
)

PROMPT_UBATCH = 2048  # -b/-ub for MoE models with routed experts in host memory


@dataclass(frozen=True)
class LlamaChoice:
    """A layout that fits the GPUs (or none: the CPU build), with its memory."""

    layout: LlamaLayout
    gpus: tuple[Gpu, ...]
    gpu_memory: tuple[DeviceMemory, ...]
    host: DeviceMemory
    kind: str  # "gpu", "experts", "layers", "cpu"

    @property
    def host_bytes(self) -> int:
        return self.host.total


class _Fitter:
    def __init__(
        self,
        meta: ModelMetadata,
        n_ctx: int,
        budgets: dict[str, int],
        *,
        exact: bool,
        parallel: int = 1,
        prompt_ubatch: int = PROMPT_UBATCH,
    ) -> None:
        self.meta, self.n_ctx, self.budgets = meta, n_ctx, budgets
        self.exact = exact  # use all the GPUs given, not the fewest that fit
        self.parallel = parallel
        self.prompt_ubatch = prompt_ubatch

    def memory(self, layout: LlamaLayout) -> LlamaMemory:
        return llama_memory(self.meta, layout, n_ctx=self.n_ctx, parallel=self.parallel)

    def fits(self, layout: LlamaLayout, gpus: Sequence[Gpu]) -> LlamaMemory | None:
        memory = self.memory(layout)
        ok = all(m.total <= self.budgets[g.uuid] for m, g in zip(memory.gpus, gpus, strict=True))
        return memory if ok else None

    def choice(self, layout: LlamaLayout, gpus: Sequence[Gpu], kind: str) -> LlamaChoice | None:
        memory = self.fits(layout, gpus)
        if memory is None:
            return None
        return LlamaChoice(layout, tuple(gpus), memory.gpus, memory.host, kind)


def proportional_split(total: int, weights: Sequence[int]) -> tuple[int, ...]:
    """`total` layers over devices in proportion to `weights` (largest remainders first); evenly
    when no device has room (the split is then checked, and refused, like any other)."""
    if sum(max(0, w) for w in weights) <= 0:
        weights = [1] * len(weights)
    weights = [max(0, w) for w in weights]
    whole = sum(weights)
    exact = [total * w / whole for w in weights]
    counts = [int(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: exact[i] - counts[i], reverse=True)
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return tuple(counts)


def place_llama(
    meta: ModelMetadata,
    gpus: Sequence[Gpu],
    *,
    n_ctx: int,
    margin: int,
    allow_cpu: bool,
    gpu_count: int | None = None,
    parallel: int = 1,
    prompt_ubatch: int = PROMPT_UBATCH,
) -> tuple[LlamaChoice | None, LlamaChoice | None]:
    """(the full-GPU choice or None, the best offloaded choice or None when nothing fits).

    `gpu_count` (the spec's `gpus: N`) uses exactly the N GPUs with most free memory;
    `prompt_ubatch` is the ubatch tried for experts in host memory (N_UBATCH: llama.cpp's)."""
    by_free = sorted(gpus, key=lambda g: (-g.free_bytes, g.index))[:gpu_count]
    budgets = {g.uuid: g.free_bytes - margin for g in gpus}
    fitter = _Fitter(
        meta,
        n_ctx,
        budgets,
        exact=gpu_count is not None,
        parallel=parallel,
        prompt_ubatch=prompt_ubatch,
    )
    full = _full_gpu(fitter, by_free)
    if full is not None or (not allow_cpu and not by_free):
        return full, None
    offloaded = None
    if by_free and meta.is_moe:
        offloaded = _expert_offload(fitter, by_free)
    if offloaded is None and by_free:
        offloaded = _layer_offload(fitter, by_free)
    if offloaded is None:
        host = cpu_only_memory(meta, n_ctx=n_ctx, parallel=parallel)
        offloaded = LlamaChoice(LlamaLayout(), (), (), host, "cpu")
    return None, offloaded


def _device_sets(by_free: Sequence[Gpu], exact: bool) -> list[list[Gpu]]:
    """One GPU, then the k GPUs with most free memory, in index order (CUDA device order); with
    `exact`, only all of them."""
    first = len(by_free) if exact else 1
    return [sorted(by_free[:k], key=lambda g: g.index) for k in range(first, len(by_free) + 1)]


def _full_gpu(fitter: _Fitter, by_free: Sequence[Gpu]) -> LlamaChoice | None:
    n = fitter.meta.block_count
    for devices in _device_sets(by_free, fitter.exact):
        split = proportional_split(n, [fitter.budgets[g.uuid] for g in devices])
        choice = fitter.choice(LlamaLayout(split, output_on_gpu=True), devices, "gpu")
        if choice is not None:
            return choice
    return None


def _expert_offload(fitter: _Fitter, by_free: Sequence[Gpu]) -> LlamaChoice | None:
    n = fitter.meta.block_count
    for devices in _device_sets(by_free, fitter.exact):
        split = proportional_split(n, [fitter.budgets[g.uuid] for g in devices])

        def layout(k: int, split: tuple[int, ...] = split) -> LlamaLayout:
            return LlamaLayout(split, True, frozenset(range(n - k, n)))

        if fitter.fits(layout(n), devices) is None:
            continue
        k = _smallest(lambda k, d=devices: fitter.fits(layout(k), d) is not None, 1, n)
        # With experts in host memory llama.cpp copies them to the GPU for every prompt ubatch
        # (ggml-cuda.cu, ggml_backend_cuda_device_offload_op: ops of 32 rows or more run on the
        # GPU and the scheduler copies their CPU weights over): a larger ubatch moves the same
        # bytes for 4x the tokens. Taken only where it costs no whole expert layer on the GPU,
        # before the split layer (which gains a fraction of one layer's decode reads).
        wide = replace(layout(k), n_ubatch=fitter.prompt_ubatch)
        base = wide if fitter.fits(wide, devices) is not None else layout(k)
        return fitter.choice(_split_layer(fitter, base, devices), devices, "experts")
    return None


def _split_layer(fitter: _Fitter, layout: LlamaLayout, devices: Sequence[Gpu]) -> LlamaLayout:
    """The first expert-offloaded layer split as llama.cpp's --fit splits it (common/fit.cpp,
    common_fit_params_impl, "try to fit at least part of one more layer"): its up and gate
    experts back on the GPU if that fits (LAYER_FRACTION_GATE), else its up experts
    (LAYER_FRACTION_UP), else its whole FFN, dense part and router too, in host memory
    (LAYER_FRACTION_ATTN). The same steps keep our layout equal to the one llama.cpp picks."""
    layers = fitter.meta.layers
    # the split layer is the first one with routed experts (DeepSeek's first three are dense)
    moe = frozenset(i for i in layout.experts_on_cpu if i < len(layers) and layers[i].experts)
    if not moe or not layers[min(moe)].ffn:  # no FFN parts in the metadata: experts only
        return layout
    layout = replace(layout, experts_on_cpu=moe)
    up = replace(layout, split_ffn="gate_down")
    if fitter.fits(up, devices) is None:
        return replace(layout, split_ffn="ffn")
    gate = replace(layout, split_ffn="down")
    return gate if fitter.fits(gate, devices) is not None else up


def _layer_offload(fitter: _Fitter, by_free: Sequence[Gpu]) -> LlamaChoice | None:
    """Fill the last GPU first with the output head and the last layers, then the others."""
    devices = sorted(by_free, key=lambda g: g.index)
    n = fitter.meta.block_count
    counts = [0] * len(devices)
    output = fitter.fits(LlamaLayout(tuple(counts), output_on_gpu=True), devices) is not None
    if not output:
        return None
    for d in reversed(range(len(devices))):
        left = n - sum(counts)

        def fits(k: int, d: int = d) -> bool:
            trial = [*counts[:d], k, *counts[d + 1 :]]
            return fitter.fits(LlamaLayout(tuple(trial), True), devices) is not None

        counts[d] = _largest(fits, 0, left)
    last = len(devices) - 1  # holds the output head, even with no layer
    used = [(g, c) for i, (g, c) in enumerate(zip(devices, counts, strict=True)) if c or i == last]
    layout = LlamaLayout(tuple(c for _, c in used), output_on_gpu=True)
    return fitter.choice(layout, [g for g, _ in used], "layers")


def _largest(ok: object, low: int, high: int) -> int:
    """Largest k in [low, high] with ok(k), given ok(low) and monotone ok."""
    assert callable(ok)
    while low < high:
        mid = (low + high + 1) // 2
        if ok(mid):
            low = mid
        else:
            high = mid - 1
    return low


def _smallest(ok: object, low: int, high: int) -> int:
    """Smallest k in [low, high] with ok(k), given ok(high) and monotone ok."""
    assert callable(ok)
    while low < high:
        mid = (low + high) // 2
        if ok(mid):
            high = mid
        else:
            low = mid + 1
    return low


# llama.cpp's own patterns for a split layer (common/fit.cpp, get_overflow_pattern)
SPLIT_PATTERNS = {
    "down": "ffn_down.*",
    "gate_down": "ffn_(gate|gate_up|down).*",
    "ffn": "ffn_(gate|up|gate_up|down).*",
}


def experts_pattern(blocks: Sequence[int], split_ffn: SplitFfn | None = None) -> list[str]:
    """`--override-tensor` patterns that keep the routed experts of `blocks` in host memory; with
    `split_ffn`, the first of them moves that part of its FFN instead."""
    if not blocks:
        return []
    blocks = sorted(blocks)
    out = []
    if split_ffn is not None:
        out.append(rf"blk\.{blocks[0]}\.{SPLIT_PATTERNS[split_ffn]}=CPU")
        blocks = blocks[1:]
    if blocks:
        ids = "|".join(str(i) for i in blocks)
        out.append(rf"blk\.({ids})\.ffn_(up|down|gate|gate_up)_(ch|)exps=CPU")
    return out
