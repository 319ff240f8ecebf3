"""Header-only GGUFs at published shapes for architectures beyond llama: sliding-window (Gemma 3,
gpt-oss), MLA (DeepSeek-V3/R1) and Qwen3-MoE, with the keys and tensors llama.cpp's loaders
require (vendor/llama.cpp/src/models/<arch>.cpp, load_arch_hparams and load_arch_tensors of the
llama-cpp-python 0.3.36 sdist). Like gguf_factory.write_header_only, the file is extended to its
real size as a sparse file, so metadata readers and `llama-fit-params` see the real model.

Shapes are numpy order, the reverse of ggml's `ne`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter

from support.gguf_factory import tensor_nbytes

Q = GGMLQuantizationType
F32 = Q.F32
Tensors = list[tuple[str, tuple[int, ...], GGMLQuantizationType]]


@dataclass(frozen=True)
class ArchModel:
    name: str
    arch: str
    vocab: int
    width: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    context: int
    experts: int = 0
    experts_used: int = 0
    expert_ffn: int = 0
    tied_output: bool = False
    keys: dict[str, int | float | bool] = field(default_factory=dict)


GEMMA3_27B = ArchModel(
    "gemma-3-27b", "gemma3", 262208, 5376, 62, 32, 16, 128, 21504, 131072, tied_output=True,
    keys={"attention.sliding_window": 1024},
)  # fmt: skip
GPT_OSS_20B = ArchModel(
    "gpt-oss-20b", "gpt-oss", 201088, 2880, 24, 64, 8, 64, 2880, 131072, 32, 4, 2880,
    keys={"attention.sliding_window": 128},
)  # fmt: skip
GPT_OSS_120B = ArchModel(
    "gpt-oss-120b", "gpt-oss", 201088, 2880, 36, 64, 8, 64, 2880, 131072, 128, 4, 2880,
    keys={"attention.sliding_window": 128},
)  # fmt: skip
# DeepSeek-V3 / R1 as converted since llama.cpp b5180 (MLA: one KV head of 512 + 64 rope dims)
DEEPSEEK_V3 = ArchModel(
    "deepseek-v3", "deepseek2", 129280, 7168, 61, 128, 1, 576, 18432, 163840, 256, 8, 2048,
    keys={
        "leading_dense_block_count": 3, "attention.q_lora_rank": 1536,
        "attention.kv_lora_rank": 512, "attention.key_length_mla": 192,
        "attention.value_length_mla": 128, "expert_shared_count": 1,
        "expert_weights_scale": 2.5, "expert_weights_norm": True, "expert_gating_func": 2,
    },
)  # fmt: skip
QWEN3_30B_A3B = ArchModel(
    "qwen3-30b-a3b", "qwen3moe", 151936, 2048, 48, 32, 4, 128, 6144, 40960, 128, 8, 768,
)  # fmt: skip


def _norm(name: str, size: int) -> tuple[str, tuple[int, ...], GGMLQuantizationType]:
    return (name, (size,), F32)


def _gemma3(m: ArchModel, q: GGMLQuantizationType, experts: GGMLQuantizationType) -> Tensors:
    w, f, qd, kv = m.width, m.ffn, m.heads * m.head_dim, m.kv_heads * m.head_dim
    out: Tensors = []
    for i in range(m.layers):
        b = f"blk.{i}"
        out += [
            _norm(f"{b}.attn_norm.weight", w),
            (f"{b}.attn_q.weight", (qd, w), q),
            (f"{b}.attn_k.weight", (kv, w), q),
            (f"{b}.attn_v.weight", (kv, w), q),
            (f"{b}.attn_output.weight", (w, qd), q),
            _norm(f"{b}.post_attention_norm.weight", w),
            _norm(f"{b}.attn_k_norm.weight", m.head_dim),
            _norm(f"{b}.attn_q_norm.weight", m.head_dim),
            _norm(f"{b}.ffn_norm.weight", w),
            (f"{b}.ffn_gate.weight", (f, w), q),
            (f"{b}.ffn_up.weight", (f, w), q),
            (f"{b}.ffn_down.weight", (w, f), q),
            _norm(f"{b}.post_ffw_norm.weight", w),
        ]
    return out


def _gpt_oss(m: ArchModel, q: GGMLQuantizationType, experts: GGMLQuantizationType) -> Tensors:
    w, e, f = m.width, m.experts, m.expert_ffn
    qd, kv = m.heads * m.head_dim, m.kv_heads * m.head_dim
    out: Tensors = []
    for i in range(m.layers):
        b = f"blk.{i}"
        out += [
            _norm(f"{b}.attn_norm.weight", w),
            _norm(f"{b}.post_attention_norm.weight", w),
            (f"{b}.attn_q.weight", (qd, w), q),
            (f"{b}.attn_q.bias", (qd,), F32),
            (f"{b}.attn_k.weight", (kv, w), q),
            (f"{b}.attn_k.bias", (kv,), F32),
            (f"{b}.attn_v.weight", (kv, w), q),
            (f"{b}.attn_v.bias", (kv,), F32),
            (f"{b}.attn_output.weight", (w, qd), q),
            (f"{b}.attn_output.bias", (w,), F32),
            (f"{b}.attn_sinks.weight", (m.heads,), F32),
            (f"{b}.ffn_gate_inp.weight", (e, w), F32),
            (f"{b}.ffn_gate_inp.bias", (e,), F32),
            (f"{b}.ffn_gate_exps.weight", (e, f, w), experts),
            (f"{b}.ffn_gate_exps.bias", (e, f), F32),
            (f"{b}.ffn_up_exps.weight", (e, f, w), experts),
            (f"{b}.ffn_up_exps.bias", (e, f), F32),
            (f"{b}.ffn_down_exps.weight", (e, w, f), experts),
            (f"{b}.ffn_down_exps.bias", (e, w), F32),
        ]
    return out


def _deepseek2(m: ArchModel, q: GGMLQuantizationType, experts: GGMLQuantizationType) -> Tensors:
    w, e, f, h = m.width, m.experts, m.expert_ffn, m.heads
    q_rank, kv_rank = int(m.keys["attention.q_lora_rank"]), int(m.keys["attention.kv_lora_rank"])
    k_mla, v_mla = (
        int(m.keys["attention.key_length_mla"]),
        int(m.keys["attention.value_length_mla"]),
    )
    rope = m.head_dim - kv_rank
    dense = int(m.keys["leading_dense_block_count"])
    shared = int(m.keys["expert_shared_count"]) * f
    out: Tensors = []
    for i in range(m.layers):
        b = f"blk.{i}"
        out += [
            _norm(f"{b}.attn_norm.weight", w),
            _norm(f"{b}.attn_q_a_norm.weight", q_rank),
            _norm(f"{b}.attn_kv_a_norm.weight", kv_rank),
            (f"{b}.attn_q_a.weight", (q_rank, w), q),
            (f"{b}.attn_q_b.weight", (h * k_mla, q_rank), q),
            (f"{b}.attn_kv_a_mqa.weight", (kv_rank + rope, w), q),
            # rows of 128 and 512 elements: whole Q8_0 blocks, as real GGUFs store them
            (f"{b}.attn_k_b.weight", (h, kv_rank, k_mla - rope), Q.Q8_0),
            (f"{b}.attn_v_b.weight", (h, v_mla, kv_rank), Q.Q8_0),
            (f"{b}.attn_output.weight", (w, h * v_mla), q),
            _norm(f"{b}.ffn_norm.weight", w),
        ]
        if i < dense:
            out += [
                (f"{b}.ffn_gate.weight", (m.ffn, w), q),
                (f"{b}.ffn_down.weight", (w, m.ffn), q),
                (f"{b}.ffn_up.weight", (m.ffn, w), q),
            ]
            continue
        out += [
            (f"{b}.ffn_gate_inp.weight", (e, w), F32),
            (f"{b}.exp_probs_b.bias", (e,), F32),
            (f"{b}.ffn_gate_exps.weight", (e, f, w), experts),
            (f"{b}.ffn_down_exps.weight", (e, w, f), experts),
            (f"{b}.ffn_up_exps.weight", (e, f, w), experts),
            (f"{b}.ffn_gate_shexp.weight", (shared, w), q),
            (f"{b}.ffn_down_shexp.weight", (w, shared), q),
            (f"{b}.ffn_up_shexp.weight", (shared, w), q),
        ]
    return out


def _qwen3moe(m: ArchModel, q: GGMLQuantizationType, experts: GGMLQuantizationType) -> Tensors:
    w, e, f = m.width, m.experts, m.expert_ffn
    qd, kv = m.heads * m.head_dim, m.kv_heads * m.head_dim
    out: Tensors = []
    for i in range(m.layers):
        b = f"blk.{i}"
        out += [
            _norm(f"{b}.attn_norm.weight", w),
            (f"{b}.attn_q.weight", (qd, w), q),
            (f"{b}.attn_k.weight", (kv, w), q),
            (f"{b}.attn_v.weight", (kv, w), q),
            (f"{b}.attn_output.weight", (w, qd), q),
            _norm(f"{b}.attn_k_norm.weight", m.head_dim),
            _norm(f"{b}.attn_q_norm.weight", m.head_dim),
            _norm(f"{b}.ffn_norm.weight", w),
            (f"{b}.ffn_gate_inp.weight", (e, w), F32),
            (f"{b}.ffn_gate_exps.weight", (e, f, w), experts),
            (f"{b}.ffn_down_exps.weight", (e, w, f), experts),
            (f"{b}.ffn_up_exps.weight", (e, f, w), experts),
        ]
    return out


LAYERS: dict[str, Callable[[ArchModel, GGMLQuantizationType, GGMLQuantizationType], Tensors]] = {
    "gemma3": _gemma3,
    "gpt-oss": _gpt_oss,
    "deepseek2": _deepseek2,
    "qwen3moe": _qwen3moe,
}


def arch_tensors(
    m: ArchModel, qtype: GGMLQuantizationType, experts: GGMLQuantizationType | None = None
) -> Tensors:
    out: Tensors = [
        ("token_embd.weight", (m.vocab, m.width), qtype),
        _norm("output_norm.weight", m.width),
    ]
    if not m.tied_output:
        out.append(("output.weight", (m.vocab, m.width), qtype))
    return out + LAYERS[m.arch](m, qtype, experts or qtype)


def _writer(path: Path, m: ArchModel) -> GGUFWriter:
    writer = GGUFWriter(str(path), m.arch)
    a = m.arch
    writer.add_name(m.name)
    writer.add_uint32(f"{a}.context_length", m.context)
    writer.add_uint32(f"{a}.embedding_length", m.width)
    writer.add_uint32(f"{a}.block_count", m.layers)
    writer.add_uint32(f"{a}.feed_forward_length", m.ffn)
    writer.add_uint32(f"{a}.attention.head_count", m.heads)
    writer.add_uint32(f"{a}.attention.head_count_kv", m.kv_heads)
    writer.add_uint32(f"{a}.attention.key_length", m.head_dim)
    value = m.head_dim - 64 if a == "deepseek2" else m.head_dim  # MLA: V is the latent only
    writer.add_uint32(f"{a}.attention.value_length", value)
    writer.add_float32(f"{a}.attention.layer_norm_rms_epsilon", 1e-6)
    writer.add_uint32(f"{a}.rope.dimension_count", 64 if a == "deepseek2" else m.head_dim)
    writer.add_float32(f"{a}.rope.freq_base", 10000.0)
    if m.experts:
        writer.add_uint32(f"{a}.expert_count", m.experts)
        writer.add_uint32(f"{a}.expert_used_count", m.experts_used)
        writer.add_uint32(f"{a}.expert_feed_forward_length", m.expert_ffn)
    for key, val in m.keys.items():
        if isinstance(val, bool):
            writer.add_bool(f"{a}.{key}", val)
        elif isinstance(val, float):
            writer.add_float32(f"{a}.{key}", val)
        else:
            writer.add_uint32(f"{a}.{key}", val)
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    tokens += [f"tok{i}" for i in range(m.vocab - len(tokens))]
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * m.vocab)
    writer.add_token_types([2, 3, 3] + [6] * 256 + [1] * (m.vocab - 259))
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    return writer


def write_arch_header_only(
    path: Path,
    m: ArchModel,
    qtype: GGMLQuantizationType = Q.Q4_K,
    experts: GGMLQuantizationType | None = None,
) -> Path:
    """Header and tensor table of `m`, then a sparse extension to the real size."""
    writer = _writer(path, m)
    for name, shape, ttype in arch_tensors(m, qtype, experts):
        writer.add_tensor_info(
            name, shape, np.dtype(np.float32), tensor_nbytes(shape, ttype), ttype
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    (infos,) = writer.tensors
    writer.close()
    data = sum(GGUFWriter.ggml_pad(ti.nbytes, writer.data_alignment) for ti in infos.values())
    header = GGUFWriter.ggml_pad(path.stat().st_size, writer.data_alignment)
    os.truncate(path, header + data)
    return path
