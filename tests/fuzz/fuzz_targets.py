"""Fuzz targets shared by the hypothesis properties (CI) and the atheris harness (long runs).

Each target takes untrusted input, drives one part of the compiler as far as it goes, and checks
the contract: nothing but `MaasError` escapes, every error carries at least one well-formed
Diagnostic whose position lies inside the input, and a Plan that compiles serialises. Anything
else propagates, so that the fuzzer reports it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import cache
from pathlib import Path

from maas.compiler import (
    CompileOptions,
    Deployment,
    Loaded,
    MaasError,
    Node,
    compile_plan,
    load_sources,
    plan_to_json,
)
from maas.compiler.diagnostics import Diagnostic
from maas.compiler.loader import SourceDoc
from maas.compiler.metadata import ModelMetadata
from maas.compiler.policy import (
    Policy,
    mount_denial,
    narrow,
    parse_image,
    parse_registry_entry,
)
from maas.compiler.template import check_template, render, split_command

ROOT = Path(__file__).resolve().parents[2]
FILE = "fuzz.yaml"
CORPUS = Path(__file__).resolve().parent / "corpus"


def check_error(exc: MaasError, text: str) -> None:
    """An error is useful: it says what, and where, inside the input."""
    assert exc.diagnostics, "MaasError without diagnostics"
    line_count = lines_of(text)
    for diagnostic in exc.diagnostics:
        check_diagnostic(diagnostic, line_count)


def lines_of(text: str) -> int:
    # YAML breaks lines at \r too; splitlines() breaks at all of YAML's breaks (and a few more).
    return len(text.splitlines()) + 1


def check_diagnostic(diagnostic: Diagnostic, line_count: int) -> None:
    assert diagnostic.code and diagnostic.message, diagnostic
    diagnostic.render()
    diagnostic.render_github()
    position = diagnostic.position
    if position is not None and position.file == FILE:
        assert 0 <= position.line <= line_count, (diagnostic, line_count)
        assert position.col >= 0, diagnostic


@cache
def example_nodes() -> tuple[Node, ...]:
    texts = {p.name: p.read_text() for p in sorted((ROOT / "examples" / "nodes").glob("*.yaml"))}
    return tuple(loaded.model for loaded in load_sources(texts, kinds=("Node",)).nodes)


@cache
def example_deployments() -> tuple[Loaded[Deployment], ...]:
    texts = {p.name: p.read_text() for p in sorted((ROOT / "examples").glob("*.yaml"))}
    return tuple(load_sources(texts, kinds=("Deployment",)).deployments)


# A policy that exercises every rule: registries matched on parsed references, environment
# names, mount roots that include the cache's parent (another deployment's folder stays denied).
STRICT = Policy(
    allowed_registries=["ghcr.io/org", "docker.io/library", "registry.local:5000"],
    allowed_mount_roots=["/models", "/var/lib"],
    allowed_env=["LD_PRELOAD"],
)


def compile_everywhere(deployments: Sequence[Loaded[Deployment]], nodes: Sequence[Node]) -> None:
    """Compile against each node, without a policy, with the default one and a strict one."""
    for node in nodes:
        policies = (
            CompileOptions(),
            CompileOptions(policy=Policy()),
            CompileOptions(policy=STRICT),
        )
        for options in policies:
            try:
                plan = compile_plan(deployments, node, options=options)
            except MaasError as exc:
                assert exc.diagnostics
                continue
            plan_to_json(plan)


def yaml_pipeline(text: str) -> None:
    """Text of one file -> documents -> checks -> a Plan on every node we know."""
    try:
        documents = load_sources({FILE: text})
    except MaasError as exc:  # load_sources collects; raising is allowed too
        check_error(exc, text)
        return
    line_count = lines_of(text)
    for diagnostic in documents.diagnostics:
        check_diagnostic(diagnostic, line_count)
    if documents.diagnostics:
        return
    nodes = [loaded.model for loaded in documents.nodes] or list(example_nodes())
    deployments = documents.deployments or list(example_deployments())
    try:
        compile_everywhere(deployments, nodes)
    except MaasError as exc:
        check_error(exc, text)


def template_pipeline(command: str | list[str]) -> None:
    """A command (string or argv list) -> split, checked, rendered without injection."""
    lines = command.splitlines() if isinstance(command, str) else [str(a) for a in command]
    doc = SourceDoc(file=FILE, index=0, data={"spec": {"command": command}}, lines=lines)
    template, problems = split_command(command, doc, ("spec", "command"))
    for diagnostic in problems:
        check_diagnostic(diagnostic, len(lines) + 1)
    if template is None:
        return
    for diagnostic in check_template(template, doc):
        check_diagnostic(diagnostic, len(lines) + 1)
    # A value with spaces, quotes or braces stays inside its own argument.
    hostile = "a b' \"c {{port}} --x"
    values = {"port": hostile, "model_path": hostile, "model_name": "", "hf_cache": "}} {{"}
    rendered = render(template.args, values)
    assert len(rendered) == len(template.args), (template.args, rendered)


def gguf_pipeline(data: bytes) -> None:
    """File bytes -> GGUF header (whole file, or a prefix of a larger one) -> model metadata."""
    from maas.compiler.metadata.gguf import GgufHeader, parse_gguf
    from maas.compiler.metadata.model import from_gguf

    for complete, file_size in ((True, None), (False, None), (False, len(data) + (1 << 30))):
        try:
            header = parse_gguf(data, name=FILE, complete=complete, file_size=file_size)
            if isinstance(header, GgufHeader):
                from_gguf([header], names=[FILE]).model_dump_json()
                from_gguf([header, header], names=[FILE, FILE])
            else:
                assert len(data) < header.size, (len(data), header)
        except MaasError as exc:
            check_error(exc, "")


def safetensors_pipeline(data: bytes) -> None:
    """Bytes as a safetensors file, an index and a config.json -> weight bytes, metadata."""
    from maas.compiler.metadata.safetensors import (
        from_config,
        header_length,
        index_total_size,
        safetensors_weight_bytes,
    )

    calls: list[Callable[[], object]] = [
        lambda: header_length(data[:8], name=FILE),
        lambda: safetensors_weight_bytes(data, name=FILE),
        lambda: index_total_size(data, name=FILE),
        lambda: from_config(data, weight_bytes=1 << 30, name=FILE).model_dump_json(),
    ]
    for call in calls:
        try:
            call()
        except MaasError as exc:
            check_error(exc, "")


def policy_pipeline(data: bytes) -> None:
    """Lines as image references, registry entries and host paths: parsing never raises, and a
    policy narrowed by another allows nothing that either of them denies."""
    lines = data.decode("utf-8", "replace").splitlines()[:64]
    images = [parse_image(line) for line in lines]
    entries = [line for line in lines if parse_registry_entry(line) is not None]
    paths = [line for line in lines if line.startswith("/")]
    half = len(lines) // 2
    a = Policy(
        allowed_registries=entries[: len(entries) // 2] or None,
        allowed_mount_roots=paths[: len(paths) // 2],
        allowed_env=lines[:half],
    )
    b = Policy(
        allowed_registries=entries[len(entries) // 2 :],
        allowed_mount_roots=paths[len(paths) // 2 :],
        allowed_env=lines[half:],
    )
    met = narrow(a, b)
    for policy in (a, b):
        for path in paths:
            for read_only in (True, False):
                allowed = [
                    mount_denial(
                        path, read_only=read_only, deployment="d", policy=p, cache_dir="/c"
                    )
                    is None
                    for p in (met, policy)
                ]
                assert allowed[1] or not allowed[0], (path, met, policy)
        for image in images:
            if image is None:
                continue
            allowed = [
                p.allowed_registries is None
                or any(
                    (entry := parse_registry_entry(e)) is not None and image.within(entry)
                    for e in p.allowed_registries
                )
                for p in (met, policy)
            ]
            assert allowed[1] or not allowed[0], (image, met, policy)
        assert set(met.allowed_env) <= set(policy.allowed_env)


def apply_pipeline(text: str) -> None:
    """Text as an apply reaches the agent: merged into stored sources, its models' metadata
    read (offline: local files only), compiled. Only MaasError may escape."""
    from maas.agent.desired.sources import merge, remove_deployment
    from maas.host.models.metadata import fetch_models

    stored = {"stored.yaml": (ROOT / "examples" / "tei-embeddings-cpu.yaml").read_text()}
    try:
        merged = merge(stored, {FILE: text})
        remove_deployment(merged, "bge-large")
        documents = load_sources(merged, kinds=("Deployment",))
        if documents.diagnostics:
            return
        fetched = fetch_models(documents.deployments, offline=True)
        compile_everywhere_with(documents.deployments, fetched.models)
    except MaasError as exc:
        check_error(exc, text)


def compile_everywhere_with(
    deployments: Sequence[Loaded[Deployment]], models: Mapping[str, ModelMetadata]
) -> None:
    for node in example_nodes():
        try:
            plan_to_json(compile_plan(deployments, node, models=models))
        except MaasError as exc:
            assert exc.diagnostics


def json_pipeline(data: bytes) -> None:
    """A request body as the gateway's front reads it: a model name, or a 400 (never a crash
    such as RecursionError on deep nesting)."""
    from maas.gateway.requests import BadRequest, model_of_json

    try:
        assert isinstance(model_of_json(data), str)
    except BadRequest as exc:
        assert exc.message


TARGETS: dict[str, Callable[[bytes], None]] = {
    "yaml": lambda data: yaml_pipeline(data.decode("utf-8", "replace")),
    "template": lambda data: template_pipeline(data.decode("utf-8", "replace")),
    "gguf": gguf_pipeline,
    "safetensors": safetensors_pipeline,
    "policy": policy_pipeline,
    "apply": lambda data: apply_pipeline(data.decode("utf-8", "replace")),
    "json": json_pipeline,
}
