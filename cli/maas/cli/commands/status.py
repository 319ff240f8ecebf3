"""`maasctl status [NAME] [-o text|json]`: deployments, replicas, readiness, restarts, and the
model cache per model."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from maas.cli import exitcodes
from maas.cli.commands.apply import add_socket

if TYPE_CHECKING:
    from maas.compiler import CachedModel, DeploymentStatus, NodeStatus


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "status",
        help="show what runs on this node",
        description="Show deployments on this node: state (pending, pulling, "
        "downloading, starting, running, failed), ready replicas, ports, restarts (crashes and "
        "failed probes), roll-outs (recreations for a new spec) and the last error with its "
        "attempt count and the next retry.",
    )
    parser.add_argument("name", nargs="?", help="one deployment")
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text")
    add_socket(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from maas.cli.client import AgentClient, socket_path
    from maas.cli.output import table
    from maas.cli.waiting import failure_line
    from maas.compiler import MaasError

    status = AgentClient(socket_path(args.socket), timeout=30).status()
    if args.name:
        status = status.model_copy(
            update={"deployments": [d for d in status.deployments if d.name == args.name]}
        )
        if not status.deployments:
            raise MaasError.single("not-found", f"no deployment named '{args.name}'")
    if args.output == "json":
        print(json.dumps(status.document(), indent=2))
        return exitcodes.OK
    rows = [
        [
            d.name,
            state_text(d),
            f"{d.ready_replicas}/{d.replicas}",
            ",".join(str(c.port) for c in d.containers),
            str(sum(r.restarts for r in d.replica_states)),
            str(sum(r.rollouts for r in d.replica_states)),
            failure_line(d) or d.progress or "",
        ]
        for d in status.deployments
    ]
    print(f"node {status.node}")
    print_agent_state(status)
    for error in status.errors:
        print(f"error: {error.message} [{error.code}]")
    for warning in status.warnings:
        print(f"warning: {warning.message} [{warning.code}]")
        for hint in warning.hints:
            print(f"  hint: {hint}")
    print(
        table(["deployment", "state", "ready", "ports", "restarts", "rollouts", "last error"], rows)
        if rows
        else "no deployments"
    )
    print_groups(status.deployments)
    from maas.cli.progressview import print_status_bars

    print_status_bars(status.deployments)
    if not args.name:
        print_cache(status.cache)
    return exitcodes.OK


def print_groups(deployments: list[DeploymentStatus]) -> None:
    """One line per distributed group this node is in: its members and who holds it back."""
    for d in deployments:
        group = d.group
        if group is None:
            continue
        members = ", ".join(
            f"{m.role} {m.node} {m.endpoint} ({m.share:.0%})" for m in group.members
        )
        print(f"group {group.name} (this node: {group.role}): {members}")
        if group.held_back_by:
            print(f"  held back by: {', '.join(group.held_back_by)}")


def size_text(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover - the loop returns at GiB


def print_cache(models: list[CachedModel]) -> None:
    """The model cache per model: its revisions, their size, and who uses them."""
    if not models:
        return
    from maas.cli.output import table

    rows = []
    for model in models:
        for rev in model.revisions:
            state = ", ".join(rev.used_by) if rev.used_by else "unused"
            if not rev.complete:
                state += " (downloading)"
            rows.append(
                [f"{model.source}:{model.repo}", rev.revision[:12], size_text(rev.bytes), state]
            )
    total = sum(m.bytes for m in models)
    print(f"model cache: {size_text(total)}")
    print(table(["model", "revision", "size", "used by"], rows))


def state_text(d: DeploymentStatus) -> str:
    """The state, and for an on-demand deployment why it sleeps or waits (issue 18)."""
    demand = d.on_demand
    if demand is None:
        return d.state
    state = d.state if d.state in ("sleeping", "waking") else demand.state
    reason = f", {demand.reason}" if demand.reason else ""
    return f"{d.state} (on demand: {state}{reason})"


def print_agent_state(status: NodeStatus) -> None:
    """Pull mode's source, tasks that failed, foreign processes holding GPU memory, and a
    desired state the agent refused."""
    source = status.source
    if source is not None:
        print(
            f"source {source.url} ({source.branch}) at "
            f"{(source.applied_commit or 'nothing yet')[:12]}"
        )
        for line in source.error:
            print(f"refused {(source.refused_commit or '')[:12]}: {line}")
        for line in source.fetch_error:
            print(f"cannot fetch: {line}")
    for name, task in sorted(status.tasks.items()):
        if task.failures or task.restarts or not task.alive:
            print(
                f"task {name}: {'running' if task.alive else 'NOT RUNNING'}, "
                f"{task.failures} failed pass(es), {task.restarts} restart(s); "
                f"last: {task.last_error}"
            )
    for process in status.gpu_foreign:
        print(
            f"GPU {process.gpu}: pid {process.pid} ({process.name}) holds "
            f"{process.used_bytes / (1 << 30):.1f} GiB outside this node's containers"
        )
    for name, back in sorted(status.rolled_back.items()):
        print(f"{name}: rolled back to the previous version: {back.reason}")
    for prep in status.preparing:
        print(f"{prep.deployment}: {prep.phase} the new version while the old one serves")
    if status.desired == "refused":
        kept = ", ".join(f"{c.deployment}/{c.replica}" for c in status.kept or [])
        print(f"desired state refused; keeping every container as it is: {kept or 'none'}")
