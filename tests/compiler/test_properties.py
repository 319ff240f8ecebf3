"""Property tests: arbitrary YAML or spec-shaped data never raises anything but MaasError."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from maas.compiler import MaasError, check_deployments, load_sources
from maas.compiler.ports import allocate_ports

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)
)
keys = st.sampled_from(
    [
        "apiVersion",
        "kind",
        "metadata",
        "spec",
        "name",
        "source",
        "repo_id",
        "command",
        "backend",
        "replicas",
        "env",
        "labels",
        "file",
        "path",
        "image",
        "health",
        "cpu",
        "memory",
        "gpus",
        "x",
    ]
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=5)),
    max_leaves=20,
)


def _exercise(text: str) -> None:
    try:
        documents = load_sources({"fuzz.yaml": text})
        check_deployments(documents.deployments)
    except MaasError as exc:
        assert exc.diagnostics


@SETTINGS
@given(st.text(max_size=300))
def test_arbitrary_text(text: str) -> None:
    _exercise(text)


@SETTINGS
@given(values)
def test_arbitrary_yaml_structures(value: Any) -> None:
    import io

    stream = io.StringIO()
    YAML(typ="safe", pure=True).dump(
        {"apiVersion": "maas/v1", "kind": "Deployment", "x": value}, stream
    )
    _exercise(stream.getvalue())


@SETTINGS
@given(st.text(alphabet=st.sampled_from(list("{}port_ab '\"-=")), max_size=40))
def test_arbitrary_commands(command: str) -> None:
    text = (
        "apiVersion: maas/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n"
        "  source: huggingface\n  repo_id: a/b\n  backend: custom\n  image: i\n"
        f"  command: {command!r}\n".replace("\\'", "''")
    )
    _exercise(text)


@SETTINGS
@given(
    st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True), st.integers(0, 4), max_size=30
    )
)
def test_ports_are_unique_and_in_range(wanted: dict[str, int]) -> None:
    ports = allocate_ports(wanted, (40000, 40127))
    flat = [p for name in ports for p in ports[name]]
    assert len(flat) == len(set(flat))
    assert all(40000 <= p <= 40127 for p in flat)
    assert all(len(ports[n]) == max(1, wanted[n]) for n in wanted)
