"""Write the binary seeds of tests/fuzz/corpus/{gguf,safetensors} (run once; output committed).

GGUF seeds are real headers written by the `gguf` package through tests/support/gguf_factory.py at
tiny shapes (dense, MoE, one shard of a split model), cut at the end of the tensor table; the
safetensors seeds are a header, an index and a config.json as Hugging Face writes them.

    PYTHONPATH=tests python tests/fuzz/make_corpus.py
"""

from __future__ import annotations

import json
import struct
import tempfile
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORPUS = Path(__file__).resolve().parent / "corpus"


def gguf_seeds() -> dict[str, bytes]:
    from maas.compiler.metadata.gguf import GgufHeader, parse_gguf
    from support.gguf_factory import TINY, write_header_only

    small = replace(TINY, name="seed", vocab=260, width=64, layers=2, ffn=128, context=512)
    shapes = {
        "dense": (small, 0),
        "moe": (replace(small, name="seed-moe", experts=4, experts_used=2), 0),
        "split-shard": (small, 8),
    }
    seeds = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (shape, split) in shapes.items():
            paths = write_header_only(Path(tmp) / f"{name}.gguf", shape, split_max_tensors=split)
            data = paths[0].read_bytes()
            header = parse_gguf(data, name=name, complete=True)
            assert isinstance(header, GgufHeader)
            seeds[f"{name}.gguf"] = data[: header.data_offset]
        seeds.update(gguf_regressions(seeds["dense.gguf"], Path(tmp)))
    return seeds


def gguf_regressions(dense: bytes, tmp: Path) -> dict[str, bytes]:
    """Hostile length fields that once escaped as MemoryError (sized allocations)."""
    from gguf import GGUFWriter

    key = b"llama.block_count"
    at = dense.index(key) + len(key) + 4  # skip the value type (uint32)
    huge_blocks = dense[:at] + struct.pack("<I", 0xFFFFFFFF) + dense[at + 4 :]
    writer = GGUFWriter(str(tmp / "split.gguf"), "llama")
    writer.add_block_count(2)
    writer.add_embedding_length(64)
    writer.add_head_count(4)
    writer.add_uint64("split.count", 1 << 60)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    return {
        "regression-huge-block-count.gguf": huge_blocks,
        "regression-huge-split-count.gguf": (tmp / "split.gguf").read_bytes(),
    }


def safetensors_seeds() -> dict[str, bytes]:
    header = {
        "__metadata__": {"format": "pt"},
        "model.embed_tokens.weight": {"dtype": "BF16", "shape": [8, 4], "data_offsets": [0, 64]},
        "lm_head.weight": {"dtype": "BF16", "shape": [8, 4], "data_offsets": [64, 128]},
    }
    raw = json.dumps(header).encode()
    config = {
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": 64,
        "intermediate_size": 128,
        "max_position_embeddings": 512,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "num_key_value_heads": 2,
        "torch_dtype": "bfloat16",
        "vocab_size": 8,
        "quantization_config": {"quant_method": "awq", "bits": 4},
    }
    index = {"metadata": {"total_size": 128}, "weight_map": {"lm_head.weight": "a.safetensors"}}
    return {
        # Each of these once escaped as RecursionError, OverflowError, ValueError, AttributeError.
        "regression-deep.json": b"[" * 5000,
        "regression-infinite-size.json": b'{"metadata": {"total_size": 1e999}}',
        "regression-nan-size.json": b'{"metadata": {"total_size": NaN}}',
        "regression-metadata-list.json": b'{"metadata": [1]}',
        "model.safetensors": struct.pack("<Q", len(raw)) + raw + bytes(128),
        "model.safetensors.index.json": json.dumps(index).encode(),
        "config.json": json.dumps(config).encode(),
        "config-moe.json": json.dumps(
            {**config, "num_local_experts": 8, "num_experts_per_tok": 2, "text_config": {}}
        ).encode(),
    }


def main() -> None:
    for kind, seeds in (("gguf", gguf_seeds()), ("safetensors", safetensors_seeds())):
        (CORPUS / kind).mkdir(parents=True, exist_ok=True)
        for name, data in seeds.items():
            (CORPUS / kind / name).write_bytes(data)
            print(f"{kind}/{name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
