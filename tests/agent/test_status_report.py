"""The status document the agent serves, built from a NodeSnapshot and read back with the
contract (maas.compiler.status) as maasctl and the gateway read it. No Docker: values in, a
document out."""

from __future__ import annotations

from types import MappingProxyType

from maas.agent.api.status import status_report
from maas.agent.reconcile.health import ReplicaHealth
from maas.agent.reconcile.observe import ObservedContainer
from maas.agent.reconcile.snapshot import NodeSnapshot
from maas.compiler import compile_plan, load_sources, parse_status
from maas.compiler.diagnostics import Diagnostic
from maas.compiler.plan import Plan
from maas.gateway import route_table_from_status
from support.observed import observed_container
from support.paths import ROOT

NOW = 1000.0
SPEC = (
    "apiVersion: maas/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n"
    "  source: huggingface\n  repo_id: org/web\n  backend: custom\n  image: x/web:1\n"
    "  replicas: 2\n"
)
TOP = [
    "node",
    "applied_at",
    "errors",
    "warnings",
    "tasks",
    "last_pass",
    "removal_errors",
    "gpu_foreign",
    "cache",
    "rolled_back",
    "preparing",
    "deployments",
    "removing",
]


def plan() -> Plan:
    sources = {"web.yaml": SPEC, "n.yaml": (ROOT / "examples/nodes/gpu-01.yaml").read_text()}
    documents = load_sources(sources)
    return compile_plan(documents.deployments, documents.nodes[0].model)


def container(deployment: str, replica: int, spec_hash: str, cid: str) -> ObservedContainer:
    return observed_container(cid, deployment, replica, spec_hash, port=40000 + replica)


def snapshot(**kw: object) -> NodeSnapshot:
    p = plan()
    web = p.deployments[0]
    ready = ReplicaHealth(
        container_id="a" * 64, ready=True, phase="running", spec_hash=web.spec_hash
    )
    starting = ReplicaHealth(
        container_id="b" * 64, started_at=NOW - 12, phase="starting", spec_hash=web.spec_hash
    )
    fields: dict[str, object] = {
        "node_name": "n1",
        "plan": p,
        "observed": (
            container("web", 0, web.spec_hash, "a" * 64),
            container("web", 1, web.spec_hash, "b" * 64),
            container("old", 0, "v1:x", "c" * 64),
        ),
        "healths": MappingProxyType({("web", 0): ready, ("web", 1): starting}),
        "passes": 3,
    }
    return NodeSnapshot(**{**fields, **kw})  # type: ignore[arg-type]


def report(snap: NodeSnapshot) -> dict[str, object]:
    return status_report(snap, now=NOW, warnings=[], tasks={}, source=None).document()


def test_the_document_reads_back_as_the_same_status() -> None:
    document = report(snapshot())
    assert list(document) == TOP  # optional parts only when set: the JSON of earlier agents
    status = parse_status(document)
    assert status.document() == document
    (web,) = status.deployments
    assert (web.state, web.ready_replicas, web.replicas) == ("starting", 1, 2)
    assert [c.ready for c in web.containers] == [True, False]
    assert web.containers[0].id == "a" * 12
    bar = web.progress_bar
    assert bar is not None and (bar.what, bar.done, bar.unit) == ("startup", 12.0, "s")
    assert status.removing == ["old"]
    route = route_table_from_status(document).resolve("web")
    assert route is not None and [r.url for r in route.ready] == ["http://127.0.0.1:40000"]


def test_before_the_first_pass_the_desired_state_is_pending() -> None:
    document = report(NodeSnapshot(node_name="n1"))
    assert document["desired"] == "pending" and document["deployments"] == []


def test_a_refused_desired_state_keeps_every_container_and_removes_none() -> None:
    refusal = Diagnostic("store-corrupt", "not a valid state file")
    document = report(snapshot(errors=(refusal,), refused=True))
    status = parse_status(document)
    assert status.desired == "refused" and status.removing == []
    assert [(k.deployment, k.id) for k in status.kept or []] == [("old", "c" * 12)]
    assert status.errors[0].code == "store-corrupt"
