"""Fault injection with the real agent and the real Docker engine; prints a markdown report.

1. kill -9 the agent at a random moment while it applies 20 deployments, restart it, and check
   that exactly 20 containers run: no duplicates, no orphans (N runs).
2. An image that cannot be pulled, and a port already taken by a foreign process: each must end
   in a reported state with the reason, retried with back-off, not in a tight loop.

    python bench/reliability/faults.py [--runs 30] > bench/results/reliability-DATE.md
"""

from __future__ import annotations

import argparse
import random
import signal
import socket
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "agent")]

from tests_agent_support import AgentProcess, web_spec  # noqa: E402

from support.images import busybox_image  # noqa: E402


def kill_during_apply(image: str, runs: int) -> list[str]:
    rows = []
    for run in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            agent = AgentProcess(Path(tmp))
            agent.start()
            try:
                specs = "---\n".join(web_spec(f"m{i:02d}", image) for i in range(20))
                (Path(tmp) / "all.yaml").write_text(specs)
                agent.ctl("apply", str(Path(tmp) / "all.yaml"), "-y")
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
                ok = len(names) == 20 and max(names.values()) == 1
                rows.append(
                    f"| {run + 1} | {delay:.2f} | {before} | {sum(names.values())} | "
                    f"{'ok' if ok else 'FAIL'} |"
                )
            finally:
                agent.cleanup()
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
            agent.apply("probe", web_spec("probe", image))
            taken = agent.status()["deployments"]
            port = next(c["port"] for d in taken if d["name"] == "probe" for c in d["containers"])
            agent.ctl("delete", "probe", "--wait")
            blocker.bind(("127.0.0.1", port))
            blocker.listen()
            agent.apply("probe", web_spec("probe", image), wait=False)
            time.sleep(40)
            for d in agent.status()["deployments"]:
                starts = sum(
                    1
                    for line in agent.log.read_text().splitlines()
                    if '"action"' in line and f'"deployment": "{d["name"]}"' in line
                )
                rows.append(
                    f"| {d['name']} | {d['state']} | {d['last_error']} | "
                    f"{starts} attempts in 40 s |"
                )
        finally:
            blocker.close()
            agent.cleanup()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    image = busybox_image()
    print(f"# Reliability under faults ({time.strftime('%Y-%m-%d')}, 2-core VM, Docker 20.10)\n")
    print("## kill -9 of the agent while it applies 20 deployments\n")
    print("| run | kill after s | containers at kill | containers after restart | result |")
    print("| --- | --- | --- | --- | --- |")
    rows = kill_during_apply(image, args.runs)
    print("\n".join(rows))
    failed = sum(1 for r in rows if "FAIL" in r)
    print(
        f"\n{len(rows) - failed}/{len(rows)} runs ended with exactly 20 containers, "
        "no duplicates and no orphans.\n"
    )
    print("## An unpullable image and a port taken by a foreign process\n")
    print("| deployment | state | last error | attempts |")
    print("| --- | --- | --- | --- |")
    print("\n".join(stuck_states(image)))


if __name__ == "__main__":
    main()
