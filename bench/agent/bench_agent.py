"""Agent benchmarks against the real Docker engine, side by side with docker-compose.

1. Converge 20 deployments from empty (until every port answers /health) vs
   `docker-compose up -d` of the same 20 containers (same readiness check). Goal <= 0.5x.
2. A no-op `maasctl apply` of 100 deployments once converged. Goal <= 0.2 s.
3. A killed container answering again. Goal <= 2 s.
4. The agent at rest: RSS and CPU share over 20 s. Goal <= 80 MB and 1% of a core.

    python bench/agent/bench_agent.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "agent")]

from maas.cli.client import AgentClient  # noqa: E402
from support.agent import AgentProcess, web_spec  # noqa: E402
from support.images import busybox_image  # noqa: E402


def wait_healthy(ports: list[int], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    pending = set(ports)
    while pending and time.monotonic() < deadline:
        for port in list(pending):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                    pending.discard(port)
            except OSError:
                pass
        time.sleep(0.02)
    if pending:
        raise SystemExit(f"ports never answered: {sorted(pending)}")


def compose_run(image: str, tmp: Path, count: int, base_port: int) -> float:
    services = "".join(
        f"  s{i}:\n    image: {image}\n"
        "    command: [/bin/busybox, httpd, -f, -p, '8080', -h, /www]\n"
        f"    ports: ['127.0.0.1:{base_port + i}:8080']\n"
        for i in range(count)
    )
    (tmp / "docker-compose.yml").write_text(f"version: '2.4'\nservices:\n{services}")
    start = time.perf_counter()
    subprocess.run(
        ["docker-compose", "-p", "maasbench", "up", "-d"], cwd=tmp, check=True, capture_output=True
    )
    wait_healthy([base_port + i for i in range(count)])
    elapsed = time.perf_counter() - start
    subprocess.run(
        ["docker-compose", "-p", "maasbench", "down", "-t", "1"],
        cwd=tmp,
        check=True,
        capture_output=True,
    )
    return elapsed


def ours_run(image: str, tmp: Path, count: int) -> tuple[float, AgentProcess]:
    agent = AgentProcess(tmp, {"resync_s": 30})
    agent.start()
    text = "---\n".join(web_spec(f"m{i:03d}", image) for i in range(count))
    (tmp / "all.yaml").write_text(text)
    start = time.perf_counter()
    done = agent.ctl("apply", str(tmp / "all.yaml"), "-y")
    assert done.returncode == 0, done.stderr
    # The ports are in the plan (as compose's are in its file): wait for them the same way.
    plan = AgentClient(str(agent.socket)).call("GET", "/v1/plan")
    wait_healthy([d["ports"][0] for d in plan["deployments"]])
    return time.perf_counter() - start, agent


def engine_floor(image: str, count: int, base_port: int) -> float:
    """The same containers created and started straight through docker-py, 8 at a time, with
    nothing else: what the engine itself needs on this machine."""
    import docker

    client = docker.from_env()
    run = uuid.uuid4().hex[:8]

    def one(i: int) -> None:
        port = base_port + i
        created = client.api.create_container(
            image,
            command=["/bin/busybox", "httpd", "-f", "-p", str(port), "-h", "/www"],
            labels={"maas-bench-floor": run},
            ports=[port],
            host_config=client.api.create_host_config(port_bindings={port: ("127.0.0.1", port)}),
        )
        client.api.start(created["Id"])

    try:
        start = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(one, range(count)))
        wait_healthy([base_port + i for i in range(count)])
        elapsed = time.perf_counter() - start
    finally:
        for container in client.containers.list(
            all=True, filters={"label": f"maas-bench-floor={run}"}
        ):
            container.remove(force=True)
    return elapsed


def main() -> None:
    image = busybox_image()
    with tempfile.TemporaryDirectory() as tmp:
        _, agent = ours_run(image, Path(tmp), 100)
        try:
            noop, api = [], []
            client = AgentClient(str(agent.socket))
            sources = {str(Path(tmp) / "all.yaml"): (Path(tmp) / "all.yaml").read_text()}
            for _ in range(5):
                start = time.perf_counter()
                done = agent.ctl("apply", str(Path(tmp) / "all.yaml"), "-y")
                noop.append(time.perf_counter() - start)
                assert "No changes." in done.stdout, (
                    done.stdout + done.stderr + agent.log.read_text()[-4000:]
                )
                start = time.perf_counter()
                answer = client.call("POST", "/v1/apply", {"sources": sources})
                api.append(time.perf_counter() - start)
                assert all(a["kind"] == "noop" for a in answer["actions"])
            pass_s = agent.status()["last_pass"]["duration_s"]
            print(
                f"no-op apply of 100 deployments: maasctl apply {statistics.median(noop):.3f} s "
                f"(process start included), API round trip {statistics.median(api):.3f} s, "
                f"reconcile pass {pass_s * 1000:.1f} ms (goal <= 0.2 s)"
            )
            back = []
            for i in range(3):  # a different replica each time: each has its own back-off
                port = agent.status()["deployments"][i]["containers"][0]["port"]
                name = f"maas-{agent.node}-m{i:03d}-0"
                start = time.perf_counter()
                subprocess.run(["docker", "kill", name], check=True, capture_output=True)
                time.sleep(0.05)  # the port answers until the process is gone
                wait_healthy([port], timeout=30)
                back.append(time.perf_counter() - start)
            print(
                f"killed container answering again: {', '.join(f'{b:.2f}' for b in back)} s "
                "(goal <= 2 s)"
            )
            assert agent.process is not None
            pid = agent.process.pid
            time.sleep(5)
            ticks0 = _ticks(pid)
            time.sleep(20)
            cpu = (_ticks(pid) - ticks0) / 100 / 20 * 100
            rss = _rss_mb(pid)
            print(
                f"agent at rest with 100 deployments: RSS {rss:.1f} MB, CPU {cpu:.2f}% of a "
                f"core (goal <= 80 MB, <= 1%)"
            )
        finally:
            agent.cleanup()

    runs = 3
    ours, theirs, floor = [], [], []
    for _ in range(runs):
        floor.append(engine_floor(image, 20, 40200))
        with tempfile.TemporaryDirectory() as tmp:
            theirs.append(compose_run(image, Path(tmp), 20, 40100))
        with tempfile.TemporaryDirectory() as tmp:
            elapsed, agent = ours_run(image, Path(tmp), 20)
            ours.append(elapsed)
            agent.cleanup()
    ratio = statistics.median(ours) / statistics.median(theirs)
    print(
        f"converge 20 from empty: maas {statistics.median(ours):.2f} s, docker-compose up -d "
        f"{statistics.median(theirs):.2f} s, ratio {ratio:.2f}x (goal <= 0.5x); the engine alone "
        f"(docker-py, 8 in parallel) {statistics.median(floor):.2f} s"
    )


def _ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


if __name__ == "__main__":
    main()
