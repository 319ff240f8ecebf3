"""Semantic checks of Deployment specs that need no node: conflicts, templates, owned flags, names.

Run after schema validation; every problem is positioned and all are collected.
"""

from __future__ import annotations

from collections.abc import Sequence

from maas.compiler.backends import flag_name, resolve_backend
from maas.compiler.diagnostics import Diagnostic
from maas.compiler.documents import Loaded
from maas.compiler.models import Deployment
from maas.compiler.template import check_template, split_command


def check_deployments(deployments: Sequence[Loaded[Deployment]]) -> list[Diagnostic]:
    diagnostics: list[Diagnostic] = []
    first_seen: dict[str, Loaded[Deployment]] = {}
    for loaded in deployments:
        name = loaded.model.metadata.name
        if name in first_seen:
            earlier = first_seen[name].doc.at(("metadata", "name"))
            diagnostics.append(Diagnostic(
                "duplicate-name", f"deployment '{name}' is defined twice",
                loaded.doc.at(("metadata", "name")),
                hints=(f"first defined at {earlier}",),
            ))
        else:
            first_seen[name] = loaded
        diagnostics.extend(check_deployment(loaded))
    return diagnostics


def check_deployment(loaded: Loaded[Deployment]) -> list[Diagnostic]:
    spec, doc = loaded.model.spec, loaded.doc
    found: list[Diagnostic] = []

    def problem(code: str, message: str, path: tuple[str, ...], *hints: str) -> None:
        found.append(Diagnostic(code, message, doc.at(("spec", *path), key=True), hints=hints))

    if spec.source in ("huggingface", "modelscope"):
        if spec.repo_id is None:
            problem("missing-field", f"source '{spec.source}' needs 'repo_id'", ("source",))
        if spec.path is not None:
            problem("conflict", f"'path' cannot be used with source '{spec.source}'", ("path",),
                    "use 'source: local_path' for a model on this host, or drop 'path'")
    else:
        if spec.path is None:
            problem("missing-field", "source 'local_path' needs 'path'", ("source",))
        if spec.repo_id is not None:
            problem("conflict", "'repo_id' cannot be used with source 'local_path'", ("repo_id",))
        if spec.revision is not None:
            problem("conflict", "'revision' cannot be used with source 'local_path'", ("revision",))
    backend, _ = resolve_backend(spec)
    if backend.name == "custom":
        if spec.image is None:
            problem("missing-field", "backend 'custom' needs 'image'", ("backend",),
                    "name the container image that serves this model")
        if spec.backend_parameters:
            problem("conflict", "'backend_parameters' apply to built-in backends only; put the "
                    "arguments in 'command'", ("backend_parameters",))
    for index, argument in enumerate(spec.backend_parameters):
        if flag_name(argument) in backend.owned_flags:
            found.append(Diagnostic(
                "owned-flag",
                f"'{flag_name(argument)}' is set by the platform for backend '{backend.name}'",
                doc.at(("spec", "backend_parameters", index)),
                hints=("remove it; the plan sets it from the spec and the node",),
            ))
    if spec.command is not None:
        template, errors = split_command(spec.command, doc, ("spec", "command"))
        found.extend(errors)
        if template is not None:
            found.extend(check_template(template, doc))
    return found
