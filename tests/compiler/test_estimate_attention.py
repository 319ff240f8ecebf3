"""Each attention kind's cache as llama.cpp allocates it, on header-only GGUFs at published shapes
(support.gguf_arch), with the numbers worked out by hand from llama.cpp's rules."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from gguf import GGMLQuantizationType as Q

from maas.compiler import CompileOptions, compile_plan, load_sources
from maas.compiler.metadata import ModelMetadata
from maas.compiler.metadata.gguf import GgufHeader, parse_gguf
from maas.compiler.metadata.model import from_gguf
from maas.compiler.placement.attention import known_architecture, layer_caches, swa_layers
from maas.compiler.placement.llama_memory import LlamaLayout, layer_cache_bytes, llama_memory
from support import gguf_arch, gguf_factory

MIB = 1 << 20


def _meta(path: Path) -> ModelMetadata:
    with path.open("rb") as f:
        header = parse_gguf(
            f.read(16 << 20), name=path.name, complete=False, file_size=path.stat().st_size
        )
    assert isinstance(header, GgufHeader)
    return from_gguf([header], names=[path.name])


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModelMetadata]:
    tmp = tmp_path_factory.mktemp("arch")
    out = {}
    for m, q, e in (
        (gguf_arch.GEMMA3_27B, Q.Q4_K, None),
        (gguf_arch.GPT_OSS_20B, Q.Q8_0, Q.MXFP4),
        (gguf_arch.DEEPSEEK_V3, Q.Q4_K, None),
    ):
        out[m.arch] = _meta(gguf_arch.write_arch_header_only(tmp / f"{m.name}.gguf", m, q, e))
    return out


def test_gemma3_keeps_a_window_on_five_of_six_layers(models: dict[str, ModelMetadata]) -> None:
    meta = models["gemma3"]
    flags = swa_layers(meta)
    assert flags[:6] == [True] * 5 + [False] and flags.count(False) == 10  # layers 5, 11, ... 59
    caches = layer_cache_bytes(meta, 32768)
    width = 16 * (128 + 128) * 2  # KV heads x (K + V) x f16
    assert caches[5] == 32768 * width
    # window 1024 + ubatch 512, padded to 256 (llama_kv_cache_iswa)
    assert caches[0] == 1536 * width
    # at a context shorter than the window the window layers keep the context
    assert layer_cache_bytes(meta, 1000)[0] == 1024 * width


def test_gpt_oss_window_of_128_and_its_slots(models: dict[str, ModelMetadata]) -> None:
    meta = models["gpt-oss"]
    width = 8 * (64 + 64) * 2
    one = layer_cache_bytes(meta, 32768)
    assert one[0] == 768 * width and one[1] == 32768 * width  # 128 + 512 -> 768 cells
    four = layer_cache_bytes(meta, 32768, parallel=4)
    assert four[0] == 4 * one[0] and four[1] == 4 * one[1]  # one stream per slot


def test_deepseek_mla_caches_the_latent_only(models: dict[str, ModelMetadata]) -> None:
    meta = models["deepseek2"]
    assert {kind for kind, _ in layer_caches(meta)} == {"full"}
    assert layer_caches(meta)[0][1] == 576  # kv_lora_rank 512 + 64 rope dims, no V
    kv = llama_memory(meta, LlamaLayout((61,), True), n_ctx=16384).gpus[0].kv
    assert kv == 61 * 16384 * 576 * 2
    # the 128 heads widen the compute buffer past the logits (llama.cpp: 384-412 MiB)
    compute = llama_memory(meta, LlamaLayout((61,), True), n_ctx=4096).gpus[0].compute
    assert 384 * MIB <= compute <= 440 * MIB


def test_legacy_deepseek_without_mla_keys_keeps_k_and_v(models: dict[str, ModelMetadata]) -> None:
    legacy = models["deepseek2"].model_copy(
        update={"key_length_mla": None, "head_count_kv": 128, "key_length": 192,
                "value_length": 128}
    )  # fmt: skip
    assert layer_caches(legacy)[0] == ("full", 128 * (192 + 128))


def test_qwen3next_hybrid_has_a_fixed_state_on_three_of_four_layers() -> None:
    meta = ModelMetadata(
        format="gguf", architecture="qwen3next", block_count=8, embedding_length=2048,
        head_count=16, head_count_kv=2, key_length=256, value_length=256, weight_bytes=1,
        ssm_conv_kernel=4, ssm_inner_size=4096, ssm_state_size=128, ssm_group_count=16,
    )  # fmt: skip
    kinds = [kind for kind, _ in layer_caches(meta)]
    assert kinds == ["recurrent"] * 3 + ["full"] + ["recurrent"] * 3 + ["full"]
    state = 3 * (4096 + 2 * 16 * 128) + 128 * 4096  # n_embd_r + n_embd_s
    caches = layer_cache_bytes(meta, 65536, parallel=2)
    assert caches[0] == state * 4 * 2  # f32, one per slot, whatever the context
    assert caches[3] == 2 * 65536 * 2 * 256 * 2 * 2


def test_mistral_style_window_in_a_llama_gguf_is_full_context() -> None:
    meta = ModelMetadata(
        format="gguf", architecture="llama", block_count=2, embedding_length=4096,
        head_count=32, head_count_kv=8, key_length=128, value_length=128, weight_bytes=1,
        sliding_window=4096,
    )  # fmt: skip
    assert [kind for kind, _ in layer_caches(meta)] == ["full", "full"]
    assert known_architecture(meta)


def test_unknown_architecture_is_a_warning_naming_it(tmp_path: Path) -> None:
    (path,) = gguf_factory.write_header_only(tmp_path / "model.gguf")
    meta = _meta(path).model_copy(update={"architecture": "rwkv7"})
    assert not known_architecture(meta)
    spec = (
        "apiVersion: maas/v1\nkind: Deployment\nmetadata: {name: odd}\nspec:\n"
        "  source: huggingface\n  repo_id: org/model\n  file: model.gguf\n"
    )
    node = (
        "apiVersion: maas/v1\nkind: Node\nmetadata: {name: n}\nspec:\n"
        "  cpu: {cores: 8, threads: 16}\n  memory: {total_bytes: 68719476736}\n"
        "  gpus: [{index: 0, uuid: GPU-1, name: NVIDIA H100, memory_total_bytes: 85899345920}]\n"
    )
    documents = load_sources({"odd.yaml": spec, "node.yaml": node})
    plan = compile_plan(
        documents.deployments,
        documents.nodes[0].model,
        options=CompileOptions(),
        models={"odd": meta},
    )
    (deployment,) = plan.deployments
    (warning,) = deployment.diagnostics
    assert warning.code == "unknown-architecture" and "'rwkv7'" in warning.message


def test_split_layer_is_the_first_with_experts(models: dict[str, ModelMetadata]) -> None:
    """With every routed expert in host memory, llama.cpp's split falls on DeepSeek's first MoE
    layer (3; layers 0-2 are dense), never on a dense layer's FFN."""
    from maas.compiler.models import Gpu
    from maas.compiler.placement.llama_fit import experts_pattern, place_llama

    meta = models["deepseek2"]
    gpu = Gpu(index=0, uuid="GPU-0", name="H200", memory_total_bytes=14 << 30,
              memory_free_bytes=14 << 30)  # fmt: skip
    _, choice = place_llama(meta, [gpu], n_ctx=32768, margin=0, allow_cpu=True)
    assert choice is not None and choice.kind == "experts"
    layout = choice.layout
    assert min(layout.experts_on_cpu) == 3 and layout.split_ffn == "ffn"
    assert experts_pattern(sorted(layout.experts_on_cpu), layout.split_ffn)[0] == (
        r"blk\.3\.ffn_(gate|up|gate_up|down).*=CPU"
    )
    dense = meta.layers[3].total - meta.layers[3].experts
    whole = llama_memory(meta, replace(layout, split_ffn=None), n_ctx=32768)
    split = llama_memory(meta, layout, n_ctx=32768)
    moved = split.host.model - whole.host.model  # router and shared expert of layer 3
    assert 0 < moved < dense
