"""Plans for people: the default table fits 100 columns, `wide` and `-v` add what it leaves out."""

from __future__ import annotations

from maas.cli.render_plan import plan_text
from maas.compiler import compile_plan, load_sources
from support.paths import ROOT


def test_examples_fit_100_columns_and_wide_adds_the_rest() -> None:
    paths = [*sorted((ROOT / "examples").glob("*.yaml")), ROOT / "examples/nodes/gpu-01.yaml"]
    documents = load_sources({str(p): p.read_text() for p in paths})
    plan = compile_plan(documents.deployments, documents.nodes[0].model)
    text = plan_text(plan)
    assert max(len(line) for line in text.splitlines()) <= 100, text
    assert "on GPU0" in text and "ghcr.io" not in text  # images and UUIDs only in wide
    wide = plan_text(plan, wide=True)
    assert "ghcr.io/huggingface/text-embeddings-inference:cpu-1.8" in wide
    assert "GPU-8f1c2d3e" in wide and "need not estimated" in wide
    verbose = plan_text(plan, commands=True)
    assert "bge-large: --model-id BAAI/bge-large-en-v1.5" in verbose
    assert "GPU0 GeForce RTX 4090  [" in text and "host memory" in text
