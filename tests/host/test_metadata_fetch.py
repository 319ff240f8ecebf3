"""The edge fetcher: local files, split files, the Hugging Face cache layout, offline, the cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gguf import GGMLQuantizationType as Q

from maas.compiler import load_sources
from maas.compiler.documents import Loaded
from maas.compiler.metadata import ModelMetadata
from maas.compiler.models import Deployment
from maas.host.models.metadata import fetch_models, read_local
from support.gguf_factory import MIXTRAL_8X7B, TINY, write_header_only, write_tiny_llama


def deployments(body: str) -> list[Loaded[Deployment]]:
    text = f"apiVersion: maas/v1\nkind: Deployment\nmetadata: {{name: m}}\nspec:\n{body}"
    documents = load_sources({"d.yaml": text})
    assert not documents.diagnostics
    return documents.deployments


def test_local_split_file_reads_all_shards(tmp_path: Path) -> None:
    shards = write_header_only(tmp_path / "mx.gguf", MIXTRAL_8X7B, Q.Q4_0, split_max_tensors=100)
    meta = read_local(shards[1])
    assert meta.files == [p.name for p in shards] and meta.expert_count == 8


def test_hf_cache_layout_offline(tmp_path: Path) -> None:
    repo = tmp_path / "hub" / "models--org--tiny"
    snapshot = repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    write_tiny_llama(snapshot / "tiny-q8_0.gguf", shape=TINY, qtype=Q.Q8_0)
    spec = deployments("  source: huggingface\n  repo_id: org/tiny\n  file: '*q8_0.gguf'\n")
    result = fetch_models(
        spec, offline=True, metadata_cache=tmp_path / "c", hf_cache=tmp_path / "hub"
    )
    assert result.models["m"].quantization == "Q8_0" and not result.warnings


def test_offline_without_copy_is_unknown_and_cache_hit_is_used(tmp_path: Path) -> None:
    spec = deployments("  source: huggingface\n  repo_id: org/big\n  file: big.gguf\n")
    result = fetch_models(
        spec, offline=True, metadata_cache=tmp_path / "c", hf_cache=tmp_path / "h"
    )
    assert result.models == {}
    assert [w.code for w in result.warnings] == ["estimate-unknown"]
    assert "offline" in result.warnings[0].message
    cached = read_local(write_tiny_llama(tmp_path / "t.gguf"))
    # An entry of the unversioned layout (before CACHE_FORMAT) is not read.
    old = tmp_path / "c" / "org" / "big" / "main" / "big.gguf.json"
    old.parent.mkdir(parents=True)
    old.write_text(cached.model_dump_json())
    again = fetch_models(spec, offline=True, metadata_cache=tmp_path / "c", hf_cache=tmp_path)
    assert again.models == {}
    key = tmp_path / "c" / "v2" / "org" / "big" / "main" / "big.gguf.json"
    key.parent.mkdir(parents=True)
    key.write_text(cached.model_dump_json())
    result = fetch_models(
        spec, offline=True, metadata_cache=tmp_path / "c", hf_cache=tmp_path / "h"
    )
    assert result.models["m"] == cached
    # A torn entry is no error: it is dropped (and read again from the hub when online).
    key.write_text(cached.model_dump_json()[:40])
    torn = fetch_models(spec, offline=True, metadata_cache=tmp_path / "c", hf_cache=tmp_path)
    assert torn.models == {} and not key.exists()


def test_local_safetensors_folder(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({
        "num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4,
        "torch_dtype": "float16",
    }))  # fmt: skip
    header = json.dumps({"w": {"dtype": "F16", "shape": [64, 64], "data_offsets": [0, 8192]}})
    raw = len(header).to_bytes(8, "little") + header.encode() + bytes(8192)
    (tmp_path / "model.safetensors").write_bytes(raw)
    meta = read_local(tmp_path)
    assert isinstance(meta, ModelMetadata)
    assert (meta.weight_bytes, meta.block_count, meta.dtype_bytes) == (8192, 2, 2.0)


def test_custom_backend_is_not_fetched(tmp_path: Path) -> None:
    spec = deployments("  source: huggingface\n  repo_id: o/n\n  backend: custom\n  image: x:1\n")
    result = fetch_models(spec, offline=False, metadata_cache=tmp_path, hf_cache=tmp_path)
    assert result.models == {} and result.warnings == []


def test_corrupt_local_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "bad.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 32)
    spec = deployments(f"  source: local_path\n  path: {tmp_path / 'bad.gguf'}\n")
    with pytest.raises(Exception, match="not a valid GGUF") as info:
        fetch_models(spec, offline=True, metadata_cache=tmp_path, hf_cache=tmp_path)
    assert type(info.value).__name__ == "MaasError"


def test_range_reads_grow_and_never_fetch_whole_files(tmp_path: Path) -> None:
    """What the hub path does over HTTP: prefixes only, doubling while the header needs more."""
    from maas.host.models.metadata import read_gguf_files
    from support.gguf_factory import LLAMA3_8B

    (path,) = write_header_only(tmp_path / "l.gguf", LLAMA3_8B, Q.Q4_0)
    asked: list[int] = []

    def read(name: str, size: int) -> bytes:
        asked.append(size)
        with (tmp_path / name).open("rb") as f:
            return f.read(size)

    meta = read_gguf_files([path.name], read, {path.name: path.stat().st_size})
    assert meta.block_count == 32
    assert asked == [1 << 20, 2 << 20, 4 << 20]  # the 128k-token vocabulary is a ~3 MiB header
    assert max(asked) < path.stat().st_size // 1000
