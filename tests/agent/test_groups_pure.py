"""A distributed group on the agent's side (issue 17): the primary waits for its workers' RPC
endpoints, is restarted once a lost worker answers again, and status names who holds it back;
the gateway routes to the primary only. Endpoints are real TCP listeners on loopback."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from maas.agent.reconcile.groups import GroupGate, answers, group_status, headless, holding
from maas.compiler.plan import Group, GroupMember, ModelRef, Placement, Plan, PlanDeployment
from maas.compiler.status import DeploymentStatus, GroupStatus
from maas.gateway.routing import route_table_from_status
from support.gateway import deployment, status


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock
    sock.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def group(role: str, worker_ports: list[int]) -> Group:
    members = [GroupMember(node="a", role="primary", address="127.0.0.1", port=40000, share=0.5)]
    members += [
        GroupMember(node=f"w{i}", role="worker", address="127.0.0.1", port=p, share=0.5)
        for i, p in enumerate(worker_ports)
    ]
    return Group(name="big", role=role, members=members)  # type: ignore[arg-type]


def plan_with(g: Group, backend: str = "llama-box") -> Plan:
    deployment = PlanDeployment(
        name="big",
        backend=backend,
        backend_rule="gguf",
        image="x",
        command=[],
        port=40000,
        model=ModelRef(source="local_path", path="/models/m.gguf", download=False),
        placement=Placement(mode="cpu"),
        group=g,
    )
    return Plan(node="a", deployments=[deployment])


def test_the_primary_waits_for_the_worker_that_does_not_answer(listener: socket.socket) -> None:
    up, down = listener.getsockname()[1], closed_port()
    plan = plan_with(group("primary", [up, down]))
    found = answers(plan)
    assert found == {("127.0.0.1", up): True, ("127.0.0.1", down): False}
    gate = GroupGate()
    assert gate.step(plan, found, running=()) == set()
    assert gate.reason("big") == f"waiting for the group's workers to answer: w1 127.0.0.1:{down}"
    assert holding(plan.deployments[0].group, found) == [f"w1 127.0.0.1:{down}"]  # type: ignore[arg-type]
    status = group_status(plan.deployments[0].group, gate.waiting.get("big", ()))
    assert status is not None and status.held_back_by == [f"w1 127.0.0.1:{down}"]


def test_a_vllm_primary_waits_for_nobody_and_a_follower_is_ready_when_it_runs() -> None:
    # vLLM's followers connect to the primary (they have no port of their own): nothing is
    # asked of their endpoints, and the primary starts at once.
    vllm = plan_with(group("primary", [closed_port()]), backend="vllm")
    assert answers(vllm, connect=lambda e: False) == {}
    gate = GroupGate()
    assert gate.step(vllm, {}, running=()) == set() and gate.reason("big") is None
    follower = plan_with(group("worker", [closed_port()]), backend="vllm").deployments[0]
    assert headless(follower) and not headless(plan_with(group("worker", [1])).deployments[0])


def test_a_lost_worker_restarts_the_primary_when_it_is_back() -> None:
    plan = plan_with(group("primary", [41000]))
    endpoint = ("127.0.0.1", 41000)
    gate = GroupGate()
    assert gate.step(plan, {endpoint: True}, running={"big"}) == set()  # healthy group
    assert gate.step(plan, {endpoint: False}, running={"big"}) == set()  # worker lost
    assert gate.reason("big") is not None
    assert gate.step(plan, {endpoint: False}, running={"big"}) == set()  # still away
    assert gate.step(plan, {endpoint: True}, running={"big"}) == {"big"}  # back: restart
    assert gate.step(plan, {endpoint: True}, running={"big"}) == set()  # once


def test_a_primary_that_never_ran_is_not_restarted() -> None:
    plan = plan_with(group("primary", [41000]))
    gate = GroupGate()
    gate.step(plan, {("127.0.0.1", 41000): False}, running=())
    assert gate.step(plan, {("127.0.0.1", 41000): True}, running=()) == set()


def test_the_gateway_routes_to_the_primary_only() -> None:
    def member(role: str) -> DeploymentStatus:
        group = GroupStatus(name="big", role=role, members=[])
        return deployment("big", [40000]).model_copy(update={"group": group})

    assert "big" in route_table_from_status(status(member("primary"))).routes
    assert "big" not in route_table_from_status(status(member("worker"))).routes


def test_a_running_primarys_workers_are_not_connected_to() -> None:
    """A worker serves one client at a time: beside a running primary linked to it, a connection
    would wait in its backlog (and fail once that is full), so none is made."""
    plan = plan_with(group("primary", [41000]))
    asked: list[tuple[str, int]] = []

    def connect(endpoint: tuple[str, int]) -> bool:
        asked.append(endpoint)
        return True

    endpoint = ("127.0.0.1", 41000)
    assert answers(plan, connect, running={"big"}, linked=lambda e: True) == {endpoint: True}
    assert asked == []
    # The link is gone (the worker went away): asked by connecting, until it is back.
    assert answers(plan, connect, running={"big"}, linked=lambda e: False) == {endpoint: True}
    assert asked == [endpoint]
    assert answers(plan, connect, running=()) == {endpoint: True}
    assert asked == [endpoint, endpoint]


def test_the_socket_table_shows_a_link(listener: socket.socket) -> None:
    """maas.host.sockets reads the kernel's table: a listener, and an established link to it."""
    from maas.host.sockets import connected, listening

    port = listener.getsockname()[1]
    assert listening("127.0.0.1", port)
    assert not connected("127.0.0.1", port)
    with socket.create_connection(("127.0.0.1", port)):
        assert connected("127.0.0.1", port)
    assert not listening("127.0.0.1", closed_port())
