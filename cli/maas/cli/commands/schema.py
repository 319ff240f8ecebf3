"""`maasctl schema [deployment|node|plan]`: print a JSON Schema."""

from __future__ import annotations

import argparse
import sys

from maas.cli import exitcodes


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "schema",
        help="print the JSON Schema of a document kind",
        description="Print the JSON Schema of Deployment, Node or Plan "
        "documents (the same files as schemas/*.schema.json).",
    )
    parser.add_argument(
        "kind", choices=("deployment", "node", "plan"), nargs="?", default="deployment"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from maas.compiler import schema_text

    sys.stdout.write(schema_text(args.kind))
    return exitcodes.OK
