"""Property-based fuzzing in CI (short): loading, specs, node profiles, templates, hostile sizes.

The long coverage-guided runs use the same targets (tests/fuzz/atheris_fuzz.py); every input they
found worth keeping is in tests/fuzz/corpus/ and is replayed here.
"""

from __future__ import annotations

import io
import json
import re
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from fuzz_targets import (
    CORPUS,
    ROOT,
    TARGETS,
    compile_everywhere,
    example_deployments,
    template_pipeline,
    yaml_pipeline,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema
from ruamel.yaml import YAML

from maas.compiler import MaasError, load_sources
from maas.compiler.template import _TOKEN

SETTINGS = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
SCHEMAS = ROOT / "schemas"
# Problems the published JSON Schema already rules out: a schema-valid document must not get them.
STRUCTURAL = {"document", "api-version", "kind", "unknown-field", "missing-field", "type", "enum"}
SEEDS = sorted((CORPUS / "yaml").glob("*")) + sorted((ROOT / "examples").rglob("*.yaml"))


def dump(value: Any) -> str:
    # Block style: ruamel's emitter writes the string '?0' in a flow sequence as `[?0]`, which
    # every YAML parser (ruamel's own too) reads back as a mapping.
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    stream = io.StringIO()
    yaml.dump(value, stream)
    return stream.getvalue()


def corpus_files() -> list[Path]:
    return sorted(p for p in CORPUS.glob("*/*") if p.is_file())


@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
@pytest.mark.timeout(60)  # a regression here has been exponential: fail, do not hang CI
def test_corpus_replays(path: Path) -> None:
    TARGETS[path.parent.name](path.read_bytes())


@pytest.mark.parametrize(
    "path",
    sorted((ROOT / "tests" / "golden" / "diagnostics" / "cases").glob("*.yaml")),
    ids=lambda p: p.name,
)
def test_golden_cases_keep_the_contract(path: Path) -> None:
    yaml_pipeline(path.read_text())


def _schema(name: str) -> dict[str, Any]:
    return dict(json.loads((SCHEMAS / f"{name}.schema.json").read_text()))


@SETTINGS
@given(from_schema(_schema("deployment")))
def test_schema_valid_deployments_load_and_compile(document: dict[str, Any]) -> None:
    text = dump(document)
    documents = load_sources({"fuzz.yaml": text})
    # The schema and the models must agree on structure; only cross-field rules may remain.
    assert not [d for d in documents.diagnostics if d.code in STRUCTURAL], documents.diagnostics
    yaml_pipeline(text)


@SETTINGS
@given(from_schema(_schema("node")))
def test_schema_valid_nodes_take_every_example(document: dict[str, Any]) -> None:
    documents = load_sources({"node.yaml": dump(document)}, kinds=("Node",))
    assert not [d for d in documents.diagnostics if d.code in STRUCTURAL], documents.diagnostics
    nodes = [loaded.model for loaded in documents.nodes]
    compile_everywhere(list(example_deployments()), nodes)


@st.composite
def mutated_seed(draw: st.DrawFn) -> str:
    """A seed document with a few characters inserted, deleted or replaced."""
    text: str = draw(st.sampled_from(SEEDS)).read_text()
    alphabet = st.sampled_from([*":-{}[]&*!|>'\"#\t\n ,?%@`", "{{", "}}", "  ", "\n  ", "- "])
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(text)))
        cut = draw(st.integers(0, 3))
        insert = draw(st.one_of(alphabet, st.text(max_size=3)))
        text = text[:at] + insert + text[at + cut :]
    return text


@SETTINGS
@given(mutated_seed())
def test_mutated_seeds(text: str) -> None:
    yaml_pipeline(text)


command_text = st.lists(
    st.sampled_from([*"{}port_ab '\"\\-=\t\n", "\u2003", "\u00a0", "{{", "}}"]),
    max_size=40,
).map("".join)


@SETTINGS
@given(st.one_of(command_text, st.lists(command_text, max_size=5)))
def test_templates(command: str | list[str]) -> None:
    template_pipeline(command)


_OLD_TOKEN = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")


@SETTINGS
@given(st.text(alphabet=st.sampled_from(list("{} \t\u2003\u00a0ab_")), max_size=30))
def test_placeholder_pattern_is_the_old_one_without_backtracking(arg: str) -> None:
    old = [(m.span(), m.group(1)) for m in _OLD_TOKEN.finditer(arg)]
    new = [(m.span(), m.group(1).strip()) for m in _TOKEN.finditer(arg)]
    assert new == old


def _spec(command: str) -> str:
    return (
        "apiVersion: maas/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n"
        "  source: huggingface\n  repo_id: a/b\n  backend: custom\n  image: i\n"
        f"  command: {command}\n"
    )


HOSTILE = {
    # The placeholder pattern used to backtrack cubically on this (found by fuzzing).
    "placeholder-spaces": _spec("['{{" + " " * 200_000 + "']"),
    "placeholder-braces": _spec("'" + "{{a" * 40_000 + "'"),
    # shlex.split is quadratic in a word's length: commands are bounded at the kernel's 128 KiB.
    "long-command": _spec("'" + "a" * 200_000 + "'"),
    "long-key": "apiVersion: maas/v1\nkind: Deployment\n" + "k" * 200_000 + ": 1\n",
    "alias-bomb": "a: &a [x, x, x, x, x, x, x, x, x]\n"
    + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    ),
    # 100 KB of nesting overflowed the C stack of ruamel's C composer: a segfault (fuzzing).
    "deep-flow": "[" * 50_000 + "]" * 50_000,
    "deep-flow-unclosed": "[" * 8_000_000,
    "deep-block": "".join("  " * i + "- \n" for i in range(2_000)),
    "deep-block-one-line": "- " * 50_000 + "x\n",
    "deep-complex-keys": "? " * 50_000 + "x\n",
    "deep-flow-between-apostrophes": "a: don't\nb: " + "[" * 60_000 + "\nc: it's\n",
    "many-documents": "---\n{}\n" * 50_000,
    "too-large": "# " + "x" * (9 << 20),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_sizes_fail_cleanly_in_bounded_memory(name: str) -> None:
    text = HOSTILE[name]
    tracemalloc.start()
    try:
        yaml_pipeline(text)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Bounded by the input, not by what it claims or expands to (the text alone is len(text)).
    assert peak < 64 * len(text) + (32 << 20), f"{name}: peak {peak >> 20} MiB"


def test_alias_bomb_is_refused() -> None:
    with pytest.raises(MaasError) as caught:
        load_sources_or_raise(HOSTILE["alias-bomb"])
    assert caught.value.diagnostics[0].code == "yaml-too-large"


def load_sources_or_raise(text: str) -> None:
    documents = load_sources({"fuzz.yaml": text})
    if documents.diagnostics:
        raise MaasError(documents.diagnostics)


reference_part = st.sampled_from(
    [
        "ghcr.io",
        "ghcr.io.evil.example",
        "org",
        "orgevil",
        "localhost:5000",
        "docker.io",
        "x",
        "..",
        "",
        "UPPER",
        "a-b",
        "a__b",
        ":1",
        "@sha256:" + "a" * 32,
        "/",
        "/models",
        "/c",
    ]
)


@SETTINGS
@given(st.lists(st.lists(reference_part, max_size=4).map("/".join), max_size=12))
def test_policy_parsing_and_narrowing(lines: list[str]) -> None:
    """Image references, registry entries and mount roots built from hostile parts: parsing never
    raises, and a narrowed policy allows nothing either of its two policies denies."""
    TARGETS["policy"]("\n".join(lines).encode())
