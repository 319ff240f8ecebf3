"""Model metadata readers: exact byte counts at real shapes, split files, prefixes, bad input."""

from __future__ import annotations

import contextlib
import json
import struct
from pathlib import Path

import pytest
from gguf import GGMLQuantizationType as Q
from gguf import GGUFReader
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maas.compiler.diagnostics import MaasError
from maas.compiler.metadata.gguf import GgufHeader, NeedMore, parse_gguf
from maas.compiler.metadata.model import ModelMetadata, from_gguf
from maas.compiler.metadata.safetensors import (
    from_config,
    index_total_size,
    safetensors_weight_bytes,
)
from support.gguf_factory import (
    LLAMA3_8B,
    LLAMA3_70B,
    MIXTRAL_8X7B,
    TINY,
    write_header_only,
    write_tiny_llama,
)


def read_model(paths: list[Path], prefix: int = 1 << 20) -> ModelMetadata:
    """What the fetcher does: grow a prefix until the header parses."""
    headers = []
    for path in paths:
        size = prefix
        while True:
            with path.open("rb") as f:
                data = f.read(size)
            result = parse_gguf(data, name=path.name, complete=False, file_size=path.stat().st_size)
            if isinstance(result, GgufHeader):
                headers.append(result)
                break
            assert isinstance(result, NeedMore) and result.size > size
            size = result.size
    return from_gguf(headers, names=[p.name for p in paths])


def q_bytes(elements: int, qtype: Q) -> int:
    return elements // 32 * {Q.Q4_0: 18, Q.Q8_0: 34}[qtype]


@pytest.mark.parametrize("qtype", [Q.Q4_0, Q.Q8_0])
def test_llama3_8b_exact_bytes(tmp_path: Path, qtype: Q) -> None:
    meta = read_model(write_header_only(tmp_path / "m.gguf", LLAMA3_8B, qtype))
    matrices = 4096 * 4096 * 2 + 1024 * 4096 * 2 + 14336 * 4096 * 3
    layer = q_bytes(matrices, qtype) + 2 * 4096 * 4
    assert [layer_bytes.total for layer_bytes in meta.layers] == [layer] * 32
    assert meta.token_embd_bytes == q_bytes(128256 * 4096, qtype)
    assert meta.output_bytes == q_bytes(128256 * 4096, qtype) + 4096 * 4
    assert meta.weight_bytes == 32 * layer + 2 * q_bytes(128256 * 4096, qtype) + 4096 * 4
    assert (meta.block_count, meta.head_count, meta.head_count_kv) == (32, 32, 8)
    assert (meta.key_length, meta.vocab_size, meta.context_length) == (128, 128256, 8192)
    assert meta.kv_width == 2 * 8 * 128
    assert meta.quantization == qtype.name and not meta.is_moe


def test_llama3_70b_and_mixtral_exact_bytes(tmp_path: Path) -> None:
    big = read_model(write_header_only(tmp_path / "70b.gguf", LLAMA3_70B, Q.Q4_0))
    matrices = 8192 * 8192 * 2 + 1024 * 8192 * 2 + 28672 * 8192 * 3
    assert big.layers[79].total == q_bytes(matrices, Q.Q4_0) + 2 * 8192 * 4
    moe = read_model(write_header_only(tmp_path / "mx.gguf", MIXTRAL_8X7B, Q.Q8_0))
    experts = q_bytes(8 * 14336 * 4096 * 3, Q.Q8_0)
    assert moe.layers[0].experts == experts
    assert moe.layers[0].largest_expert == experts // 3
    attention = q_bytes(4096 * 4096 * 2 + 1024 * 4096 * 2, Q.Q8_0)
    assert moe.layers[0].total == experts + attention + 8 * 4096 * 4 + 2 * 4096 * 4
    assert (moe.expert_count, moe.expert_used_count, moe.is_moe) == (8, 2, True)
    # what llama.cpp's fit moves of a split layer (ffn_down*, + ffn_gate*, + ffn_up*): the
    # router ffn_gate_inp goes with the gate
    router = 8 * 4096 * 4
    layer = moe.layers[0]
    assert (layer.ffn_down, layer.ffn_gate_down, layer.ffn) == (
        experts // 3, 2 * experts // 3 + router, experts + router,
    )  # fmt: skip


def test_split_gguf_is_one_model(tmp_path: Path) -> None:
    whole = read_model(write_header_only(tmp_path / "a.gguf", MIXTRAL_8X7B, Q.Q4_0))
    shards = write_header_only(tmp_path / "b.gguf", MIXTRAL_8X7B, Q.Q4_0, split_max_tensors=100)
    assert len(shards) == 4
    split = read_model(list(reversed(shards)))
    assert split.model_dump(exclude={"files"}) == whole.model_dump(exclude={"files"})
    with pytest.raises(MaasError, match="needs all 4 files"):
        read_model(shards[:3])


def test_agrees_with_the_gguf_package_reader(tmp_path: Path) -> None:
    path = write_tiny_llama(tmp_path / "tiny.gguf", qtype=Q.Q8_0)
    header = parse_gguf(path.read_bytes(), name="tiny", complete=True)
    assert isinstance(header, GgufHeader)
    theirs = GGUFReader(path)
    assert [(t.name, t.n_bytes, int(t.tensor_type)) for t in theirs.tensors] == [
        (t.name, t.nbytes, t.ggml_type) for t in header.tensors
    ]
    assert header.data_offset == theirs.data_offset


def test_prefix_grows_then_parses(tmp_path: Path) -> None:
    (path,) = write_header_only(tmp_path / "m.gguf", LLAMA3_8B)
    first = parse_gguf(_head(path, 4096), name="m", complete=False, file_size=path.stat().st_size)
    assert isinstance(first, NeedMore) and first.size >= 1 << 20
    assert read_model([path], prefix=4096).block_count == 32


def _head(path: Path, size: int) -> bytes:
    with path.open("rb") as f:
        return f.read(size)


@pytest.fixture(scope="module")
def tiny_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = write_tiny_llama(tmp_path_factory.mktemp("tiny") / "t.gguf", shape=TINY)
    return path.read_bytes()


def test_truncated_file_is_a_diagnostic(tiny_bytes: bytes) -> None:
    header = parse_gguf(tiny_bytes, name="t", complete=True)
    assert isinstance(header, GgufHeader)
    for cut in (0, 3, 10, 24, 100, header.data_offset - 1, header.data_offset + 10):
        with pytest.raises(MaasError) as info:
            parse_gguf(tiny_bytes[:cut], name="t.gguf", complete=True)
        assert info.value.diagnostics[0].code == "model-metadata"
        assert str(info.value.diagnostics[0].position) == "t.gguf"


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ((0, b"GGUX"), "bad magic"),
        ((4, struct.pack("<I", 99)), "unsupported GGUF version"),
        ((8, struct.pack("<Q", 1 << 60)), "implausible counts"),
        ((24, struct.pack("<Q", 1 << 40)), "a string of"),
    ],
)
def test_corrupt_header_is_a_diagnostic(
    tiny_bytes: bytes, patch: tuple[int, bytes], message: str
) -> None:
    offset, raw = patch
    data = tiny_bytes[:offset] + raw + tiny_bytes[offset + len(raw) :]
    with pytest.raises(MaasError, match=message):
        parse_gguf(data, name="t", complete=True)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_mutated_headers_never_raise_anything_else(tiny_bytes: bytes, data: st.DataObject) -> None:
    header_end = 30_000
    position = data.draw(st.integers(0, header_end))
    junk = data.draw(st.binary(min_size=1, max_size=16))
    mutated = tiny_bytes[:position] + junk + tiny_bytes[position + len(junk) :]
    complete = data.draw(st.booleans())
    try:
        result = parse_gguf(
            mutated[: data.draw(st.integers(0, len(mutated)))], name="f", complete=complete
        )
    except MaasError:
        return
    if isinstance(result, GgufHeader):
        with contextlib.suppress(MaasError):
            from_gguf([result], names=["f"])


LLAMA31_8B_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "max_position_embeddings": 131072,
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "torch_dtype": "bfloat16",
    "vocab_size": 128256,
}


def safetensors_file(tensors: dict[str, tuple[str, list[int], int]]) -> bytes:
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (dtype, shape, nbytes) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw


def test_safetensors_config_and_weight_bytes() -> None:
    data = safetensors_file({"a": ("BF16", [4096, 4096], 4096 * 4096 * 2), "b": ("BF16", [8], 16)})
    assert safetensors_weight_bytes(data, name="m.safetensors") == 4096 * 4096 * 2 + 16
    index = json.dumps({"metadata": {"total_size": 16060522496}, "weight_map": {}}).encode()
    total = index_total_size(index, name="model.safetensors.index.json")
    meta = from_config(json.dumps(LLAMA31_8B_CONFIG).encode(), weight_bytes=total, name="c.json")
    assert (meta.block_count, meta.head_count_kv, meta.key_length) == (32, 8, 128)
    assert (meta.context_length, meta.dtype_bytes, meta.weight_bytes) == (131072, 2.0, total)
    assert meta.architecture == "LlamaForCausalLM" and meta.format == "safetensors"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x01\x00",
        struct.pack("<Q", 1 << 62),
        struct.pack("<Q", 5) + b"{]",
        struct.pack("<Q", 2) + b"[]",
        safetensors_file({})[:-1],
    ],
)
def test_bad_safetensors_header_is_a_diagnostic(data: bytes) -> None:
    with pytest.raises(MaasError):
        safetensors_weight_bytes(data, name="m.safetensors")


def test_config_without_shape_is_a_diagnostic() -> None:
    with pytest.raises(MaasError, match="lacks num_hidden_layers"):
        from_config(b'{"hidden_size": 8}', weight_bytes=1, name="config.json")
    with pytest.raises(MaasError, match="not valid JSON"):
        from_config(b"{", weight_bytes=1, name="config.json")
