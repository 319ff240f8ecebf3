"""A fleet that must spread: Llama-3-70B Q4_0 GGUFs (39.2 GiB each on a GPU) and three nodes with
one 48 GB GPU each, under the `binpack` strategy (fullest node first). No node may get more than
its GPU holds: the plan spreads them, shows every node's totals, the pull-request diff shows how
each device's headroom moves, and a fourth that fits nowhere is an error naming every node."""

from __future__ import annotations

from pathlib import Path

import pytest
from gguf import GGMLQuantizationType

from maas.cli.render_diff import diff_markdown, diff_text
from maas.cli.render_plan import plan_text
from maas.compiler import MaasError
from maas.compiler.plandiff import diff_fleets
from maas.compiler.repo import compile_repo
from support import gguf_factory, paths
from support.golden import check_golden

GOLDEN = paths.GOLDEN / "fleet"
GIB = 1 << 30


def node(name: str) -> str:
    return (
        f"apiVersion: maas/v1\nkind: Node\nmetadata: {{name: {name}}}\nspec:\n"
        f"  cpu: {{cores: 32, threads: 64}}\n  memory: {{total_bytes: {256 * GIB}}}\n"
        f"  gpus:\n    - {{index: 0, uuid: GPU-{name}, name: NVIDIA RTX 6000 Ada Generation, "
        f"memory_total_bytes: {48 * GIB}}}\n"
    )


def deployment(name: str) -> str:
    return (
        f"apiVersion: maas/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n"
        f"  source: huggingface\n  repo_id: org/{name}\n  file: m.gguf\n  context_length: 8192\n"
    )


def test_a_fleet_that_must_spread(tmp_path: Path, update_goldens: bool) -> None:
    (path,) = gguf_factory.write_header_only(
        tmp_path / "m.gguf", gguf_factory.LLAMA3_70B, GGMLQuantizationType.Q4_0
    )
    meta = gguf_factory.header_metadata(path)
    names = ["alpha", "bravo", "charlie", "delta"]
    models = {n: meta for n in names}
    base_sources = {f"nodes/{x}.yaml": node(f"node-{x}") for x in "abc"}
    base_sources["maas.yaml"] = "apiVersion: maas/v1\nkind: Config\nspec: {strategy: binpack}\n"
    base_sources |= {f"deployments/{n}.yaml": deployment(n) for n in names[:2]}
    base = compile_repo(base_sources, models=models)
    head_sources = base_sources | {"deployments/charlie.yaml": deployment("charlie")}
    head = compile_repo(head_sources, previous=base, models=models)
    for plan in head.plans.values():
        for total in plan.totals:
            assert total.allocated_bytes <= total.usable_bytes
    assert sorted(len(p.deployments) for p in head.plans.values()) == [1, 1, 1]
    assert head.assignment["alpha"] == base.assignment["alpha"]  # nothing running moved
    assert head.assignment["bravo"] == base.assignment["bravo"]
    text = "\n\n".join(plan_text(head.plans[n]) for n in sorted(head.plans)) + "\n"
    check_golden(GOLDEN / "spread-plans.txt", text, update_goldens)
    change = diff_fleets(base, head)
    check_golden(GOLDEN / "spread-diff.txt", diff_text(change) + "\n", update_goldens)
    markdown = diff_markdown(change, base="base", head="head")
    check_golden(GOLDEN / "spread-diff.md", markdown, update_goldens)
    with pytest.raises(MaasError) as caught:
        compile_repo(head_sources | {"deployments/delta.yaml": deployment("delta")}, models=models)
    check_golden(GOLDEN / "spread-nowhere.txt", str(caught.value) + "\n", update_goldens)
