"""`maasctl apply PATH... [--wait] [--timeout S] [-y]`: compile, show the plan, submit."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from maas.cli import exitcodes
from maas.cli.client import AgentClient
from maas.cli.waiting import attempt_line, hopeless


def add_socket(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--socket",
        metavar="PATH",
        help="the agent's socket (default: $MAAS_AGENT_SOCKET, then .run/agent.sock of the "
        "run directory, then /run/maas/agent.sock; see maasctl --help)",
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "apply",
        help="submit deployment specs to this node's agent",
        description="Send Deployment specs to the node agent. The agent compiles them against "
        "its live hardware probe and its policy, shows what will change, and reconciles. Files "
        "replace earlier files of the same name applied by the same user (each text on standard "
        "input is its own); other deployments stay. Exit 0 when applied "
        "(with --wait: every replica ready), 1 on error or timeout.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH")
    parser.add_argument("--wait", action="store_true", help="wait until every replica is ready")
    parser.add_argument(
        "--timeout",
        type=float,
        default=1800,
        metavar="SECONDS",
        help="how long --wait waits (default 1800)",
    )
    parser.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    parser.add_argument(
        "--force",
        action="store_true",
        help="apply to an agent that follows a git repository (until its next commit)",
    )
    add_socket(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from maas.cli.client import socket_path
    from maas.cli.inputs import read_sources

    sources = {
        str(Path(k).resolve()) if k != "<stdin>" else k: v
        for k, v in read_sources(args.paths).items()
    }
    client = AgentClient(socket_path(args.socket))
    confirm = not args.yes and sys.stdin.isatty()
    if confirm:
        preview = client.call(
            "POST", "/v1/apply", {"sources": sources, "dry_run": True, "force": args.force}
        )
        if print_actions(preview["actions"]) and not _confirmed():
            print("Cancelled.")
            return exitcodes.FAILED
    result = client.call("POST", "/v1/apply", {"sources": sources, "force": args.force})
    if not confirm:
        print_actions(result["actions"])
    print(f"applied to node {result['plan']['node']}")
    if args.wait:
        from maas.compiler import load_sources

        names = {d.model.metadata.name for d in load_sources(sources).deployments}
        hashes = {
            d["name"]: d["spec_hash"] for d in result["plan"]["deployments"] if d["name"] in names
        }
        return wait_ready(client, hashes, args.timeout)
    return exitcodes.OK


def print_actions(actions: list[dict[str, object]]) -> bool:
    from maas.cli.output import table

    rows = [
        [str(a["kind"]), str(a["deployment"]), str(a["replica"]), str(a["reason"])]
        for a in actions
        if a["kind"] != "noop"
    ]
    print(table(["action", "deployment", "replica", "reason"], rows) if rows else "No changes.")
    return bool(rows)


def _confirmed() -> bool:
    return input("Apply these changes? [y/N] ").strip().lower() in ("y", "yes")


def wait_ready(client: AgentClient, hashes: dict[str, str], timeout: float) -> int:
    """Wait until every named deployment runs the applied spec hash on all its replicas."""
    from maas.cli.progressview import WaitView

    view = WaitView()
    try:
        return _wait(client, hashes, timeout, view)
    finally:
        view.close()


def _wait(client: AgentClient, hashes: dict[str, str], timeout: float, view: Any) -> int:
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        status = client.status()
        mine = [d for d in status.deployments if d.name in hashes]
        pending = [
            d for d in mine if d.ready_replicas < d.replicas or d.spec_hash != hashes[d.name]
        ]
        line = ", ".join(
            f"{d.name} {d.state} {d.ready_replicas}/{d.replicas}"
            + (f" ({attempt_line(d)})" if d.state == "failed" else "")
            for d in pending
        )
        if line != last and line:
            print(f"waiting: {line}", file=sys.stderr)
            last = line
        view.update(pending)
        if not pending and len(mine) == len(hashes):
            print("all replicas ready")
            return exitcodes.OK
        reasons = [r for d in pending if (r := hopeless(d, hashes[d.name]))]
        if reasons:
            for reason in reasons:
                print(f"error: {reason}", file=sys.stderr)
            print("error: stopped waiting: this will not resolve by waiting", file=sys.stderr)
            return exitcodes.FAILED
        failed = [d for d in pending if d.state == "failed" and d.last_error]
        if time.monotonic() > deadline:
            for d in failed or pending:
                print(
                    f"error: {d.name}: {d.state}: {d.last_error or 'not ready'}",
                    file=sys.stderr,
                )
            print(f"error: timed out after {timeout:.0f} s", file=sys.stderr)
            return exitcodes.FAILED
        time.sleep(1)
