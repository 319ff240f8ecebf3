"""`maasctl validate PATH... [--node NODE.yaml]`: schema and semantic checks, optionally fit."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from maas.cli import exitcodes

if TYPE_CHECKING:
    from maas.compiler import Diagnostic


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "validate",
        help="check deployment specs and node profiles",
        description="Check Deployment and Node documents: YAML syntax, schema, semantics "
        "(placeholders, owned flags, conflicting fields, duplicate names). With --node, also "
        "check that each deployment can be placed on that node. Exit 0 when valid, 1 when not.",
    )
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="files, or directories searched recursively for *.yaml/*.yml",
    )
    parser.add_argument(
        "--node", metavar="NODE.yaml", help="also check fit against this node profile"
    )
    parser.add_argument(
        "--offline",
        action="store_true",
        help="with --node: never touch the network for model metadata",
    )
    parser.add_argument(
        "--format",
        choices=("text", "github"),
        default="text",
        help="diagnostic format: gcc-style text (default) or GitHub annotations",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from maas.cli.inputs import read_sources
    from maas.cli.output import print_diagnostics, summary_line
    from maas.compiler import (
        CompileOptions,
        MaasError,
        Policy,
        check_deployments,
        compile_plan,
        errors_only,
        load_sources,
    )
    from maas.host.gitrepo import is_repository

    try:
        if len(args.paths) == 1 and is_repository(Path(args.paths[0])) and not args.node:
            diagnostics = validate_repo(Path(args.paths[0]), args)
        else:
            documents = load_sources(read_sources(args.paths))
            diagnostics = documents.diagnostics + check_deployments(documents.deployments)
        if args.node and not errors_only(diagnostics):
            from maas.cli.nodes import load_node
            from maas.host.models.metadata import fetch_models

            node = load_node(args.node)
            fetched = fetch_models(documents.deployments, offline=args.offline)
            diagnostics += fetched.warnings
            try:
                compile_plan(
                    documents.deployments,
                    node,
                    options=CompileOptions(policy=Policy()),
                    models=fetched.models,
                )
            except MaasError as exc:
                diagnostics = [d for d in diagnostics if d.severity == "warning"]
                diagnostics += list(exc.diagnostics)
    except MaasError as exc:
        diagnostics = list(exc.diagnostics)
    print_diagnostics(diagnostics, args.format)
    line = summary_line(diagnostics)
    if line and args.format == "text":
        print(line, file=sys.stderr)
    if errors_only(diagnostics):
        return exitcodes.FAILED
    return exitcodes.OK


def validate_repo(root: Path, args: argparse.Namespace) -> list[Diagnostic]:
    """Every file's problems, warnings included; the fleet is compiled only when no file has an
    error (compile_repo raises the first kind of problem it meets)."""
    from maas.compiler import (
        CONFIG_FILE,
        MaasError,
        check_deployments,
        compile_repo,
        errors_only,
        load_sources,
    )
    from maas.host.gitrepo import read_worktree
    from maas.host.models.metadata import fetch_repo_metadata

    prefix = repo_prefix(str(args.paths[0]))
    sources = read_worktree(root)
    documents = load_sources({prefix + k: v for k, v in sources.items() if k != CONFIG_FILE})
    found = documents.diagnostics + check_deployments(documents.deployments)
    if errors_only(found):
        return found
    fetched = fetch_repo_metadata(sources, offline=args.offline)
    found += fetched.warnings
    try:
        compile_repo(sources, root=prefix, models=fetched.models)
    except MaasError as exc:
        found += [d for d in exc.diagnostics if d not in found]
    return found


def repo_prefix(path: str) -> str:
    """How files of a repository given as `path` are named in diagnostics."""
    return "" if path in (".", "./") else path.rstrip("/") + "/"
