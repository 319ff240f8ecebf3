"""GGUF fixtures for tests and benchmarks, written with the `gguf` package (no hub, no network).

Two kinds:
- `write_tiny_llama`: a tiny but real llama-architecture model (random weights) that llama.cpp loads
  and generates with; the text is junk, the loading, memory and API are real.
- `write_header_only`: a model at a real model's shapes (`LLAMA3_8B`, `LLAMA3_70B`, `MIXTRAL_8X7B`)
  with only the header and tensor table written, extended to its full size as a sparse file.
  Metadata readers and llama.cpp's `llama-fit-params` see the real model; it costs no disk.

The keys and tensors are the ones llama.cpp requires (docs/test-images.md). Shapes here are
numpy order, the reverse of ggml's `ne`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFWriter

from maas.compiler.metadata import ModelMetadata


@dataclass(frozen=True)
class ModelShape:
    """The hyperparameters that decide every tensor's shape."""

    name: str
    vocab: int
    width: int
    layers: int
    ffn: int
    heads: int
    kv_heads: int
    context: int
    experts: int = 0
    experts_used: int = 0
    tied_output: bool = False

    @property
    def head_dim(self) -> int:
        return self.width // self.heads


LLAMA3_8B = ModelShape("llama-3-8b", 128256, 4096, 32, 14336, 32, 8, 8192)
LLAMA3_70B = ModelShape("llama-3-70b", 128256, 8192, 80, 28672, 64, 8, 8192)
MIXTRAL_8X7B = ModelShape("mixtral-8x7b", 32000, 4096, 32, 14336, 32, 8, 32768, 8, 2)
# Held-out shapes for validating estimates calibrated on the three above.
QWEN25_14B = ModelShape("qwen2.5-14b-shape", 152064, 5120, 48, 13824, 40, 8, 32768)
LLAMA2_13B = ModelShape("llama-2-13b", 32000, 5120, 40, 13824, 40, 40, 4096)
MOE_16X = ModelShape("moe-16x", 32000, 4096, 24, 6144, 32, 8, 32768, 16, 2)
TINY = ModelShape("maas-tiny-llama", 1000, 256, 4, 512, 4, 2, 2048)
TINY_MOE = replace(TINY, name="maas-tiny-moe", experts=4, experts_used=2)

F32 = GGMLQuantizationType.F32


def tensor_nbytes(shape: tuple[int, ...], qtype: GGMLQuantizationType) -> int:
    """Bytes of a tensor of numpy `shape` stored as `qtype` (rows are whole blocks)."""
    block, type_size = GGML_QUANT_SIZES[qtype]
    return int(np.prod(shape)) // block * type_size


def model_tensors(
    shape: ModelShape, qtype: GGMLQuantizationType
) -> list[tuple[str, tuple[int, ...], GGMLQuantizationType]]:
    """Every tensor of a llama-architecture model: name, numpy shape, type (norms stay F32)."""
    w, f, kv = shape.width, shape.ffn, shape.kv_heads * shape.head_dim
    out: list[tuple[str, tuple[int, ...], GGMLQuantizationType]] = [
        ("token_embd.weight", (shape.vocab, w), qtype),
        ("output_norm.weight", (w,), F32),
    ]
    if not shape.tied_output:
        out.append(("output.weight", (shape.vocab, w), qtype))
    for i in range(shape.layers):
        blk = f"blk.{i}"
        out += [
            (f"{blk}.attn_norm.weight", (w,), F32),
            (f"{blk}.attn_q.weight", (w, w), qtype),
            (f"{blk}.attn_k.weight", (kv, w), qtype),
            (f"{blk}.attn_v.weight", (kv, w), qtype),
            (f"{blk}.attn_output.weight", (w, w), qtype),
            (f"{blk}.ffn_norm.weight", (w,), F32),
        ]
        if shape.experts:
            e = shape.experts
            out += [
                (f"{blk}.ffn_gate_inp.weight", (e, w), F32),
                (f"{blk}.ffn_gate_exps.weight", (e, f, w), qtype),
                (f"{blk}.ffn_up_exps.weight", (e, f, w), qtype),
                (f"{blk}.ffn_down_exps.weight", (e, w, f), qtype),
            ]
        else:
            out += [
                (f"{blk}.ffn_gate.weight", (f, w), qtype),
                (f"{blk}.ffn_up.weight", (f, w), qtype),
                (f"{blk}.ffn_down.weight", (w, f), qtype),
            ]
    return out


def _writer(path: Path, shape: ModelShape, *, split_max_tensors: int = 0) -> GGUFWriter:
    writer = GGUFWriter(str(path), "llama", split_max_tensors=split_max_tensors)
    writer.add_name(shape.name)
    writer.add_context_length(shape.context)
    writer.add_embedding_length(shape.width)
    writer.add_block_count(shape.layers)
    writer.add_feed_forward_length(shape.ffn)
    writer.add_head_count(shape.heads)
    writer.add_head_count_kv(shape.kv_heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(shape.head_dim)
    writer.add_rope_freq_base(500000.0)
    if shape.experts:
        writer.add_expert_count(shape.experts)
        writer.add_expert_used_count(shape.experts_used)
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    tokens += [f"tok{i}" for i in range(shape.vocab - len(tokens))]
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * shape.vocab)
    writer.add_token_types([2, 3, 3] + [6] * 256 + [1] * (shape.vocab - 259))
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    return writer


def write_header_only(
    path: Path,
    shape: ModelShape = LLAMA3_8B,
    qtype: GGMLQuantizationType = GGMLQuantizationType.Q4_0,
    *,
    split_max_tensors: int = 0,
) -> list[Path]:
    """Header and tensor table of `shape`, then a sparse extension to the real size.

    With `split_max_tensors` the model is written as `NAME-0000K-of-0000N.gguf` shards; the paths
    of all files are returned in order.
    """
    writer = _writer(path, shape, split_max_tensors=split_max_tensors)
    tensors = model_tensors(shape, qtype)
    for name, numpy_shape, ttype in tensors:
        writer.add_tensor_info(
            name, numpy_shape, np.dtype(np.float32), tensor_nbytes(numpy_shape, ttype), ttype
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    names = writer.format_shard_names(path)
    shards = list(zip(names, writer.tensors, strict=True))
    writer.close()
    for shard, infos in shards:
        data = sum(GGUFWriter.ggml_pad(ti.nbytes, writer.data_alignment) for ti in infos.values())
        header = GGUFWriter.ggml_pad(shard.stat().st_size, writer.data_alignment)
        os.truncate(shard, header + data)
    return [p for p, _ in shards]


def write_tiny_llama(
    path: Path,
    *,
    shape: ModelShape = TINY,
    qtype: GGMLQuantizationType = GGMLQuantizationType.F32,
    seed: int = 0,
) -> Path:
    """A small real model (default 4 layers, 256 wide, 1000 tokens) that llama.cpp runs.

    Weights are random; `qtype` may be F32, F16 or Q8_0 (Q8_0 blocks are written with a real f16
    scale). Pass `shape=TINY_MOE` for a mixture-of-experts model.
    """
    rng = np.random.default_rng(seed)
    writer = _writer(path, shape)
    for name, numpy_shape, ttype in model_tensors(shape, qtype):
        if name.endswith("norm.weight"):
            writer.add_tensor(name, np.ones(numpy_shape, dtype=np.float32))
            continue
        values = (rng.standard_normal(numpy_shape) * 0.02).astype(np.float32)
        if ttype == F32:
            writer.add_tensor(name, values)
        elif ttype == GGMLQuantizationType.F16:
            writer.add_tensor(name, values.astype(np.float16))
        else:
            writer.add_tensor(name, _quantize(values, ttype), raw_dtype=ttype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _quantize(values: np.ndarray, qtype: GGMLQuantizationType) -> np.ndarray:
    from gguf.quants import quantize

    return quantize(values, qtype)


def fill_random_weights(paths: list[Path], *, seed: int = 0, scale: float = 0.01) -> None:
    """Give a header-only model real data in place: random quants with a small f16 block scale.

    Norms become ones, so llama.cpp computes finite numbers; `llama-bench` then measures real
    speed. The files stop being sparse (this writes every byte).
    """
    from gguf import GGUFReader

    rng = np.random.default_rng(seed)
    scale_bytes = np.frombuffer(np.float16(scale).tobytes(), dtype=np.uint8)
    for path in paths:
        reader = GGUFReader(path, "r+")
        for tensor in reader.tensors:
            data = tensor.data
            if tensor.tensor_type == F32:
                data[...] = 1.0 if tensor.name.endswith("norm.weight") else 0.01
                continue
            raw = data.reshape(-1).view(np.uint8)
            raw[:] = rng.integers(0, 256, raw.size, dtype=np.uint8)
            if tensor.tensor_type == GGMLQuantizationType.F16:
                raw.view(np.float16)[:] = np.float16(scale)
                continue
            type_size = GGML_QUANT_SIZES[GGMLQuantizationType(tensor.tensor_type)][1]
            blocks = raw.reshape(-1, type_size)
            blocks[:, :2] = scale_bytes
        reader.data.flush()


def header_metadata(path: Path) -> ModelMetadata:
    """The placement metadata of a (header-only) GGUF written here, read as the agent reads it:
    the first 8 MiB, never the hole behind them."""
    from maas.compiler.metadata.gguf import GgufHeader, parse_gguf
    from maas.compiler.metadata.model import from_gguf

    with path.open("rb") as f:
        head = f.read(8 << 20)
    header = parse_gguf(head, name=path.name, complete=False, file_size=path.stat().st_size)
    assert isinstance(header, GgufHeader)
    return from_gguf([header], names=[path.name])


# A Llama-3.1-8B `config.json` for vLLM placement (safetensors metadata).
LLAMA31_8B_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "max_position_embeddings": 131072,
    "torch_dtype": "bfloat16",
    "vocab_size": 128256,
}
