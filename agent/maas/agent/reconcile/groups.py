"""Distributed groups on a node (issue 17): when a group's primary may start, and when it must be
restarted. Pure but for `answers`, which connects to the workers' RPC endpoints.

A worker serves one client at a time (maas.host.sockets says why), so its endpoint is connected
to only while its primary does not run here: a connection made beside a running primary would
wait in the worker's backlog and, once that is full, fail though the worker is well. For a
running primary, a worker answers while the primary's own connection to it is established in
this host's socket table; a worker that went away closed or reset it, and is connected to
until it is back (llama.cpp's client does not reconnect: the primary is then restarted).

A llama.cpp primary loads its layers onto its workers when it starts (llama-server sends the
tensors over RPC), so it is held back until every worker's endpoint answers; the workers
themselves start like any deployment (on their own nodes, by their own agents). A worker that
goes away loses the layers it held, which the primary cannot reload by itself: once a running
primary has seen a worker stop answering, it is restarted as soon as all its workers answer
again.

A vLLM group is the other way round: its followers (`vllm serve --headless`) have no API and
no port of their own, and connect to the primary (torch.distributed's store at --master-addr
and --master-port, vllm/config/parallel.py), which waits for them before it serves. So nothing
holds a vLLM primary back, and a follower is ready once its process runs (`headless`).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from maas.compiler import Group, GroupMemberStatus, GroupStatus, Plan, PlanDeployment, Share, wire
from maas.host.sockets import connected

Endpoint = tuple[str, int]


def gated(d: PlanDeployment) -> bool:
    """A primary that waits for its workers to answer: llama.cpp's, not vLLM's."""
    return d.group is not None and d.group.role == "primary" and d.backend == "llama-box"


def headless(d: PlanDeployment) -> bool:
    """A vLLM follower: no port to probe, its process running is all there is to see."""
    return d.group is not None and d.group.role == "worker" and d.backend == "vllm"


def endpoints(group: Group) -> list[Endpoint]:
    return [(w.address, w.port) for w in group.workers]


def holding(group: Group, answering: Mapping[Endpoint, bool]) -> list[str]:
    """The workers (as 'node address:port') that hold the primary back: those found not
    answering (an endpoint not asked counts as answering)."""
    return [
        f"{w.node} {w.address}:{w.port}"
        for w in group.workers
        if not answering.get((w.address, w.port), True)
    ]


@dataclass
class GroupGate:
    """What the reconciler asks before each pass, kept across passes: which primaries wait
    (and for whom) and which must restart because a worker came back."""

    lost: dict[str, set[Endpoint]] = field(default_factory=dict)  # primary -> workers it lost
    waiting: dict[str, list[str]] = field(default_factory=dict)  # primary -> workers it waits for

    def step(
        self, plan: Plan, answering: Mapping[Endpoint, bool], running: Iterable[str]
    ) -> set[str]:
        """Update from this pass's answers; the primaries to restart now."""
        up = set(running)
        restart: set[str] = set()
        self.waiting = {}
        primaries = {d.name: d.group for d in plan.deployments if d.group and gated(d)}
        for name in list(self.lost):
            if name not in primaries:
                del self.lost[name]
        for name, group in primaries.items():
            assert group is not None
            missing = holding(group, answering)
            if missing:
                self.waiting[name] = missing
                if name in up:
                    gone = {e for e in endpoints(group) if not answering.get(e, True)}
                    self.lost.setdefault(name, set()).update(gone)
            elif self.lost.pop(name, None) and name in up:
                restart.add(name)
        return restart

    def reason(self, name: str) -> str | None:
        missing = self.waiting.get(name)
        if not missing:
            return None
        return "waiting for the group's workers to answer: " + ", ".join(missing)


def answers(
    plan: Plan,
    connect: Callable[[Endpoint], bool] | None = None,
    running: Iterable[str] = (),
    linked: Callable[[Endpoint], bool] | None = None,
) -> dict[Endpoint, bool]:
    """Whether each worker endpoint of this node's primaries answers now: for a running primary
    (`running`) whose connection to it is established, yes without a second connection; else
    whether it accepts a TCP connection (a worker whose primary lost its link is free again)."""
    probe = connect or _connects
    held = linked or (lambda e: connected(*e))
    up = set(running)
    found: dict[Endpoint, bool] = {}
    for d in plan.deployments:
        if d.group is not None and gated(d):
            for endpoint in endpoints(d.group):
                if endpoint not in found:
                    found[endpoint] = (d.name in up and held(endpoint)) or probe(endpoint)
    return found


def _connects(endpoint: Endpoint) -> bool:
    try:
        with socket.create_connection(endpoint, timeout=1.0):
            return True
    except OSError:
        return False


def group_status(group: Group | None, waiting: Sequence[str]) -> GroupStatus | None:
    """The status document's `group` of one deployment."""
    if group is None:
        return None
    return GroupStatus(
        name=group.name,
        role=group.role,
        members=[
            GroupMemberStatus(
                node=m.node, role=m.role, endpoint=f"{m.address}:{m.port}", share=m.share
            )
            for m in group.members
        ],
        held_back_by=list(waiting),
    )


def shares(members: Mapping[str, PlanDeployment], node: str) -> dict[str, Share]:
    """What the node's compile charges for its group members: the fleet's split, as planned."""
    return {
        name: Share(node, d.group.role, d.placement, d.estimate, port=d.port)
        for name, d in members.items()
        if d.group is not None
    }


def wired(plan: Plan, members: Mapping[str, PlanDeployment], cache_dir: str) -> Plan:
    """The node's plan with each group member told its group as the fleet formed it (its peers'
    endpoints and ports are known only to the fleet); what the member runs is the node's own
    rendering (its cache folder and model path, not the repository's), checked against the
    node's policy, its share charged."""
    deployments = []
    for d in plan.deployments:
        fleet = members.get(d.name)
        if fleet is None or fleet.group is None:
            deployments.append(d)
            continue
        share = Share(fleet.group.node, fleet.group.role, fleet.placement, fleet.estimate)
        layers = fleet.placement.layers_total
        deployments.append(wire(d, fleet.group, share, layers, cache_dir))
    return plan.model_copy(update={"deployments": deployments})


def listens_on(planned: PlanDeployment) -> str | None:
    """Where a group member listens when not where the agent publishes ports: a worker binds
    its node's rpc_address only (the primary's API is on 127.0.0.1)."""
    if planned.group is None or planned.group.role == "primary":
        return None
    return planned.group.me().address
