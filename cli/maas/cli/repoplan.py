"""`maasctl plan REPO [--base REV] [--head REV]`: compile two revisions of a repo and diff."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from maas.cli import exitcodes
from maas.cli.commands.validate import repo_prefix
from maas.cli.output import print_diagnostics, use_color
from maas.cli.render_diff import diff_json, diff_markdown, diff_text
from maas.compiler import FleetPlan, compile_repo, diff_fleets


def run_repo_plan(args: argparse.Namespace, root: Path) -> int:
    from maas.host import gitrepo
    from maas.host.models.metadata import fetch_repo_metadata, fetch_repo_models

    if args.base:
        base_id = gitrepo.resolve(root, args.base)
        base_sources = gitrepo.read_revision(root, base_id)
        base = compile_repo(
            base_sources,
            root=f"{args.base}:",
            models=fetch_repo_models(base_sources, offline=args.offline),
        )
    else:
        base_id, base = "empty", FleetPlan()
    if args.head:
        head_id = gitrepo.resolve(root, args.head)
        head_sources = gitrepo.read_revision(root, head_id)
    else:
        head_id, head_sources = "worktree", gitrepo.read_worktree(root)
    fetched = fetch_repo_metadata(head_sources, offline=args.offline)
    head = compile_repo(
        head_sources,
        previous=base if args.base else None,
        root=f"{args.head}:" if args.head else repo_prefix(str(root)),
        models=dict(fetched.models),
    )
    # The head's warnings, as `maasctl plan` of one node prints them: metadata that could not be
    # read, and each planned deployment's (on the first node that runs it).
    located = head.located()
    planned = [w.diagnostic() for name in sorted(located) for w in located[name][1].diagnostics]
    print_diagnostics([*fetched.warnings, *planned])
    diff = diff_fleets(base, head)
    if args.output == "json":
        sys.stdout.write(diff_json(diff, base=base_id, head=head_id, assignment=head.assignment))
    elif args.output == "markdown":
        sys.stdout.write(diff_markdown(diff, base=base_id, head=head_id))
    else:
        print(diff_text(diff, color=use_color(sys.stdout)))
    if args.detailed_exitcode and not diff.empty:
        return exitcodes.CHANGES
    return exitcodes.OK
