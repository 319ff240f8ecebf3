"""Network sandboxes of on-demand replicas (reconcile/sandbox.py): the container that holds a
replica's network and port, which ones a pass removes, and how replicas join them (no Docker)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from agent.test_asleep import box, dep
from maas.agent.reconcile.containers import container_spec
from maas.agent.reconcile.observe import Owner, observe
from maas.agent.reconcile.sandbox import (
    ObservedSandbox,
    Sandboxes,
    parse_sandboxes,
    sandbox_spec,
    stale,
)
from maas.compiler import MaasError, Plan

OWNER = Owner("n1")


def sandbox(
    deployment: str = "a", replica: int = 0, *, port: int = 1, sid: str = "s1", image: str = "img"
) -> ObservedSandbox:
    return ObservedSandbox(
        id=sid,
        name=f"maas-n1-{deployment}-{replica}-net",
        deployment=deployment,
        replica=replica,
        port=port,
        bind_address="127.0.0.1",
        image=image,
        running=True,
    )


def test_a_sandbox_only_sleeps_and_publishes_the_replicas_port() -> None:
    spec = sandbox_spec(dep(), 0, owner=OWNER, bind_address="127.0.0.1")
    assert (spec["image"], spec["entrypoint"], spec["command"]) == ("img", ["sleep"], ["infinity"])
    assert spec["ports"] == {"1/tcp": ("127.0.0.1", 1)}
    assert spec["cap_drop"] == ["ALL"] and spec["read_only"] and spec["mem_limit"] == 16 << 20
    assert "device_requests" not in spec and "volumes" not in spec
    (found,) = parse_sandboxes([{"Id": "s1", "Name": "/" + spec["name"], **_shape(spec)}], OWNER)
    assert found == sandbox()
    # ... and is never taken for a replica.
    assert observe([{"Id": "s1", **_shape(spec)}], OWNER) == []


def test_a_replica_joins_its_sandbox_instead_of_publishing_a_port() -> None:
    spec = container_spec(dep(), 0, owner=OWNER, bind_address="127.0.0.1", secret=str, sandbox="s1")
    assert spec["network_mode"] == "container:s1" and "ports" not in spec
    assert spec["labels"]["maas.sandbox"] == "s1"
    (seen,) = observe([{"Id": "c1", **_shape(spec)}], OWNER)
    assert seen.sandbox == "s1"
    own = container_spec(dep(), 0, owner=OWNER, bind_address="127.0.0.1", secret=str)
    assert own["ports"] == {"1/tcp": ("127.0.0.1", 1)} and "network_mode" not in own


def test_a_pass_removes_the_sandboxes_nothing_needs() -> None:
    plan = Plan(node="n1", deployments=[dep("a", 2), dep("b", on_demand=False)])
    kept = [sandbox("a", 0), sandbox("a", 1, sid="s2")]
    unwanted = [
        sandbox("a", 2, sid="s3"),  # beyond the replicas
        sandbox("b", sid="s4"),  # not on demand
        sandbox("gone", sid="s5"),  # not planned
        sandbox("a", 0, port=9, sid="s6"),  # another port
        sandbox("a", 0, image="old", sid="s7"),  # another image
    ]
    joined = sandbox("gone", 1, sid="s8")  # a container of ours still joins it
    observed = [dataclasses.replace(box(name="gone", replica=1), sandbox="s8")]
    assert stale([*kept, *unwanted, joined], plan, observed, "127.0.0.1") == unwanted
    assert stale(kept, plan, [], "0.0.0.0") == kept  # another bind address


class Engine:
    def __init__(self, fail: str = "") -> None:
        self.fail = fail
        self.calls: list[tuple[str, Any]] = []

    def create_and_start(self, spec: dict[str, Any]) -> str:
        self.calls.append(("create", spec["name"]))
        if self.fail:
            raise MaasError.single("engine", self.fail, retryable=True)
        return "new"

    def start(self, container_id: str) -> None:
        self.calls.append(("start", container_id))

    def remove(self, container_id: str, *, stop_timeout: int = 30) -> None:
        self.calls.append(("remove", container_id))


def test_ensure_makes_starts_or_replaces_a_sandbox() -> None:
    engine = Engine()
    book = Sandboxes(engine, OWNER, "127.0.0.1")
    assert book.ensure(dep(on_demand=False), 0) is None and engine.calls == []
    assert book.ensure(dep(), 0) == "new"
    assert engine.calls == [("create", "maas-n1-a-0-net")]
    assert book.ensure(dep(), 0) == "new" and len(engine.calls) == 1  # running: nothing to do
    stopped = dataclasses.replace(sandbox(sid="old"), running=False)
    book.seen = {stopped.name: stopped}
    assert book.ensure(dep(), 0) == "old" and engine.calls[-1] == ("start", "old")
    book.seen = {stopped.name: sandbox(sid="other", port=7)}
    assert book.ensure(dep(), 0) == "new"
    assert engine.calls[-2:] == [("remove", "other"), ("create", "maas-n1-a-0-net")]


def test_an_image_without_sleep_gets_no_sandbox_and_other_errors_fail_the_replica() -> None:
    missing = 'exec: "sleep": executable file not found in $PATH: unknown'
    engine = Engine(fail=missing)
    book = Sandboxes(engine, OWNER, "127.0.0.1")
    assert book.ensure(dep(), 0) is None and book.ensure(dep("b"), 0) is None
    assert len(engine.calls) == 1  # the image is known not to hold one
    busy = Sandboxes(Engine(fail="port is already allocated"), OWNER, "127.0.0.1")
    with pytest.raises(MaasError, match="port is already allocated"):
        busy.ensure(dep(), 0)


def _shape(spec: dict[str, Any]) -> dict[str, Any]:
    return {"Config": {"Labels": spec["labels"]}, "State": {"Status": "running"}}
