"""The gateway's routing decision on plain values: status -> table, least outstanding, ejection."""

from __future__ import annotations

from typing import Any

import pytest

from maas.compiler import ContainerStatus, DeploymentStatus, MaasError, NodeStatus
from maas.gateway.routing import (
    Balancer,
    NoReadyReplica,
    Pick,
    RouteTable,
    route_table_from_status,
)


def container(cid: str, replica: int, port: int | None, ready: bool = True) -> ContainerStatus:
    return ContainerStatus(id=cid, replica=replica, state="running", port=port, ready=ready)


def deployment(name: str, *containers: ContainerStatus, **extra: Any) -> DeploymentStatus:
    fields: dict[str, Any] = {
        "name": name,
        "state": "running",
        "replicas": len(containers),
        "ready_replicas": sum(c.ready for c in containers),
        "backend": "llama-box",
        "image": "example.invalid/llama-box:1",
        "spec_hash": f"v1:{name}",
        "containers": list(containers),
    }
    return DeploymentStatus(**{**fields, **extra})


def table(*deployments: DeploymentStatus) -> RouteTable:
    return route_table_from_status(NodeStatus(node="n", deployments=list(deployments)))


def test_only_ready_containers_with_a_port_are_routable() -> None:
    t = table(
        deployment(
            "m",
            container("a", 0, 40001),
            container("b", 1, 40002, ready=False),
            container("c", 2, None),
        )
    )
    route = t.resolve("m")
    assert route is not None
    assert [r.url for r in route.ready] == ["http://127.0.0.1:40001"]
    assert route.replicas == 3


def test_aliases_resolve_and_a_deployment_name_wins_over_an_alias() -> None:
    t = table(
        deployment("llama", container("a", 0, 1), aliases=["gpt-4", "qwen"]),
        deployment("qwen", container("b", 0, 2), aliases=["llama"]),
    )
    assert t.resolve("gpt-4") is t.routes["llama"]
    assert t.resolve("qwen") is t.routes["qwen"]
    assert t.resolve("llama") is t.routes["llama"]
    assert t.resolve("nope") is None


def test_upstream_host_is_configurable() -> None:
    status = NodeStatus(node="n", deployments=[deployment("m", container("a", 0, 40001))])
    t = route_table_from_status(status, "10.0.0.5")
    assert t.routes["m"].ready[0].url == "http://10.0.0.5:40001"


def test_no_ready_replica() -> None:
    t = table(deployment("m", container("a", 0, 1, ready=False), state="starting"))
    balancer = Balancer(retry_after_s=7)
    refused = balancer.choose_in(t.routes["m"], now=0)
    assert isinstance(refused, NoReadyReplica)
    assert refused.retry_after_s == 7 and refused.route.state == "starting"


def test_least_outstanding_requests_wins() -> None:
    t = table(deployment("m", container("a", 0, 1), container("b", 1, 2), container("c", 2, 3)))
    balancer = Balancer()
    replicas = {r.container_id: r for r in t.routes["m"].ready}
    balancer.started(replicas["a"])
    balancer.started(replicas["a"])
    balancer.started(replicas["b"])
    picked = balancer.choose_in(t.routes["m"], now=0)
    assert isinstance(picked, Pick) and picked.replica.container_id == "c"
    balancer.started(replicas["c"])
    balancer.started(replicas["c"])
    picked = balancer.choose_in(t.routes["m"], now=0)
    assert isinstance(picked, Pick) and picked.replica.container_id == "b"
    for _ in range(2):
        balancer.finished(replicas["a"])
    picked = balancer.choose_in(t.routes["m"], now=0)
    assert isinstance(picked, Pick) and picked.replica.container_id == "a"
    assert "a" not in balancer.outstanding  # finished requests leave no zero entries behind


def test_ties_are_spread_over_idle_replicas() -> None:
    t = table(deployment("m", container("a", 0, 1), container("b", 1, 2), container("c", 2, 3)))
    balancer = Balancer()
    seen = []
    for _ in range(6):
        picked = balancer.choose_in(t.routes["m"], now=0)
        assert isinstance(picked, Pick)
        seen.append(picked.replica.container_id)
    assert sorted(seen) == ["a", "a", "b", "b", "c", "c"]


def test_a_failed_replica_is_skipped_until_its_ejection_ends() -> None:
    t = table(deployment("m", container("a", 0, 1), container("b", 1, 2)))
    balancer = Balancer(eject_s=10)
    a = t.routes["m"].ready[0]
    balancer.failed(a, now=100)
    for _ in range(4):
        picked = balancer.choose_in(t.routes["m"], now=105)
        assert isinstance(picked, Pick) and picked.replica.container_id == "b"
    picks = {balancer.choose_in(t.routes["m"], now=110.0).replica.container_id for _ in range(4)}  # type: ignore[union-attr]
    assert picks == {"a", "b"}


def test_all_replicas_ejected_gives_retry_after_until_the_first_comes_back() -> None:
    t = table(deployment("m", container("a", 0, 1), container("b", 1, 2)))
    balancer = Balancer(eject_s=10, retry_after_s=99)
    a, b = t.routes["m"].ready
    balancer.failed(a, now=100)
    balancer.failed(b, now=103)
    refused = balancer.choose_in(t.routes["m"], now=101.5)
    assert isinstance(refused, NoReadyReplica) and refused.retry_after_s == 9


def test_excluded_replicas_are_not_retried_within_one_request() -> None:
    t = table(deployment("m", container("a", 0, 1), container("b", 1, 2)))
    balancer = Balancer()
    route = t.routes["m"]
    picked = balancer.choose_in(route, now=0, exclude=frozenset({"a"}))
    assert isinstance(picked, Pick) and picked.replica.container_id == "b"
    assert isinstance(balancer.choose_in(route, 0, frozenset({"a", "b"})), NoReadyReplica)


def test_a_restarted_container_is_not_ejected_and_old_ejections_are_forgotten() -> None:
    before = table(deployment("m", container("old", 0, 1)))
    balancer = Balancer(eject_s=60)
    balancer.failed(before.routes["m"].ready[0], now=0)
    after = table(deployment("m", container("new", 0, 1)))
    picked = balancer.choose_in(after.routes["m"], now=1)
    assert isinstance(picked, Pick) and picked.replica.container_id == "new"
    balancer.forget_except(after)
    assert balancer.ejected_until == {}


def test_empty_status_gives_an_empty_table() -> None:
    assert route_table_from_status({"node": "n", "deployments": []}).routes == {}
    assert route_table_from_status({"node": "n"}).routes == {}


def test_the_status_document_as_json_gives_the_same_table() -> None:
    status = NodeStatus(node="n", deployments=[deployment("m", container("a", 0, 40001))])
    assert route_table_from_status(status.document()) == route_table_from_status(status)


@pytest.mark.parametrize(
    ("document", "where"),
    [
        ({}, "node: Field required"),
        ({"node": "n", "deployments": [{"name": "m"}]}, "deployments.0.state: Field required"),
        (
            {"node": "n", "deployments": [{**deployment("m").model_dump(), "containers": [{}]}]},
            "deployments.0.containers.0.id: Field required",
        ),
        ([], "the document: Input should be a valid dictionary"),
    ],
)
def test_a_malformed_status_document_is_a_clear_error(document: object, where: str) -> None:
    with pytest.raises(MaasError) as caught:
        route_table_from_status(document)  # type: ignore[arg-type]
    (problem,) = caught.value.diagnostics
    assert problem.code == "status-invalid"
    assert problem.message.startswith("the agent's status is not a status document: ")
    assert where in problem.message
