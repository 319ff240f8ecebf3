"""`ModelMetadata`: what placement knows about a model, as one serialisable value.

Built from GGUF headers (`from_gguf`, split files as one model) or from a safetensors
`config.json` plus weight bytes (maas.compiler.metadata.safetensors). Byte counts are exact for GGUF
(per layer, from the tensor table); the agent caches the value as JSON per repo revision.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from maas.compiler.diagnostics import MaasError, Position

if TYPE_CHECKING:  # the parser imports the gguf package (numpy); keep this module light
    from maas.compiler.metadata.gguf import GgufHeader, TensorInfo

BLOCK = re.compile(r"^blk\.(\d+)\.")
EXPERTS = re.compile(r"\.ffn_(gate|up|down|gate_up)_(ch)?exps\b")
FFN_PARTS = (("ffn_down",), ("ffn_gate", "ffn_down"), ("ffn_gate", "ffn_up", "ffn_down"))
# Per-layer tables are allocated from block_count: a hostile header must not size them.
MAX_BLOCKS = 1 << 16  # the deepest models have a few hundred layers


class LayerBytes(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    total: int = Field(description="All weights of the repeating layer, experts included.")
    experts: int = Field(default=0, description="Routed-expert tensors (ffn_*_exps).")
    largest: int = Field(default=0, description="Largest single tensor.")
    largest_expert: int = Field(default=0, description="Largest routed-expert tensor.")
    # The FFN parts llama.cpp's --fit moves to host memory for the one layer it splits (common/
    # fit.cpp, get_overflow_pattern; every ffn_* tensor whose name starts so, shared experts and
    # the router included): ffn_down*, ffn_gate* + ffn_down*, and all of ffn_gate/up/down*.
    ffn_down: int = Field(default=0, description="Tensors named ffn_down*.")
    ffn_gate_down: int = Field(default=0, description="Tensors named ffn_gate* or ffn_down*.")
    ffn: int = Field(default=0, description="Tensors named ffn_gate*, ffn_up* or ffn_down*.")


class ModelMetadata(BaseModel):
    """Model facts read from headers only; sizes in bytes."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    format: Literal["gguf", "safetensors"]
    architecture: str
    name: str | None = None
    block_count: int
    context_length: int | None = None
    embedding_length: int
    feed_forward_length: int | None = None
    head_count: int
    head_count_kv: int
    key_length: int
    value_length: int
    expert_count: int = 0
    expert_used_count: int = 0
    expert_feed_forward_length: int | None = None
    vocab_size: int | None = None
    weight_bytes: int
    layers: list[LayerBytes] = Field(default_factory=list, description="GGUF only.")
    token_embd_bytes: int = 0
    output_bytes: int = Field(default=0, description="Output head (+ norm) as loaded on a device.")
    dtype_bytes: float | None = Field(default=None, description="Bytes per weight (safetensors).")
    # Attention facts beyond plain grouped-query attention (GGUF keys, as llama.cpp reads them;
    # estimate_llama decides per architecture what they mean for its caches).
    head_count_kv_layers: list[int] = Field(
        default_factory=list, description="Per-layer KV heads when the header holds an array."
    )
    sliding_window: int | None = Field(default=None, description="attention.sliding_window.")
    sliding_window_pattern: int | list[bool] | None = Field(
        default=None, description="attention.sliding_window_pattern: period or per-layer flags."
    )
    key_length_swa: int | None = None
    value_length_swa: int | None = None
    kv_lora_rank: int = Field(default=0, description="MLA: compressed KV width.")
    key_length_mla: int | None = Field(default=None, description="MLA: head size, decompressed.")
    value_length_mla: int | None = None
    ssm_conv_kernel: int = 0
    ssm_inner_size: int = 0
    ssm_state_size: int = 0
    ssm_group_count: int = 0
    recurrent_layers: list[bool] = Field(
        default_factory=list, description="attention.recurrent_layers (hybrid models)."
    )
    full_attention_interval: int | None = None
    quantization: str | None = None
    files: list[str] = Field(default_factory=list)
    commit: str | None = Field(
        default=None, description="The hub commit the revision resolved to (read at the edge)."
    )
    download_bytes: int | None = Field(
        default=None, description="What the agent downloads for it: the files the hub lists."
    )

    @property
    def is_moe(self) -> bool:
        return self.expert_count > 1

    @property
    def kv_width(self) -> int:
        """K plus V elements per token per layer (n_embd_k_gqa + n_embd_v_gqa)."""
        return self.head_count_kv * (self.key_length + self.value_length)


def _int(header: GgufHeader, key: str, default: int | None = None) -> int | None:
    value = header.get(key, default)
    if isinstance(value, list):  # per-layer arrays (e.g. head_count_kv): the largest counts
        value = max(value) if value and all(_is_int(v) for v in value) else default
    if isinstance(value, bool) or not isinstance(value, int | None):
        return default
    return value


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_list(header: GgufHeader, key: str, n_layer: int) -> list[int]:
    """A per-layer integer array, or [] when the key is a scalar, absent or malformed."""
    value = header.get(key)
    if not isinstance(value, list) or len(value) != n_layer or not all(map(_is_int, value)):
        return []
    return [max(0, v) for v in value]


def _flags(header: GgufHeader, key: str, n_layer: int) -> list[bool] | None:
    """A per-layer boolean array (llama.cpp's get_key_or_arr of bools), or None."""
    value = header.get(key)
    if not isinstance(value, list) or len(value) < n_layer:
        return None
    return [bool(v) for v in value[:n_layer]]


def from_gguf(headers: Sequence[GgufHeader], *, names: Sequence[str]) -> ModelMetadata:
    """One model from its GGUF files (a split model passes every shard, any order)."""
    first = _first_shard(headers, names)
    arch = first.get("general.architecture")
    if not isinstance(arch, str):
        raise _missing(names[0], "general.architecture")

    def need(key: str) -> int:
        value = _int(first, f"{arch}.{key}")
        if value is None or value <= 0:
            raise _missing(names[0], f"{arch}.{key}")
        return value

    n_layer, n_embd = need("block_count"), need("embedding_length")
    # attention-free recurrent models (Mamba) have no heads: llama.cpp reads the key as optional
    recurrent = (_int(first, f"{arch}.ssm.state_size") or 0) > 0
    n_head = _int(first, f"{arch}.attention.head_count") or 0
    if not (recurrent and n_head == 0):
        n_head = need("attention.head_count")
    if n_layer > MAX_BLOCKS:
        raise MaasError.single(
            "model-metadata",
            f"{arch}.block_count {n_layer} is implausible (more than {MAX_BLOCKS})",
            position=Position(names[0]),
            hints=("the file may be damaged; download it again",),
        )
    n_head_kv = _int(first, f"{arch}.attention.head_count_kv") or n_head
    head_dim = n_embd // n_head if n_head else 0
    pattern_key = f"{arch}.attention.sliding_window_pattern"
    pattern: int | list[bool] | None = _flags(first, pattern_key, n_layer)
    if pattern is None:
        pattern = _int(first, pattern_key)
    tensors = [t for h in headers for t in h.tensors]
    layers, token_embd, output = _layer_bytes(tensors, n_layer)
    return ModelMetadata(
        format="gguf",
        architecture=arch,
        name=first.get("general.name") if isinstance(first.get("general.name"), str) else None,
        block_count=n_layer,
        context_length=_int(first, f"{arch}.context_length"),
        embedding_length=n_embd,
        feed_forward_length=_int(first, f"{arch}.feed_forward_length"),
        head_count=n_head,
        head_count_kv=n_head_kv,
        key_length=_int(first, f"{arch}.attention.key_length") or head_dim,
        value_length=_int(first, f"{arch}.attention.value_length") or head_dim,
        expert_count=_int(first, f"{arch}.expert_count") or 0,
        expert_used_count=_int(first, f"{arch}.expert_used_count") or 0,
        expert_feed_forward_length=_int(first, f"{arch}.expert_feed_forward_length"),
        vocab_size=first.array_lengths.get("tokenizer.ggml.tokens")
        or _int(first, f"{arch}.vocab_size"),
        weight_bytes=sum(t.nbytes for t in tensors),
        layers=layers,
        token_embd_bytes=token_embd,
        output_bytes=output,
        quantization=_quantization(tensors),
        files=list(names),
        head_count_kv_layers=_int_list(first, f"{arch}.attention.head_count_kv", n_layer),
        sliding_window=_int(first, f"{arch}.attention.sliding_window"),
        sliding_window_pattern=pattern,
        key_length_swa=_int(first, f"{arch}.attention.key_length_swa"),
        value_length_swa=_int(first, f"{arch}.attention.value_length_swa"),
        kv_lora_rank=_int(first, f"{arch}.attention.kv_lora_rank") or 0,
        key_length_mla=_int(first, f"{arch}.attention.key_length_mla"),
        value_length_mla=_int(first, f"{arch}.attention.value_length_mla"),
        ssm_conv_kernel=_int(first, f"{arch}.ssm.conv_kernel") or 0,
        ssm_inner_size=_int(first, f"{arch}.ssm.inner_size") or 0,
        ssm_state_size=_int(first, f"{arch}.ssm.state_size") or 0,
        ssm_group_count=_int(first, f"{arch}.ssm.group_count") or 0,
        recurrent_layers=_flags(first, f"{arch}.attention.recurrent_layers", n_layer) or [],
        full_attention_interval=_int(first, f"{arch}.full_attention_interval"),
    )


def _first_shard(headers: Sequence[GgufHeader], names: Sequence[str]) -> GgufHeader:
    if not headers:
        raise ValueError("from_gguf needs at least one header")
    # _int: a hostile header may hold any type there; count is compared before building a range.
    by_no = {_int(h, "split.no", 0) or 0: h for h in headers}
    count = _int(headers[0], "split.count", 1) or 0
    if len(by_no) != len(headers) or count != len(headers) or sorted(by_no) != list(range(count)):
        have = sorted(by_no)
        raise MaasError.single(
            "model-metadata",
            f"split GGUF needs all {count} files; got shard numbers {have}",
            position=Position(names[0]),
        )
    return by_no[0]


def _layer_bytes(tensors: list[TensorInfo], n_layer: int) -> tuple[list[LayerBytes], int, int]:
    total = [0] * n_layer
    experts = [0] * n_layer
    largest = [0] * n_layer
    largest_expert = [0] * n_layer
    parts = [[0, 0, 0] for _ in range(n_layer)]  # ffn_down, ffn_gate_down, ffn
    token_embd = output = 0
    has_output = False
    for tensor in tensors:
        match = BLOCK.match(tensor.name)
        if match and int(match.group(1)) < n_layer:
            i = int(match.group(1))
            total[i] += tensor.nbytes
            largest[i] = max(largest[i], tensor.nbytes)
            if EXPERTS.search(tensor.name):
                experts[i] += tensor.nbytes
                largest_expert[i] = max(largest_expert[i], tensor.nbytes)
            part = tensor.name[match.end() :]
            for k, prefixes in enumerate(FFN_PARTS):
                if part.startswith(prefixes):
                    parts[i][k] += tensor.nbytes
        elif tensor.name.startswith("token_embd."):
            token_embd += tensor.nbytes
        elif tensor.name.startswith("output"):
            output += tensor.nbytes
            has_output = has_output or tensor.name == "output.weight"
    if not has_output:  # tied embeddings: llama.cpp loads a copy of token_embd as the output
        output += token_embd
    columns = zip(total, experts, largest, largest_expert, parts, strict=True)
    layers = [
        LayerBytes(
            total=t, experts=e, largest=g, largest_expert=x, ffn_down=d, ffn_gate_down=gd, ffn=f
        )
        for t, e, g, x, (d, gd, f) in columns
    ]
    return layers, token_embd, output


def _quantization(tensors: list[TensorInfo]) -> str | None:
    from gguf.constants import GGMLQuantizationType

    weights: dict[int, int] = {}
    for tensor in tensors:
        if len(tensor.shape) >= 2:
            weights[tensor.ggml_type] = weights.get(tensor.ggml_type, 0) + tensor.nbytes
    if not weights:
        return None
    return GGMLQuantizationType(max(weights, key=lambda k: weights[k])).name


def _missing(name: str, key: str) -> MaasError:
    return MaasError.single(
        "model-metadata",
        f"GGUF header lacks '{key}'",
        position=Position(name),
        hints=("placement needs the model's shape; is this a language model?",),
    )
