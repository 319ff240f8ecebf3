"""Golden placement cases: spec + node profile + model fixture -> plan JSON or diagnostics text.

Each folder under tests/golden/placement/ holds `deploy.yaml` and `case.json` (the node profile
under nodes/ and the model: a GGUF written at real shapes by support.gguf_factory, or a
safetensors config with its total size). A crowded node's case holds several deployments in
`deploy.yaml` and `"models": {name: model}`; its golden also holds the plan as people read it.
Refresh with `pytest --update-goldens` and review the diff.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gguf import GGMLQuantizationType

from maas.cli.render_plan import plan_text
from maas.compiler import CompileOptions, MaasError, compile_plan, load_sources, plan_to_json
from maas.compiler.metadata import ModelMetadata
from maas.compiler.metadata.gguf import GgufHeader, parse_gguf
from maas.compiler.metadata.model import from_gguf
from maas.compiler.metadata.safetensors import from_config
from maas.compiler.placement.llama_fit import proportional_split
from support import gguf_arch, gguf_factory
from support.golden import check_golden
from support.paths import GOLDEN, ROOT

CASES = GOLDEN / "placement"
CONFIGS = {
    "LLAMA31_8B": {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32},
    "LLAMA31_70B": {"hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80},
}
COMMON = {
    "architectures": ["LlamaForCausalLM"],
    "max_position_embeddings": 131072,
    "num_key_value_heads": 8,
    "torch_dtype": "bfloat16",
    "vocab_size": 128256,
}


def model_for(spec: dict[str, object] | None, tmp: Path) -> ModelMetadata | None:
    if spec is None:
        return None
    if "arch" in spec:  # header-only GGUF of a non-llama architecture (support.gguf_arch)
        tmp.mkdir(parents=True, exist_ok=True)
        experts = GGMLQuantizationType[str(spec["experts"])] if "experts" in spec else None
        path = gguf_arch.write_arch_header_only(
            tmp / "model.gguf",
            getattr(gguf_arch, str(spec["arch"])),
            GGMLQuantizationType[str(spec["qtype"])],
            experts,
        )
        with path.open("rb") as f:
            header = parse_gguf(
                f.read(16 << 20), name=path.name, complete=False, file_size=path.stat().st_size
            )
        assert isinstance(header, GgufHeader)
        return from_gguf([header], names=["model.gguf"])
    if "gguf" in spec:
        shape = getattr(gguf_factory, str(spec["gguf"]))
        qtype = GGMLQuantizationType[str(spec["qtype"])]
        tmp.mkdir(parents=True, exist_ok=True)
        (path,) = gguf_factory.write_header_only(tmp / "model.gguf", shape, qtype)
        with path.open("rb") as f:
            header = parse_gguf(
                f.read(8 << 20), name=path.name, complete=False, file_size=path.stat().st_size
            )
        assert isinstance(header, GgufHeader)
        return from_gguf([header], names=["model.gguf"])
    config = {**COMMON, **CONFIGS[str(spec["config"])]}
    config["num_attention_heads"] = int(config["hidden_size"]) // 128  # type: ignore[call-overload]
    size = int(spec["total_size"])  # type: ignore[call-overload]
    return from_config(json.dumps(config).encode(), weight_bytes=size, name="config.json")


@pytest.mark.parametrize(
    "case", sorted(p for p in CASES.iterdir() if (p / "case.json").exists()), ids=lambda p: p.name
)
def test_placement_case(case: Path, tmp_path: Path, update_goldens: bool) -> None:
    meta = json.loads((case / "case.json").read_text())
    node_file = CASES / "nodes" / meta["node"]
    sources = {
        str(p.relative_to(ROOT)): p.read_text(encoding="utf-8")
        for p in (case / "deploy.yaml", node_file)
    }
    documents = load_sources(sources)
    assert not documents.diagnostics, [d.render() for d in documents.diagnostics]
    wanted = meta["models"] if "models" in meta else {case.name: meta["model"]}
    models = {name: model_for(spec, tmp_path / name) for name, spec in wanted.items()}
    try:
        plan = compile_plan(
            documents.deployments,
            documents.nodes[0].model,
            options=CompileOptions(),
            models={name: m for name, m in models.items() if m is not None},
        )
    except MaasError as exc:
        check_golden(case / "expected.txt", str(exc) + "\n", update_goldens)
        return
    check_golden(case / "expected.json", plan_to_json(plan), update_goldens)
    if "models" in meta:
        check_golden(case / "expected-plan.txt", plan_text(plan) + "\n", update_goldens)


def test_proportional_split() -> None:
    assert proportional_split(80, [24, 20]) == (44, 36)
    assert proportional_split(7, [1, 1, 1]) == (3, 2, 2)
    assert sum(proportional_split(81, [5, 7, 11])) == 81
