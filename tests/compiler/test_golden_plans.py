"""Every example spec compiled against every example node: plan JSON or diagnostics text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from maas.compiler import CompileOptions, MaasError, compile_plan, load_sources, plan_to_json
from maas.compiler.policy import Policy
from support import paths
from support.golden import check_golden
from support.paths import ROOT

EXAMPLES = ROOT / "examples"
GOLDEN = paths.GOLDEN / "plans"
SPECS = sorted(p for p in EXAMPLES.glob("*.yaml"))
NODES = sorted((EXAMPLES / "nodes").glob("*.yaml"))


def _sources(*paths: Path) -> dict[str, str]:
    return {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8") for p in paths}


def test_examples_exist() -> None:
    assert len(SPECS) >= 4 and len(NODES) >= 2


@pytest.mark.parametrize("node_file", NODES, ids=lambda p: p.stem)
@pytest.mark.parametrize("spec_file", SPECS, ids=lambda p: p.stem)
def test_example_plan(spec_file: Path, node_file: Path, update_goldens: bool) -> None:
    documents = load_sources(_sources(spec_file, node_file))
    assert not documents.diagnostics, [d.render() for d in documents.diagnostics]
    assert len(documents.nodes) == 1
    stem = f"{spec_file.stem}__{node_file.stem}"
    try:
        plan = compile_plan(
            documents.deployments, documents.nodes[0].model, options=CompileOptions(policy=Policy())
        )
    except MaasError as exc:
        check_golden(GOLDEN / f"{stem}.txt", str(exc) + "\n", update_goldens)
        return
    check_golden(GOLDEN / f"{stem}.json", plan_to_json(plan), update_goldens)


def test_all_examples_together_compile_deterministically() -> None:
    sources = _sources(*SPECS, NODES[-1])
    documents = load_sources(sources)
    node = documents.nodes[0].model
    first = plan_to_json(compile_plan(documents.deployments, node))
    second = plan_to_json(compile_plan(list(reversed(documents.deployments)), node))
    assert first == second


def test_a_plan_stored_before_actions_left_it_still_loads() -> None:
    """Plans of older agents carry `action: create` on every deployment; their state loads."""
    from maas.compiler import Plan

    stored = json.loads((GOLDEN / "llama-gguf__gpu-01.json").read_text())
    for d in stored["deployments"]:
        d["action"] = "create"
    plan = Plan.model_validate(stored)
    assert "action" not in plan_to_json(plan)
