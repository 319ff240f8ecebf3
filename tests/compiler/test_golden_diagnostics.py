"""Malformed inputs -> the exact diagnostics text a user sees (`maasctl validate` / `plan --node`).

A case file may start with `# compile-against: NODE.yaml` to be compiled against that node profile.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from maas.compiler import CompileOptions, MaasError, check_deployments, compile_plan, load_sources
from maas.compiler.diagnostics import Diagnostic, errors_only
from maas.compiler.policy import Policy
from support.golden import check_golden
from support.paths import GOLDEN, ROOT

CASES = GOLDEN / "diagnostics" / "cases"
MARKER = "# compile-against: "


def diagnose(case: Path) -> list[Diagnostic]:
    text = case.read_text(encoding="utf-8")
    name = f"cases/{case.name}"
    if not text.startswith(MARKER):
        documents = load_sources({name: text})
        return documents.diagnostics + check_deployments(documents.deployments)
    node_file = ROOT / text.splitlines()[0].removeprefix(MARKER).strip()
    documents = load_sources({name: text}, kinds=("Deployment",))
    if documents.diagnostics:
        return documents.diagnostics
    node = load_sources({"node.yaml": node_file.read_text()}).nodes[0].model
    try:
        compile_plan(documents.deployments, node, options=CompileOptions(policy=Policy()))
    except MaasError as exc:
        return list(exc.diagnostics)
    return []


def test_enough_cases() -> None:
    assert len(list(CASES.glob("*.yaml"))) >= 20


@pytest.mark.parametrize("case", sorted(CASES.glob("*.yaml")), ids=lambda p: p.stem)
def test_diagnostics(case: Path, update_goldens: bool) -> None:
    diagnostics = diagnose(case)
    assert errors_only(diagnostics), f"{case.name} should be invalid"
    text = "\n".join(d.render() for d in diagnostics) + "\n"
    check_golden(
        case.with_suffix(".txt").parent.parent / "expected" / f"{case.stem}.txt",
        text,
        update_goldens,
    )
