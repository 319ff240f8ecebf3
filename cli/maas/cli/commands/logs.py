"""`maasctl logs NAME [-f] [--tail N] [--replica R]`: the backend's output."""

from __future__ import annotations

import argparse
import sys

from maas.cli import exitcodes
from maas.cli.commands.apply import add_socket


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "logs",
        help="print a deployment's backend output",
        description="Print (or follow) the output of a deployment's container.",
    )
    parser.add_argument("name")
    parser.add_argument("-f", "--follow", action="store_true")
    parser.add_argument("--tail", type=int, metavar="N", help="only the last N lines")
    parser.add_argument("--replica", type=int, default=0)
    add_socket(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from urllib.parse import urlencode

    from maas.cli.client import AgentClient, socket_path

    query = {"replica": args.replica, "follow": int(args.follow)}
    if args.tail is not None:
        query["tail"] = args.tail
    client = AgentClient(socket_path(args.socket), timeout=3600 if args.follow else 60)
    for chunk in client.stream(f"/v1/logs/{args.name}?{urlencode(query)}"):
        sys.stdout.buffer.write(chunk)
        sys.stdout.flush()
    return exitcodes.OK
