"""Property-based fuzzing of the model metadata readers (GGUF and safetensors headers) in CI.

Real headers (tests/fuzz/corpus/gguf, written by the `gguf` package) are cut, and have integers
overwritten with extreme values at random offsets, which is where hostile length fields live.
"""

from __future__ import annotations

import json
import struct
import tracemalloc
from pathlib import Path

import pytest
from fuzz_targets import CORPUS, gguf_pipeline, safetensors_pipeline
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maas.compiler.metadata.gguf import GgufHeader, NeedMore, parse_gguf

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
GGUF_SEEDS = sorted((CORPUS / "gguf").glob("*.gguf"))
EXTREMES = [0, 1, 2, 3, 7, 8, 0x7F, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 40, (1 << 64) - 1]


@st.composite
def damaged_gguf(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(GGUF_SEEDS)).read_bytes())
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data) - 8))
        width = draw(st.sampled_from([1, 4, 8]))
        value = draw(st.sampled_from(EXTREMES)) & ((1 << (8 * width)) - 1)
        data[at : at + width] = value.to_bytes(width, "little")
    return bytes(data[: draw(st.integers(0, len(data)))])


@SETTINGS
@given(damaged_gguf())
def test_damaged_gguf_headers(data: bytes) -> None:
    gguf_pipeline(data)


@pytest.mark.parametrize("seed", GGUF_SEEDS, ids=lambda p: p.name)
def test_every_prefix_asks_for_more_or_parses(seed: Path) -> None:
    data = seed.read_bytes()
    for end in range(0, len(data), 97):
        result = parse_gguf(data[:end], name="x", complete=False)
        assert isinstance(result, GgufHeader | NeedMore)
        if isinstance(result, NeedMore):
            assert result.size > end  # a remote reader always grows its range


json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.sampled_from([-1, 0, 1 << 70, 1e308]),
        st.floats(),  # NaN and infinities included: JSON from Python may carry them
        st.text(max_size=5),
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)
config_keys = st.sampled_from(
    ["num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim",
     "torch_dtype", "quantization_config", "text_config", "architectures", "metadata",
     "total_size", "data_offsets", "num_local_experts", "max_position_embeddings"]
)  # fmt: skip


@SETTINGS
@given(st.dictionaries(config_keys, json_values, max_size=8))
def test_hostile_json_headers(document: dict[str, object]) -> None:
    raw = json.dumps(document).encode()
    safetensors_pipeline(raw)
    safetensors_pipeline(struct.pack("<Q", len(raw)) + raw)


HOSTILE = sorted([*CORPUS.glob("gguf/regression-*"), *CORPUS.glob("safetensors/regression-*")])


@pytest.mark.parametrize("path", HOSTILE, ids=lambda p: p.name)
def test_hostile_headers_take_bounded_memory(path: Path) -> None:
    pipeline = gguf_pipeline if path.parent.name == "gguf" else safetensors_pipeline
    tracemalloc.start()
    try:
        pipeline(path.read_bytes())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"peak {peak >> 20} MiB"
