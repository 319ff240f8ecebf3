"""`maasctl plan PATH... [--node NODE.yaml] [-o text|json|markdown]`: compile and show the Plan."""

from __future__ import annotations

import argparse
import sys

from maas.cli import exitcodes


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "plan",
        help="compile specs into the plan for one node",
        description="Compile Deployment specs against a node profile (--node FILE, else the "
        "one Node document found under PATH, else this host's probe) and print the plan: "
        "backend, image, placement, port, estimate and the exact container command.",
    )
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="spec files or directories; a config repository (deployments/, nodes/, maas.yaml) "
        "is planned for its whole fleet",
    )
    parser.add_argument(
        "--node", metavar="NODE.yaml", help="node profile (default: probe this host)"
    )
    parser.add_argument(
        "-o",
        "--output",
        choices=("text", "wide", "json", "markdown"),
        default="text",
        help="text: a table that fits 100 columns; wide: also the image, GPU UUIDs, why and "
        "each container's command",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="also print each container's command"
    )
    parser.add_argument(
        "--offline",
        action="store_true",
        help="never touch the network for model metadata (cached or local headers only)",
    )
    repo = parser.add_argument_group("config repositories")
    repo.add_argument("--base", metavar="REV", help="git revision to compare against")
    repo.add_argument("--head", metavar="REV", help="git revision to plan (default: work tree)")
    parser.add_argument(
        "--detailed-exitcode",
        action="store_true",
        help="exit 0 when nothing changes, 2 when something does, 1 on error",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from maas.host.gitrepo import is_repository

    if len(args.paths) == 1 and not args.node and is_repository(Path(args.paths[0])):
        from maas.cli.repoplan import run_repo_plan

        return run_repo_plan(args, Path(args.paths[0]))
    if args.base or args.head:
        from maas.compiler import MaasError

        raise MaasError.single(
            "usage",
            "--base/--head need one config repository as PATH",
            hints=("a repository has deployments/, nodes/ or maas.yaml",),
        )
    from maas.cli.inputs import read_sources
    from maas.cli.nodes import load_node, probe_node, single_node
    from maas.cli.output import print_diagnostics
    from maas.cli.render_plan import plan_markdown, plan_text
    from maas.compiler import (
        CompileOptions,
        Policy,
        check_deployments,
        compile_plan,
        load_sources,
        plan_to_json,
        raise_if_errors,
    )

    documents = load_sources(read_sources(args.paths))
    # Every file's problems at once: the specs that parsed are checked even when others did not.
    checked = documents.diagnostics + check_deployments(documents.deployments)
    raise_if_errors(checked)
    if args.node:
        node = load_node(args.node)
    elif documents.nodes:
        node = single_node(documents.nodes)
    else:
        node = probe_node()
    from maas.host.models.metadata import fetch_models

    fetched = fetch_models(documents.deployments, offline=args.offline)
    plan = compile_plan(
        documents.deployments,
        node,
        options=CompileOptions(policy=Policy()),
        models=fetched.models,
    )
    warnings = (
        [d for d in checked if d.severity == "warning"]
        + fetched.warnings
        + [w.diagnostic() for d in plan.deployments for w in d.diagnostics]
    )
    print_diagnostics(warnings)
    if args.output == "json":
        sys.stdout.write(plan_to_json(plan))
    elif args.output == "markdown":
        sys.stdout.write(plan_markdown(plan))
    else:
        print(plan_text(plan, wide=args.output == "wide", commands=args.verbose))
    return exitcodes.OK
