"""The agent's pure parts on plain values: diff, observe, back-off, container spec, store, edits."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from maas.agent.config import load_config as load_agent_config
from maas.agent.desired.sources import merge, remove_deployment
from maas.agent.desired.store import Desired, Store
from maas.agent.reconcile.containers import container_spec
from maas.agent.reconcile.diff import diff
from maas.agent.reconcile.health import ReplicaHealth
from maas.agent.reconcile.observe import ObservedContainer, Owner, parse_container
from maas.cli.render_plan import placement_text
from maas.compiler import MaasError, compile_plan, load_sources
from maas.compiler.plan import Plan
from support import paths
from support.golden import check_golden
from support.observed import observed_container
from support.paths import ROOT

GOLDEN = paths.GOLDEN / "spec-hashes.json"


def plan_of(*specs: str, node: str = "gpu-01") -> Plan:
    sources = {f"d{i}.yaml": s for i, s in enumerate(specs)}
    sources["n.yaml"] = (ROOT / "examples" / "nodes" / f"{node}.yaml").read_text()
    documents = load_sources(sources)
    return compile_plan(documents.deployments, documents.nodes[0].model)


def spec(name: str, replicas: int = 1, image: str = "x/y:1", env: str = "") -> str:
    return (
        f"apiVersion: maas/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n"
        f"  source: huggingface\n  repo_id: org/{name}\n  backend: custom\n  image: {image}\n"
        f"  replicas: {replicas}\n{env}"
    )


def observed(
    name: str, replica: int, spec_hash: str, state: str = "running", cid: str = ""
) -> ObservedContainer:
    return observed_container(cid or f"{name}-{replica}-{state}", name, replica, spec_hash, state)


def test_diff_creates_recreates_removes_in_order() -> None:
    plan = plan_of(spec("a", replicas=2), spec("b"))
    a = plan.deployment("a")
    assert a is not None
    found = [
        observed("a", 0, a.spec_hash),
        observed("b", 0, "v1:old"),
        observed("gone", 0, "v1:x"),
        observed("a", 5, a.spec_hash),
    ]
    actions = [(x.kind, x.deployment, x.replica) for x in diff(plan, found)]
    assert actions == [
        ("remove", "a", 5),
        ("remove", "gone", 0),
        ("recreate", "b", 0),
        ("create", "a", 1),
        ("noop", "a", 0),
    ]


def test_diff_is_all_noops_when_converged() -> None:
    plan = plan_of(spec("a", replicas=3))
    a = plan.deployment("a")
    assert a is not None
    found = [observed("a", r, a.spec_hash) for r in range(3)]
    assert {x.kind for x in diff(plan, found)} == {"noop"}


def test_diff_duplicates_start_and_backoff() -> None:
    plan = plan_of(spec("a"))
    a = plan.deployment("a")
    assert a is not None
    found = [
        observed("a", 0, a.spec_hash, "exited", "old"),
        observed("a", 0, a.spec_hash, "exited", "new"),
    ]
    kinds = [(x.kind, x.container_id) for x in diff(plan, found)]
    assert kinds == [("remove", "old"), ("start", "new")]
    held = [(x.kind, x.reason) for x in diff(plan, found[1:], held={("a", 0)})]
    assert held == [("noop", "exited; backing off")]
    failed_create = [(x.kind, x.reason) for x in diff(plan, [], held={("a", 0)})]
    assert failed_create == [("noop", "no container; backing off")]


def test_crash_loop_backoff_kubelet_rule() -> None:
    health = ReplicaHealth()
    delays = []
    for t in range(7):
        health.fail("crash", 1000.0 * t, "crash")
        delays.append(health.hold_until - 1000.0 * t)
    assert delays == [0, 10, 20, 40, 80, 160, 300]
    health.started("c1", now=10_000)
    health.probe_result(True, 10_001, startup_timeout_s=60)
    health.probe_result(True, 10_700, startup_timeout_s=60)  # 10 minutes healthy
    health.fail("crash", 10_800, "crash")
    assert health.hold_until == 10_800  # reset: restarted at once again
    assert health.restarts == 8 and health.rollouts == 0


def test_crash_loop_past_the_first_backoff_and_permanent_failures() -> None:
    health = ReplicaHealth()
    health.started("c", now=0, spec_hash="v1:a")
    health.fail("exit 1", 1, "crash")  # restarted at once
    health.fail("exit 1", 2, "crash")  # the first back-off, 10 s
    assert not health.crash_loop and health.next_retry_at(2) == 12
    health.fail("exit 1", 13, "crash")  # failed again after it
    assert health.crash_loop and health.attempts == 3 and health.restarts == 3
    health.rolled_out("v1:b")  # a new spec: counted apart, its back-off starts afresh
    assert (health.rollouts, health.attempts, health.restarts) == (1, 0, 3)
    assert not health.crash_loop and not health.held(14)
    health.fail("invalid reference format", 20, "pull", permanent=True)
    assert health.held(1e12) and health.next_retry_at(20) is None
    assert health.restarts == 3  # a failed pull is no restart
    assert not health.crash_loop  # twice transient pull failures are no crash loop either
    health.retry()  # submitted again
    assert not health.held(21) and health.phase == "pending"


def test_wait_stops_on_permanent_failure_and_crash_loop_of_the_applied_spec() -> None:
    from maas.cli.waiting import failure_line, hopeless
    from maas.compiler import DeploymentStatus, ReplicaStatus

    def replica(**kw: object) -> ReplicaStatus:
        base = {
            "replica": 0,
            "phase": "failed",
            "spec_hash": "v1:a",
            "attempts": 1,
            "last_error": "boom",
            "permanent": False,
            "crash_loop": False,
            "next_retry_at": 110.0,
        }
        return ReplicaStatus.model_validate({**base, **kw})

    def deployment(*replicas: ReplicaStatus) -> DeploymentStatus:
        return DeploymentStatus(
            name="web",
            state="failed",
            replicas=len(replicas),
            ready_replicas=0,
            last_error="boom",
            backend="custom",
            image="web:1",
            spec_hash="v1:a",
            replica_states=list(replicas),
        )

    assert hopeless(deployment(replica()), "v1:a") is None  # transient: keep waiting
    permanent = deployment(replica(permanent=True, last_error="invalid reference format"))
    assert hopeless(permanent, "v1:a") == (
        "web replica 0: invalid reference format (permanent: not retried until applied again)"
    )
    assert hopeless(permanent, "v1:b") is None  # an older spec's failure says nothing
    looping = deployment(replica(crash_loop=True, attempts=3))
    assert "attempt 3, crash loop, next retry in 10 s" in (hopeless(looping, "v1:a", now=100) or "")
    assert failure_line(deployment(replica(attempts=2)), now=100) == (
        "boom (attempt 2, next retry in 10 s)"
    )


def test_startup_budget_and_liveness() -> None:
    health = ReplicaHealth()
    health.started("c", now=0)
    assert not health.probe_result(False, 59, startup_timeout_s=60)
    assert health.probe_result(False, 61, startup_timeout_s=60)
    assert health.phase == "failed" and "startup budget" in (health.last_error or "")
    health.started("c2", now=100)
    health.probe_result(True, 101, startup_timeout_s=60)
    assert [health.probe_result(False, 102 + i, startup_timeout_s=60) for i in range(3)] == [
        False,
        False,
        True,
    ]


def test_parse_container_ignores_malformed_labels_and_other_namespaces() -> None:
    owner = Owner("n")
    attrs = {
        "Id": "abc",
        "Name": "/x",
        "Config": {"Labels": owner.labels("d", 2, "v1:h", 41)},
        "State": {"Status": "exited", "ExitCode": 137},
    }
    parsed = parse_container(attrs, owner)
    assert parsed is not None and parsed.replica == 2 and parsed.port == 41
    assert not parsed.running and parsed.exit_code == 137
    assert parse_container(attrs, Owner("n", "team-b")) is None
    attrs["Config"]["Labels"]["maas.replica"] = "two"
    assert parse_container(attrs, owner) is None


def test_an_owner_names_labels_and_filters_within_its_namespace() -> None:
    owner = Owner("gpu-01", "ci.run-7")
    assert owner.container_name("web", 0) == "ci.run-7-gpu-01-web-0"
    assert owner.filters() == ["ci.run-7.managed=true", "ci.run-7.node=gpu-01"]
    assert set(owner.labels("web", 0, "h", 1)) == {
        f"ci.run-7.{key}"
        for key in ("managed", "node", "deployment", "replica", "spec-hash", "port")
    }


def test_container_spec_gpu_ports_env_and_limits() -> None:
    plan = plan_of(
        spec(
            "a",
            replicas=2,
            env="  env: {TOKEN: {secret: t}, MODE: x}\n"
            "  resources: {memory_bytes: 1073741824, cpus: 1.5}\n",
        )
    )
    a = plan.deployment("a")
    assert a is not None
    created = container_spec(
        a, 1, owner=Owner("gpu-01"), bind_address="127.0.0.1", secret=lambda name: f"<{name}>"
    )
    assert created["device_requests"] == [
        {"driver": "nvidia", "device_ids": a.placement.gpus, "capabilities": [["gpu"]]}
    ]
    assert created["ports"] == {f"{a.port}/tcp": ("127.0.0.1", a.ports[1])}
    assert created["environment"] == {"MODE": "x", "TOKEN": "<t>"}
    assert created["mem_limit"] == 1 << 30 and created["nano_cpus"] == 1_500_000_000
    assert created["labels"]["maas.spec-hash"] == a.spec_hash
    assert created["name"] == "maas-gpu-01-a-1"
    assert "TOKEN" not in json.dumps(a.model_dump(mode="json")).replace('"TOKEN": {"secret"', "")


def test_container_spec_pins_each_replica_to_its_own_numa_node() -> None:
    """One replica per socket: the plan gives each replica a NUMA node of its own, and each
    replica's container gets that node's CPUs and memory, not the deployment's."""
    sources = {
        "d.yaml": spec(
            "cpu", replicas=2, env="  gpus: none\n  resources: {memory_bytes: 107374182400}\n"
        ),
        "n.yaml": (GOLDEN.parent / "placement" / "nodes" / "two-sockets.yaml").read_text(),
    }
    documents = load_sources(sources)
    planned = compile_plan(documents.deployments, documents.nodes[0].model).deployment("cpu")
    assert planned is not None and planned.placement.replica_cpus is not None
    assert planned.placement.cpuset is None and planned.placement.threads == 64
    cpusets = [
        {
            key: value
            for key, value in container_spec(
                planned, replica, owner=Owner("epyc-01"), bind_address="127.0.0.1", secret=str
            ).items()
            if key.startswith("cpuset")
        }
        for replica in (0, 1)
    ]
    assert cpusets == [
        {"cpuset_cpus": "0-63,128-191", "cpuset_mems": "0"},
        {"cpuset_cpus": "64-127,192-255", "cpuset_mems": "1"},
    ]
    # ... and the text plan shows each replica's CPUs.
    assert placement_text(planned).endswith(" cpus 0-63,128-191 | 64-127,192-255")


def test_spec_hashes_are_stable(update_goldens: bool) -> None:
    """A refactor must not silently change hashes: that would recreate every container."""
    examples = sorted((ROOT / "examples").glob("*.yaml"))
    node = ROOT / "examples" / "nodes" / "gpu-01.yaml"
    sources = {p.name: p.read_text() for p in [*examples, node]}
    documents = load_sources(sources)
    plan = compile_plan(documents.deployments, documents.nodes[0].model)
    hashes = {d.name: d.spec_hash for d in plan.deployments}
    check_golden(GOLDEN, json.dumps(hashes, indent=2, sort_keys=True) + "\n", update_goldens)


def test_store_is_atomic_and_refuses_corruption(tmp_path: Path) -> None:
    store = Store(tmp_path)
    assert store.load() == Desired()
    store.save(Desired(sources={"a.yaml": "x"}))
    assert store.load().sources == {"a.yaml": "x"}
    assert [p.name for p in tmp_path.iterdir()] == ["desired.json"]  # no temp files left
    (tmp_path / "desired.json").write_text('{"version": 1, "sources": {"a.yaml"')
    with pytest.raises(MaasError) as caught:
        store.load()
    assert caught.value.diagnostics[0].code == "store-corrupt"


def test_a_pull_mode_state_file_of_an_older_agent_loads_and_its_commit_is_read_again(
    tmp_path: Path,
) -> None:
    """Older agents stored only the plan compiled from a commit; it still loads (and runs until
    then), and pull mode reads that commit again to store this node's share of it as inputs."""
    plan = plan_of(spec("web"))
    old = {
        "version": 1,
        "sources": {},
        "plan": plan.model_dump(mode="json"),
        "applied_at": 5.0,
        "source_commit": "c0ffee",
    }
    (tmp_path / "desired.json").write_text(json.dumps(old))
    stored = Store(tmp_path).load()
    assert stored.plan == plan and stored.commit_in_force() is None
    share = Desired(sources={"d.yaml": spec("web")}, assigned={"web": 1}, source_commit="c0ffee")
    assert share.commit_in_force() == "c0ffee"
    forced = Desired(sources={"d.yaml": spec("web")}, source_commit="c0ffee")  # apply --force
    assert forced.commit_in_force() == "c0ffee"


def test_full_disk_never_leaves_a_partial_file(tmp_path: Path) -> None:
    """A real 64 KiB tmpfs as the state directory, filled up: the old state stays whole."""
    mount = tmp_path / "state"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        store = Store(mount)
        store.save(Desired(sources={"a.yaml": "old"}))
        with pytest.raises(MaasError) as caught:
            store.save(Desired(sources={"a.yaml": "x" * 200_000}))
        assert caught.value.retryable and caught.value.diagnostics[0].code == "store"
        assert store.load().sources == {"a.yaml": "old"}
        assert [p.name for p in mount.iterdir()] == ["desired.json"]
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_merge_and_remove_sources() -> None:
    stored = {"/a.yaml": spec("a") + "---\n" + spec("b"), "/c.yaml": spec("c")}
    merged = merge(stored, {"/new.yaml": spec("b", image="x/y:2")})
    names = sorted(d.model.metadata.name for d in load_sources(merged).deployments)
    assert names == ["a", "b", "c"]
    assert "x/y:2" in merged["/new.yaml"] and "name: b" not in merged["/a.yaml"]
    removed, found = remove_deployment(merged, "c")
    assert found and "/c.yaml" not in removed
    assert remove_deployment(removed, "nope") == (removed, False)


def test_agent_config_example_loads_and_a_bad_label_namespace_is_a_positioned_error(
    tmp_path: Path,
) -> None:
    example = load_agent_config(ROOT / "packaging" / "systemd" / "agent.yaml.example", {})
    assert example.label_namespace == "maas" and example.node_name == "gpu-01"
    bad = tmp_path / "agent.yaml"
    bad.write_text("node_name: n\nlabel_namespace: Team_A\n")
    with pytest.raises(MaasError) as caught:
        load_agent_config(bad, {})
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.render().startswith(f"{bad}:2:18: error: ")
    assert load_agent_config(bad, {"label_namespace": "team-a"}).label_namespace == "team-a"
    with pytest.raises(MaasError) as caught:  # a bad flag is the flag's fault, not the file's
        load_agent_config(
            ROOT / "packaging" / "systemd" / "agent.yaml.example", {"label_namespace": "A B"}
        )
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.position is None
    assert "'label_namespace' (from the command line): 'A B' is not a label namespace" in (
        diagnostic.message
    )
