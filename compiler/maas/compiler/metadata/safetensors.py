"""Safetensors models: `config.json` plus weight bytes, parsed from bytes the edge fetched.

Weight bytes come from `model.safetensors.index.json` (`metadata.total_size`) or from the headers
of the `.safetensors` files (8-byte little-endian length, then JSON). Sizes are bounded and bad
input is a `MaasError` with a Diagnostic.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from maas.compiler.diagnostics import MaasError, Position
from maas.compiler.metadata.model import ModelMetadata

MAX_JSON_BYTES = 100 << 20  # the safetensors format's own header limit
DTYPE_BYTES = {
    "float32": 4.0, "float": 4.0, "float16": 2.0, "half": 2.0, "bfloat16": 2.0,
    "float8_e4m3fn": 1.0, "float8_e5m2": 1.0, "int8": 1.0,
}  # fmt: skip


def _bad(name: str, detail: str) -> MaasError:
    return MaasError.single("model-metadata", detail, position=Position(name))


def _json_object(data: bytes, name: str) -> dict[str, Any]:
    if len(data) > MAX_JSON_BYTES:
        raise _bad(name, f"{len(data)} bytes of JSON is more than a model header holds")
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # deep nesting: RecursionError
        raise _bad(name, f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise _bad(name, "expected a JSON object")
    return value


def header_length(prefix: bytes, *, name: str) -> int:
    """Bytes of a safetensors file needed for its header (8 + the declared JSON length)."""
    if len(prefix) < 8:
        raise _bad(name, "file ends before the safetensors header length")
    (size,) = struct.unpack("<Q", prefix[:8])
    if size > MAX_JSON_BYTES:
        raise _bad(name, f"safetensors header declares {size} bytes")
    return 8 + int(size)


def safetensors_weight_bytes(data: bytes, *, name: str) -> int:
    """Sum of tensor byte ranges from one safetensors file's header (prefix of the file)."""
    end = header_length(data, name=name)
    if len(data) < end:
        raise _bad(name, f"file ends inside the safetensors header ({len(data)} of {end} bytes)")
    header = _json_object(data[8:end], name)
    total = 0
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if (
            not (isinstance(offsets, list) and len(offsets) == 2)
            or not all(isinstance(o, int) and o >= 0 for o in offsets)
            or offsets[1] < offsets[0]
        ):
            raise _bad(name, f"tensor '{key}' has no valid data_offsets")
        total += offsets[1] - offsets[0]
    return total


def index_total_size(data: bytes, *, name: str) -> int:
    metadata = _json_object(data, name).get("metadata")
    size = metadata.get("total_size") if isinstance(metadata, dict) else None
    # JSON numbers may be NaN, Infinity or 1e999, which int() refuses.
    if not isinstance(size, int | float) or isinstance(size, bool) or not 0 < size < math.inf:
        raise _bad(name, "index has no metadata.total_size")
    return int(size)


def from_config(
    config_bytes: bytes, *, weight_bytes: int, name: str, files: Sequence[str] = ()
) -> ModelMetadata:
    """Model metadata from a Hugging Face `config.json` and the total weight bytes."""
    config = _json_object(config_bytes, name)
    text = config.get("text_config")
    merged: Mapping[str, Any] = {**config, **text} if isinstance(text, dict) else config

    def number(*keys: str, default: int | None = None) -> int | None:
        for key in keys:
            value = merged.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
        return default

    layers = number("num_hidden_layers", "n_layer", "num_layers")
    hidden = number("hidden_size", "n_embd", "d_model")
    heads = number("num_attention_heads", "n_head")
    if layers is None or hidden is None or heads is None:
        raise _bad(name, "config.json lacks num_hidden_layers, hidden_size or num_attention_heads")
    head_dim = number("head_dim", default=hidden // heads) or hidden // heads
    dtype = str(merged.get("torch_dtype") or merged.get("dtype") or "bfloat16")
    quant = merged.get("quantization_config")
    method = str(quant.get("quant_method")) if isinstance(quant, dict) else None
    archs = merged.get("architectures")
    return ModelMetadata(
        format="safetensors",
        architecture=str(archs[0]) if isinstance(archs, list) and archs else "unknown",
        block_count=layers,
        context_length=number("max_position_embeddings", "n_positions", "seq_length"),
        embedding_length=hidden,
        feed_forward_length=number("intermediate_size"),
        head_count=heads,
        head_count_kv=number("num_key_value_heads", default=heads) or heads,
        key_length=head_dim,
        value_length=head_dim,
        expert_count=number("num_local_experts", "num_experts", "n_routed_experts", default=0) or 0,
        expert_used_count=number("num_experts_per_tok", default=0) or 0,
        expert_feed_forward_length=number("moe_intermediate_size"),
        vocab_size=number("vocab_size"),
        weight_bytes=weight_bytes,
        dtype_bytes=DTYPE_BYTES.get(dtype, 2.0),
        quantization=method,
        files=list(files),
    )
