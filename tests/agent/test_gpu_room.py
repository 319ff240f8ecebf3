"""GPU room: a real container's processes are told apart from foreign ones through their cgroup,
and a plan that no longer fits beside a foreign process holds its replicas back with the reason.
NVML's per-process readings are the one fake (no GPU here); they have the shape the H200 gave
(bench/results/gpu-node-plan-raw.json)."""

from __future__ import annotations

import os
import subprocess
import uuid

from maas.compiler import compile_plan, load_sources
from maas.host.gpuroom import ForeignProcess, blocked, split_processes
from maas.host.probe import _in_containers

GIB = 1 << 30
NODE = """apiVersion: maas/v1
kind: Node
metadata: {name: n}
spec:
  cpu: {cores: 8, threads: 8}
  memory: {total_bytes: 68719476736}
  gpus:
    - {index: 0, uuid: GPU-0, name: G, memory_total_bytes: 25769803776}
"""
SPEC = """apiVersion: maas/v1
kind: Deployment
metadata: {name: web}
spec:
  source: huggingface
  repo_id: a/b
  backend: custom
  image: example/web:1
  command: "--port {{port}}"
  resources: {gpu_memory_bytes: 10737418240}
"""


def test_a_containers_processes_are_its_own_and_others_are_foreign(busybox: str) -> None:
    name = f"maas-test-room-{uuid.uuid4().hex[:8]}"
    cid = subprocess.run(
        ["docker", "run", "-d", "--name", name, busybox, "sleep", "60"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    try:
        pid = int(
            subprocess.run(
                ["docker", "inspect", "-f", "{{.State.Pid}}", cid],
                check=True, capture_output=True, text=True,
            ).stdout
        )  # fmt: skip
        assert _in_containers(pid, [cid])
        assert not _in_containers(pid, ["0" * 64])
        assert not _in_containers(os.getpid(), [cid])  # this test is not in the container
        gpus = [
            {"uuid": "GPU-0", "index": 0,
             "processes": [{"pid": pid, "used_bytes": 5 * GIB},
                           {"pid": os.getpid(), "used_bytes": 3 * GIB},
                           {"pid": 1, "used_bytes": None}]},
        ]  # fmt: skip
        ours, foreign = split_processes(gpus, {pid}, {os.getpid(): "python"})
        assert ours == {"GPU-0": 5 * GIB}
        assert [(p.pid, p.name, p.used_bytes) for p in foreign] == [
            (os.getpid(), "python", 3 * GIB),
            (1, "?", 0),
        ]
    finally:
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True, check=False)


def test_a_plan_that_no_longer_fits_beside_a_foreign_process_waits() -> None:
    documents = load_sources({"node.yaml": NODE, "web.yaml": SPEC})
    node = documents.nodes[0].model
    plan = compile_plan(documents.deployments, node)
    assert plan.totals[0].allocated_bytes == 10 * GIB
    small = [ForeignProcess("GPU-0", 0, 4242, "python3", 8 * GIB)]
    assert blocked(plan, node, small, margin=GIB) == {}  # 24 - 8 - 1 = 15 GiB left: fits
    big = [ForeignProcess("GPU-0", 0, 4242, "python3", 14 * GIB)]
    (reason,) = blocked(plan, node, big, margin=GIB).values()
    assert "pid 4242 (python3) 14.0 GiB" in reason
    assert "the plan needs 10.0 GiB there and 9.0 GiB is left" in reason
