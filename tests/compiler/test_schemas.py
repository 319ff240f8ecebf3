"""The committed JSON Schemas match the models, and every example validates against them."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from ruamel.yaml import YAML

from maas.compiler import schema_text
from support.paths import ROOT


@pytest.mark.parametrize("kind", ["deployment", "node", "plan"])
def test_committed_schema_has_not_drifted(kind: str) -> None:
    committed = (ROOT / "schemas" / f"{kind}.schema.json").read_text(encoding="utf-8")
    assert committed == schema_text(kind), (
        f"schemas/{kind}.schema.json is stale: run `maasctl schema {kind} > "
        f"schemas/{kind}.schema.json`"
    )


def _examples() -> list[Path]:
    return sorted((ROOT / "examples").rglob("*.yaml"))


@pytest.mark.parametrize("path", _examples(), ids=lambda p: str(p.relative_to(ROOT)))
def test_example_validates_against_schema(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# yaml-language-server: $schema="), "examples carry the modeline"
    for document in YAML(typ="safe").load_all(text):
        kind = document["kind"].lower()
        schema = json.loads((ROOT / "schemas" / f"{kind}.schema.json").read_text())
        jsonschema.validate(document, schema)


def test_golden_plans_validate_against_plan_schema() -> None:
    schema = json.loads((ROOT / "schemas" / "plan.schema.json").read_text())
    plans = sorted((ROOT / "tests" / "golden" / "plans").glob("*.json"))
    assert plans
    for path in plans:
        jsonschema.validate(json.loads(path.read_text()), schema)
