"""On-demand deployments in the plan (issue 18): a group takes turns, reserving its largest
member's need on each device; the totals show what all would hold at once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from maas.compiler import CompileOptions, MaasError, compile_plan, load_sources
from maas.compiler.plan import Plan
from support.paths import GOLDEN, ROOT

CASE = GOLDEN / "placement" / "on-demand-five-on-4090"


def _compile(tmp_path: Path, deploy: str) -> Plan:
    from tests.compiler.test_placement import model_for

    meta = json.loads((CASE / "case.json").read_text())
    node = GOLDEN / "placement" / "nodes" / meta["node"]
    documents = load_sources(
        {"deploy.yaml": deploy, str(node.relative_to(ROOT)): node.read_text(encoding="utf-8")}
    )
    assert not documents.diagnostics, [d.render() for d in documents.diagnostics]
    models = {n: model_for(spec, tmp_path / n) for n, spec in meta["models"].items()}
    return compile_plan(
        documents.deployments,
        documents.nodes[0].model,
        options=CompileOptions(),
        models={n: m for n, m in models.items() if m is not None},
    )


def test_group_reserves_its_largest_member(tmp_path: Path) -> None:
    plan = _compile(tmp_path, (CASE / "deploy.yaml").read_text())
    gpu = plan.totals[0]
    members = ["chat-a", "chat-b", "chat-c", "chat-d"]
    largest = max(gpu.by_deployment[m] for m in members)
    assert gpu.groups == {"small-gpu": largest}
    alone = gpu.by_deployment["always-8b"] + gpu.by_deployment["chat-e"]
    # three processes reserved (always-8b, the group's one at a time, chat-e): two contexts
    assert gpu.allocated_bytes == alone + largest + 2 * (512 << 20)
    assert gpu.all_at_once_bytes == sum(gpu.by_deployment.values()) + 5 * (512 << 20)
    assert gpu.all_at_once_bytes > gpu.usable_bytes >= gpu.allocated_bytes
    assert gpu.headroom_bytes == gpu.usable_bytes - gpu.allocated_bytes
    planned = plan.deployment("chat-d")
    assert planned is not None and planned.on_demand is not None
    assert (planned.on_demand.group, planned.on_demand.idle_timeout_s) == ("small-gpu", 600)
    assert plan.deployment("always-8b").on_demand is None  # type: ignore[union-attr]


def test_without_the_group_they_do_not_fit(tmp_path: Path) -> None:
    text = (CASE / "deploy.yaml").read_text().replace(", group: small-gpu", "")
    with pytest.raises(MaasError) as caught:
        _compile(tmp_path, text)
    assert any(d.code == "does-not-fit" for d in caught.value.diagnostics)


def test_on_demand_does_not_change_the_spec_hash(tmp_path: Path) -> None:
    text = (CASE / "deploy.yaml").read_text()
    grouped = _compile(tmp_path, text)
    other = _compile(tmp_path, text.replace("idle_timeout_s: 300", "idle_timeout_s: 30"))
    for d in grouped.deployments:
        assert other.deployment(d.name).spec_hash == d.spec_hash  # type: ignore[union-attr]


def test_bad_group_name_is_a_positioned_error() -> None:
    text = (
        "apiVersion: maas/v1\nkind: Deployment\nmetadata: {name: a}\nspec:\n"
        "  source: local_path\n  path: /m.gguf\n  on_demand: {group: Bad_Group}\n"
    )
    documents = load_sources({"d.yaml": text})
    (problem,) = [d for d in documents.diagnostics if d.severity == "error"]
    assert problem.render().startswith("d.yaml:7:")
    assert "Bad_Group" in problem.message


def test_plan_diff_names_an_on_demand_change(tmp_path: Path) -> None:
    from maas.compiler.plandiff import diff_fleets
    from maas.compiler.repo import FleetPlan

    text = (CASE / "deploy.yaml").read_text()
    base = _compile(tmp_path, text)
    head = _compile(tmp_path, text.replace("idle_timeout_s: 60}", "idle_timeout_s: 60, group: g2}"))
    diff = diff_fleets(FleetPlan({"n": base}), FleetPlan({"n": head}))
    (change,) = diff.changes
    assert change.name == "chat-e" and change.kind == "update"
    assert change.reasons == ("on demand idle 60s -> idle 60s in g2",)
