"""`maasctl delete NAME [--wait]`: remove a deployment and its containers."""

from __future__ import annotations

import argparse
import sys
import time

from maas.cli import exitcodes
from maas.cli.commands.apply import add_socket


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "delete",
        help="remove a deployment and its containers",
        description="Remove a deployment from this node's desired state; "
        "the agent stops and removes its containers.",
    )
    parser.add_argument("name")
    parser.add_argument("--wait", action="store_true", help="wait until its containers are gone")
    parser.add_argument("--timeout", type=float, default=300, metavar="SECONDS")
    parser.add_argument(
        "--force", action="store_true", help="also when the agent follows a git repository"
    )
    add_socket(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from maas.cli.client import AgentClient, socket_path

    client = AgentClient(socket_path(args.socket))
    query = "?force=1" if args.force else ""
    client.call("DELETE", f"/v1/deployments/{args.name}{query}")
    print(f"deleted {args.name}")
    if not args.wait:
        return exitcodes.OK
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        status = client.status()
        if status.deployment(args.name) is None and args.name not in status.removing:
            return exitcodes.OK
        problem = status.removal_errors.get(args.name)
        if problem and problem.permanent:
            print(f"error: cannot remove {args.name}: {problem.error}", file=sys.stderr)
            print("error: stopped waiting: this will not resolve by waiting", file=sys.stderr)
            return exitcodes.FAILED
        time.sleep(0.5)
    print(
        f"error: containers of {args.name} still present after {args.timeout:.0f} s",
        file=sys.stderr,
    )
    return exitcodes.FAILED
