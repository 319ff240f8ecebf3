"""Which cache llama.cpp gives each layer of a model: full-context KV, a sliding-window KV, a
compressed MLA key cache, or a fixed recurrent state; and how wide each one is.

The rules are llama.cpp's, read from the source vendored in llama-cpp-python 0.3.36
(`vendor/llama.cpp/src`); each is cited where it is applied. An architecture not listed here is
estimated as plain full attention on every layer and reported by `known_architecture` so the plan
can warn instead of guessing silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from maas.compiler.metadata import ModelMetadata

LayerKind = Literal["full", "swa", "recurrent"]

# Plain attention on every layer (llama-model.cpp, llama_model::create_memory, default branch:
# llama_kv_cache over all layers when swa_type is NONE and the architecture is not recurrent).
# "llama" includes Mistral-style GGUFs: models/llama.cpp never reads attention.sliding_window, so
# llama.cpp keeps full-context KV on every layer even where the model was trained with a window.
PLAIN = frozenset(
    {
        "llama", "mistral3", "qwen", "qwen2", "qwen2moe", "qwen2vl", "qwen3", "qwen3moe",
        "qwen3vl", "qwen3vlmoe", "phi2", "phi3", "phimoe", "gemma", "command-r", "starcoder",
        "starcoder2", "granite", "granitemoe", "deepseek", "glm4", "glm4moe", "olmo", "olmoe",
        "internlm2", "exaone", "stablelm", "dbrx", "minimax-m2", "ernie4_5", "ernie4_5-moe",
        "seed_oss", "hunyuan-moe", "hunyuan-dense", "smollm3", "apertus", "arcee", "grok",
        "falcon", "gptneox", "baichuan", "bailingmoe", "bailingmoe2", "dots1", "nemotron",
        "mpt", "gpt2", "bloom", "orion", "xverse", "chatglm", "deci", "openelm", "arctic",
    }
)  # fmt: skip


@dataclass(frozen=True)
class WindowRule:
    """An architecture with sliding-window layers: the period of its layer pattern when the
    header has none, whether the window is only used when the header sets one, and a window size
    llama.cpp imposes itself."""

    period: int
    optional: bool = False
    dense_first: bool = False
    fixed_window: int = 0


# models/<arch>.cpp, load_arch_hparams: swa_type and load_swa_pattern(ml, period[, dense_first])
WINDOWED = {
    "gemma2": WindowRule(2),  # models/gemma2.cpp
    "gemma3": WindowRule(6, optional=True),  # models/gemma3.cpp: SWA only when n_swa > 0
    "gpt-oss": WindowRule(2),  # models/openai-moe.cpp
    "cohere2": WindowRule(4),  # models/cohere2.cpp
    "olmo2": WindowRule(4, optional=True),  # models/olmo2.cpp
    # models/llama4.cpp: chunked attention of 8192 on 3 of 4 layers unless sliding_window is 0
    "llama4": WindowRule(4, fixed_window=8192),
}
MLA = frozenset({"deepseek2"})  # models/deepseek2.cpp (DeepSeek-V2/V3/R1, Kimi-K2 GGUFs)
# llm_arch_is_hybrid / llm_arch_is_recurrent (llama-arch.cpp) with the layer filters of
# llama_model::create_memory; models/qwen3next.cpp marks layers recurrent unless
# (il + 1) % full_attention_interval == 0 (interval 4 by default).
HYBRID = frozenset({"qwen3next"})
RECURRENT = frozenset({"mamba", "mamba2"})


def known_architecture(meta: ModelMetadata) -> bool:
    arch = meta.architecture
    return meta.format != "gguf" or arch in PLAIN | MLA | HYBRID | RECURRENT | WINDOWED.keys()


def window_size(meta: ModelMetadata) -> int:
    """The window (n_swa) of the sliding-window layers, 0 when there are none."""
    rule = WINDOWED.get(meta.architecture)
    if rule is None:
        return 0
    if rule.fixed_window:  # an explicit 0 turns the window off
        return 0 if meta.sliding_window == 0 else rule.fixed_window
    return max(meta.sliding_window or 0, 0)


def swa_layers(meta: ModelMetadata) -> list[bool]:
    """llama_hparams::set_swa_pattern (llama-hparams.cpp), or the header's per-layer flags."""
    n = meta.block_count
    if not window_size(meta):
        return [False] * n
    rule = WINDOWED[meta.architecture]
    pattern = meta.sliding_window_pattern
    if isinstance(pattern, list):
        return [*pattern[:n], *[False] * (n - len(pattern))]
    period = rule.period if pattern is None else pattern
    if rule.dense_first:
        return [period == 0 or i % period != 0 for i in range(n)]
    return [period == 0 or i % period < period - 1 for i in range(n)]


def recurrent_layers(meta: ModelMetadata) -> list[bool]:
    n = meta.block_count
    if meta.architecture in RECURRENT:
        return [True] * n
    if meta.architecture not in HYBRID:
        return [False] * n
    if meta.recurrent_layers:
        return [*meta.recurrent_layers[:n], *[False] * (n - len(meta.recurrent_layers))]
    interval = meta.full_attention_interval or 4
    return [(i + 1) % interval != 0 for i in range(n)]


def is_mla(meta: ModelMetadata) -> bool:
    """llama_hparams::is_mla: both *_length_mla keys set (GGUFs converted since llama.cpp b5180);
    older DeepSeek GGUFs are read as plain multi-head attention with K and V caches."""
    return meta.architecture in MLA and bool(meta.key_length_mla and meta.value_length_mla)


def _heads_kv(meta: ModelMetadata, i: int) -> int:
    if meta.head_count_kv_layers:
        return meta.head_count_kv_layers[i]
    return meta.head_count_kv


def recurrent_state(meta: ModelMetadata) -> int:
    """f32 elements of one sequence's state in one layer: llama_hparams::n_embd_r + n_embd_s
    (llama-hparams.cpp, the Mamba-style conv and ssm states)."""
    conv = max(meta.ssm_conv_kernel - 1, 0) * (
        meta.ssm_inner_size + 2 * meta.ssm_group_count * meta.ssm_state_size
    )
    return conv + meta.ssm_state_size * meta.ssm_inner_size


def layer_caches(meta: ModelMetadata) -> list[tuple[LayerKind, int]]:
    """Per repeating layer: its kind and elements per cell (K + V), or per sequence for state.

    llama-kv-cache.cpp, llama_kv_cache::llama_kv_cache: K is n_embd_k_gqa(il) wide and V
    n_embd_v_gqa(il), both head size x n_head_kv(il); with MLA there is no V tensor (has_v =
    !is_mla) and K is the compressed latent plus the rope part (key_length = kv_lora_rank +
    rope dims in MLA GGUFs). Window layers may have their own head sizes (key_length_swa).
    Attention sinks (gpt-oss) are a weight per head, counted with the weights; no cache.
    """
    swa = swa_layers(meta)
    recurrent = recurrent_layers(meta)
    mla = is_mla(meta)
    state = recurrent_state(meta)
    out: list[tuple[LayerKind, int]] = []
    for i in range(meta.block_count):
        if recurrent[i]:
            out.append(("recurrent", state))
            continue
        heads = _heads_kv(meta, i)
        key, value = meta.key_length, meta.value_length
        if swa[i]:
            key = meta.key_length_swa or key
            value = meta.value_length_swa or value
        out.append(("swa" if swa[i] else "full", heads * (key + (0 if mla else value))))
    return out


def attention_rows(meta: ModelMetadata) -> int:
    """Per-token activations of one layer's attention (floats): the query, and for MLA its
    absorbed copy (n_head x kv latent + rope) beside the output of n_head x value width
    (models/deepseek2.cpp builds q, q_nope absorbed by wk_b, and their concatenation)."""
    if is_mla(meta):
        assert meta.key_length_mla is not None
        return meta.head_count * (meta.key_length_mla + meta.key_length + meta.value_length)
    return meta.head_count * (2 * meta.key_length + meta.value_length)
