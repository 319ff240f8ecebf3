"""Fault injection with the real agent and the real Docker engine; prints a markdown report.

1. kill -9 the agent at a random moment while it applies 20 deployments, restart it, and check
   that exactly 20 containers run: no duplicates, no orphans (N runs).
2. An image that cannot be pulled, a backend that crashes on start, and a port already taken by
   a foreign process: each must end in a reported state with the reason, retried with back-off,
   not in a tight loop.
3. dockerd restarted while the agent converges 20 deployments: converged again within 30 s.
4. 100 deployments applied and deleted in a loop (10 minutes): no leaked containers, files,
   descriptors, threads or memory growth in the agent.

    python bench/reliability/faults.py [--runs 30] [--churn-s 600] > bench/results/reliability-D.md

Scenario 3 restarts this host's dockerd (systemctl when it runs under systemd, else a kill and a
fresh `dockerd`), so run it on a test machine only.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "agent")]

from maas.cli.client import AgentClient  # noqa: E402
from support.agent import AgentProcess, web_spec  # noqa: E402
from support.images import busybox_image  # noqa: E402


@contextmanager
def applying_20(image: str) -> Iterator[AgentProcess]:
    """A fresh agent that has just been given 20 deployments (it is converging)."""
    with tempfile.TemporaryDirectory() as tmp:
        agent = AgentProcess(Path(tmp))
        agent.start()
        try:
            specs = "---\n".join(web_spec(f"m{i:02d}", image) for i in range(20))
            (Path(tmp) / "all.yaml").write_text(specs)
            agent.ctl("apply", str(Path(tmp) / "all.yaml"), "-y")
            yield agent
        finally:
            agent.cleanup()


def kill_during_apply(image: str, runs: int) -> list[str]:
    rows = []
    for run in range(runs):
        with applying_20(image) as agent:
            delay = random.uniform(0.0, 1.5)
            time.sleep(delay)
            before = len(agent.containers())
            agent.kill(signal.SIGKILL)
            agent.start()
            agent.wait_for(
                lambda a=agent: sum(1 for c in a.containers() if c["State"] == "running") >= 20,
                timeout=90,
                what="convergence",
            )
            time.sleep(1)
            names = Counter(c["Names"] for c in agent.containers())
            tasks = agent.status()["tasks"]
            ok = (
                len(names) == 20
                and max(names.values()) == 1
                and all(t["alive"] for t in tasks.values())
            )
            rows.append(
                f"| {run + 1} | {delay:.2f} | {before} | {sum(names.values())} | "
                f"{'ok' if ok else 'FAIL'} |"
            )
    return rows


def stuck_states(image: str) -> list[str]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        agent = AgentProcess(Path(tmp))
        agent.start()
        blocker = socket.socket()
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            agent.apply("nopull", web_spec("nopull", "registry.invalid/none/such:1"), wait=False)
            crash = web_spec("crash", image, command="[/bin/sh, -c, 'echo no model; exit 3']")
            agent.apply("crash", crash, wait=False)
            agent.apply("probe", web_spec("probe", image))
            taken = agent.status()["deployments"]
            port = next(c["port"] for d in taken if d["name"] == "probe" for c in d["containers"])
            agent.ctl("delete", "probe", "--wait")
            blocker.bind(("127.0.0.1", port))
            blocker.listen()
            agent.apply("probe", web_spec("probe", image), wait=False)
            time.sleep(40)
            for d in agent.status()["deployments"]:
                failures = sum(
                    1
                    for line in agent.log.read_text().splitlines()
                    if any(f'"event": "{e}"' in line for e in ("action failed", "replica crashed"))
                    and f'"deployment": "{d["name"]}"' in line
                )
                rows.append(
                    f"| {d['name']} | {d['state']} | {d['last_error']} | "
                    f"{failures} failures in 40 s |"
                )
        finally:
            blocker.close()
            agent.cleanup()
    return rows


def converged(agent: AgentProcess, count: int) -> bool:
    try:
        deployments = agent.status()["deployments"]
    except (AssertionError, ValueError):
        return False  # the agent is busy or the engine is away: not yet
    ready = sum(d["ready_replicas"] for d in deployments)
    return len(deployments) == count and ready == count and len(agent.containers()) == count


def alive(pid: int) -> bool:
    """Running, not a zombie: a dockerd started with setsid may have no parent that reaps it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def restart_dockerd() -> float:
    """Restart the engine; the seconds it was away."""
    started = time.monotonic()
    if (
        shutil.which("systemctl")
        and subprocess.run(["systemctl", "is-active", "--quiet", "docker"], check=False).returncode
        == 0
    ):
        subprocess.run(["systemctl", "restart", "docker"], check=True)
    else:
        pid = int(
            subprocess.run(
                ["pidof", "dockerd"], capture_output=True, text=True, check=True
            ).stdout.split()[0]
        )
        os.kill(pid, signal.SIGTERM)
        while alive(pid):
            time.sleep(0.1)
        with open("/var/log/maas-dockerd.log", "ab") as log:
            subprocess.Popen(["dockerd"], stdout=log, stderr=log, start_new_session=True)
    while subprocess.run(["docker", "info"], capture_output=True, check=False).returncode != 0:
        time.sleep(0.2)
    return time.monotonic() - started


def dockerd_restart(image: str, runs: int) -> list[str]:
    rows = []
    for run in range(runs):
        with applying_20(image) as agent:
            time.sleep(random.uniform(0.5, 3.0))  # somewhere inside the converging pass
            before = sum(1 for c in agent.containers() if c["State"] == "running")
            away = restart_dockerd()
            back = time.monotonic()
            agent.wait_for(lambda a=agent: converged(a, 20), timeout=120, what="convergence")
            took = time.monotonic() - back
            names = {c["Names"] for c in agent.containers()}
            agent_alive = agent.process is not None and agent.process.poll() is None
            tasks = agent.status()["tasks"]  # every long-running task survived the engine's loss
            up = sum(1 for t in tasks.values() if t["alive"])
            failed = sum(t["failures"] for t in tasks.values())
            ok = took <= 30 and len(names) == 20 and agent_alive and up == len(tasks)
            rows.append(
                f"| {run + 1} | {before} | {away:.1f} | {took:.1f} | {len(names)} | "
                f"{up}/{len(tasks)} | {failed} | {'ok' if ok else 'FAIL'} |"
            )
    return rows


def agent_usage(agent: AgentProcess) -> tuple[int, int, int]:
    """RSS in KiB, open descriptors and threads of the agent process."""
    assert agent.process is not None
    proc = Path(f"/proc/{agent.process.pid}")
    fields = dict(
        line.split(":", 1) for line in (proc / "status").read_text().splitlines() if ":" in line
    )
    rss = int(fields["VmRSS"].split()[0])
    return rss, len(list((proc / "fd").iterdir())), int(fields["Threads"])


def churn(image: str, seconds: float) -> list[str]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        agent = AgentProcess(Path(tmp), {"resync_s": 30})
        agent.start()
        client = AgentClient(str(agent.socket))
        names = [f"c{i:03d}" for i in range(100)]
        sources = {f"{tmp}/churn.yaml": "---\n".join(web_spec(n, image) for n in names)}
        deadline = time.monotonic() + seconds
        cycle = 0
        try:
            while time.monotonic() < deadline or cycle < 2:
                cycle += 1
                started = time.monotonic()
                client.call("POST", "/v1/apply", {"sources": sources})
                agent.wait_for(lambda: converged(agent, 100), timeout=300, what="100 running")
                up = time.monotonic() - started
                for name in names:
                    client.call("DELETE", f"/v1/deployments/{name}")
                agent.wait_for(lambda: not agent.containers(), timeout=300, what="all removed")
                time.sleep(1)  # let the pass that removed them finish
                rss, fds, threads = agent_usage(agent)
                files = sum(1 for p in (Path(tmp) / "state").rglob("*") if p.is_file())
                rows.append(
                    f"| {cycle} | {up:.1f} | {time.monotonic() - started - up:.1f} | "
                    f"{len(agent.containers())} | {files} | {rss / 1024:.1f} | {fds} | {threads} |"
                )
        finally:
            agent.cleanup()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--restarts", type=int, default=5, help="dockerd restart runs")
    parser.add_argument("--churn-s", type=float, default=600.0)
    parser.add_argument("--only", choices=("kill", "stuck", "dockerd", "churn"))
    args = parser.parse_args()
    image = busybox_image()
    wanted = {args.only} if args.only else {"kill", "stuck", "dockerd", "churn"}
    print(f"# Reliability under faults ({time.strftime('%Y-%m-%d')}, 2-core VM, Docker 20.10)\n")
    print(f"`python bench/reliability/faults.py {' '.join(sys.argv[1:])}`\n".replace(" `", "`"))
    if "kill" in wanted:
        print("## kill -9 of the agent while it applies 20 deployments\n")
        print("| run | kill after s | containers at kill | containers after restart | result |")
        print("| --- | --- | --- | --- | --- |")
        rows = kill_during_apply(image, args.runs)
        print("\n".join(rows))
        print(
            f"\n{passed(rows)} runs ended with exactly 20 containers, no duplicates, no orphans.\n"
        )
    if "stuck" in wanted:
        print("## An unpullable image, a backend that crashes on start, a port taken\n")
        print("| deployment | state | last error | failures (back-off 0, 10, 20 s...) |")
        print("| --- | --- | --- | --- |")
        print("\n".join(stuck_states(image)) + "\n")
    if "dockerd" in wanted:
        print("## dockerd restarted while the agent converges 20 deployments (goal: 30 s)\n")
        print(
            "| run | running at restart | engine away s | converged after s | containers "
            "| tasks alive | failed passes | result |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        rows = dockerd_restart(image, args.restarts)
        print("\n".join(rows))
        print(f"\n{passed(rows)} runs converged within 30 s of the engine's return.\n")
    if "churn" in wanted:
        print(f"## 100 deployments applied and deleted in a loop for {args.churn_s:.0f} s\n")
        print("| cycle | up s | down s | left | state files | RSS MiB | fds | threads |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        print("\n".join(churn(image, args.churn_s)))


def passed(rows: list[str]) -> str:
    return f"{sum(1 for r in rows if 'FAIL' not in r)}/{len(rows)}"


if __name__ == "__main__":
    main()
