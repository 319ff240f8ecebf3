"""Semantic checks of Deployment specs that need no node: conflicts, templates, owned flags, names.

Run after schema validation; every problem is positioned and all are collected.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from maas.compiler.backends import flag_name, resolve_backend
from maas.compiler.diagnostics import Diagnostic
from maas.compiler.documents import Loaded
from maas.compiler.imageref import reference_problem
from maas.compiler.loader import SourceDoc
from maas.compiler.metadata import ModelMetadata
from maas.compiler.models import Deployment, DeploymentBody, Node
from maas.compiler.template import check_template, split_command


def check_deployments(deployments: Sequence[Loaded[Deployment]]) -> list[Diagnostic]:
    diagnostics: list[Diagnostic] = []
    first_seen: dict[str, Loaded[Deployment]] = {}
    for loaded in deployments:
        name = loaded.model.metadata.name
        if name in first_seen:
            earlier = first_seen[name].doc.at(("metadata", "name"))
            diagnostics.append(
                Diagnostic(
                    "duplicate-name",
                    f"deployment '{name}' is defined twice",
                    loaded.doc.at(("metadata", "name")),
                    hints=(f"first defined at {earlier}",),
                )
            )
        else:
            first_seen[name] = loaded
        diagnostics.extend(check_deployment(loaded))
    return diagnostics


def check_deployment(loaded: Loaded[Deployment]) -> list[Diagnostic]:
    spec, doc = loaded.model.spec, loaded.doc
    found = _check_source(spec, doc) + _check_backend(spec, doc) + _check_image(spec, doc)
    found += _check_parallel(spec, doc)
    if spec.command is not None:
        template, errors = split_command(spec.command, doc, ("spec", "command"))
        found.extend(errors)
        if template is not None:
            found.extend(check_template(template, doc))
            found.extend(_check_port(spec, doc, template.has("port")))
    return found


def _check_parallel(spec: DeploymentBody, doc: SourceDoc) -> list[Diagnostic]:
    """`parallel` is rendered as llama-server's --parallel; another backend would ignore it."""
    backend, _ = resolve_backend(spec)
    if spec.parallel == 1 or backend.parallel_flag:
        return []
    return [
        Diagnostic(
            "parallel-unsupported",
            f"'parallel: {spec.parallel}' applies to llama-box only; backend '{backend.name}' "
            "would not receive it",
            doc.at(("spec", "parallel")),
            hints=("remove it; a backend's own batching flag goes in backend_parameters",),
        )
    ]


def _check_image(spec: DeploymentBody, doc: SourceDoc) -> list[Diagnostic]:
    if spec.image is None:
        return []
    problem = reference_problem(spec.image)
    if problem is None:
        return []
    return [
        Diagnostic(
            "image-reference",
            f"'{spec.image}' is not a valid image reference: {problem}",
            doc.at(("spec", "image")),
            hints=("e.g. ghcr.io/org/name:tag or name:tag (Docker's reference grammar)",),
        )
    ]


def _check_port(spec: DeploymentBody, doc: SourceDoc, has_port: bool) -> list[Diagnostic]:
    """A custom command must tell the server the port the agent probes and the gateway uses."""
    backend, _ = resolve_backend(spec)
    if backend.name != "custom" or has_port or spec.host_network:
        return []
    return [
        Diagnostic(
            "no-port",
            "the command has no '{{port}}': the server will not listen on the port the agent "
            "probes and the gateway routes to",
            doc.at(("spec", "command")),
            "warning",
            hints=("pass it with the server's own flag, e.g. '--port {{port}}'",),
        )
    ]


def check_models(
    deployments: Sequence[Loaded[Deployment]], models: Mapping[str, ModelMetadata]
) -> list[Diagnostic]:
    """What the model metadata (when known) says about the specs: a context longer than the
    model was trained for."""
    found: list[Diagnostic] = []
    for loaded in deployments:
        spec = loaded.model.spec
        meta = models.get(loaded.model.metadata.name)
        if meta is None or meta.context_length is None or spec.context_length is None:
            continue
        if spec.context_length > meta.context_length:
            found.append(
                Diagnostic(
                    "context-length",
                    f"context_length {spec.context_length} is longer than the "
                    f"{meta.context_length} tokens the model was trained for",
                    loaded.doc.at(("spec", "context_length")),
                    "warning",
                    hints=(
                        "answers past the trained length degrade unless the backend scales "
                        "RoPE; set context_length to at most the trained length",
                    ),
                )
            )
    return found


def check_disk(
    deployments: Sequence[Loaded[Deployment]], node: Node, models: Mapping[str, ModelMetadata]
) -> list[Diagnostic]:
    """A hub model the agent downloads that is larger than the node's whole model cache file
    system: it can never fit. Free space changes by the minute (downloads, the collector), so
    the agent checks it against the bytes still missing right before it downloads."""
    disk = node.spec.disk
    if disk is None:
        return []
    found: list[Diagnostic] = []
    for loaded in deployments:
        meta = models.get(loaded.model.metadata.name)
        if meta is None or not meta.download_bytes:
            continue
        need, at = meta.download_bytes, loaded.doc.at(("spec", "repo_id"))
        gib = f"{need / 2**30:.1f} GiB" if need >= 2**30 else f"{need / 2**20:.1f} MiB"
        if need > disk.total_bytes:
            found.append(
                Diagnostic(
                    "disk",
                    f"the model is {gib}; the model cache file system of node "
                    f"'{node.metadata.name}' holds {disk.total_bytes} bytes in all",
                    at,
                    hints=(
                        "give the agent's cache_dir a larger file system, or pick a smaller file",
                    ),
                )
            )
    return found


def _problem(doc: SourceDoc, code: str, message: str, field: str, *hints: str) -> Diagnostic:
    return Diagnostic(code, message, doc.at(("spec", field), key=True), hints=hints)


def _check_source(spec: DeploymentBody, doc: SourceDoc) -> list[Diagnostic]:
    found: list[Diagnostic] = []
    if spec.source in ("huggingface", "modelscope"):
        if spec.repo_id is None:
            found.append(
                _problem(doc, "missing-field", f"source '{spec.source}' needs 'repo_id'", "source")
            )
        if spec.path is not None:
            found.append(
                _problem(
                    doc,
                    "conflict",
                    f"'path' cannot be used with source '{spec.source}'",
                    "path",
                    "use 'source: local_path' for a model on this host, or drop 'path'",
                )
            )
        return found
    if spec.path is None:
        found.append(_problem(doc, "missing-field", "source 'local_path' needs 'path'", "source"))
    for field in ("repo_id", "revision"):
        if getattr(spec, field) is not None:
            found.append(
                _problem(
                    doc, "conflict", f"'{field}' cannot be used with source 'local_path'", field
                )
            )
    return found


def _check_backend(spec: DeploymentBody, doc: SourceDoc) -> list[Diagnostic]:
    found: list[Diagnostic] = []
    backend, _ = resolve_backend(spec)
    if backend.name == "custom":
        if spec.image is None:
            found.append(
                _problem(
                    doc,
                    "missing-field",
                    "backend 'custom' needs 'image'",
                    "backend",
                    "name the container image that serves this model",
                )
            )
        if spec.backend_parameters:
            found.append(
                _problem(
                    doc,
                    "conflict",
                    "'backend_parameters' apply to built-in backends only; put the "
                    "arguments in 'command'",
                    "backend_parameters",
                )
            )
    if spec.distributed and backend.name not in {"llama-box", "vllm"}:
        found.append(
            _problem(
                doc,
                "conflict",
                f"backend '{backend.name}' cannot be split across nodes; only llama-box "
                "(llama.cpp RPC) and vllm (multi-node) can",
                "distributed",
            )
        )
    for index, argument in enumerate(spec.backend_parameters):
        if flag_name(argument) in backend.owned_flags:
            found.append(
                Diagnostic(
                    "owned-flag",
                    f"'{flag_name(argument)}' is set by the platform for backend '{backend.name}'",
                    doc.at(("spec", "backend_parameters", index)),
                    hints=("remove it; the plan sets it from the spec and the node",),
                )
            )
    return found
