"""Benchmark: `maasctl plan REPO --base REV` on a repository of 500 deployments and 50 nodes.

Builds a real git repository in a temp dir (base commit, then a head commit that changes 10
deployments, adds 5 and removes 5), runs the real CLI several times and prints the median wall
time against the goal (2 s). The peer for scale is `git diff --stat` of the same two revisions,
which only compares the files, run side by side.

    python bench/plan_repo.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_S = 2.0


def node(i: int) -> str:
    gpus = "".join(
        f"    - {{index: {g}, uuid: GPU-{i:03d}-{g}, name: NVIDIA L40S, "
        f"memory_total_bytes: 48305799168}}\n"
        for g in range(i % 4 + 1)
    )
    return (
        f"apiVersion: maas/v1\nkind: Node\nmetadata:\n  name: node-{i:03d}\n"
        f"  labels: {{arch: amd64, zone: z{i % 3}}}\nspec:\n  cpu: {{cores: 32, threads: 64}}\n"
        f"  memory: {{total_bytes: 274877906944}}\n  gpus:\n{gpus}"
    )


def deployment(i: int, image_tag: int = 1) -> str:
    return (
        f"apiVersion: maas/v1\nkind: Deployment\nmetadata:\n  name: model-{i:04d}\n"
        f"  labels: {{team: t{i % 7}}}\nspec:\n  source: huggingface\n"
        f"  repo_id: org/model-{i:04d}\n  backend: custom\n"
        f"  image: example/server:{image_tag}\n"
        f'  command: "--model-id org/model-{i:04d} --port {{{{port}}}}"\n'
        f"  replicas: {1 + i % 2}\n  worker_selector: {{zone: z{i % 3}}}\n"
    )


def git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(root), "-c", "user.email=b@example.com", "-c", "user.name=bench", *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def build(root: Path) -> None:
    (root / "nodes").mkdir(parents=True)
    (root / "deployments").mkdir()
    git(root, "init", "-q")
    for i in range(50):
        (root / "nodes" / f"node-{i:03d}.yaml").write_text(node(i))
    for i in range(500):
        (root / "deployments" / f"model-{i:04d}.yaml").write_text(deployment(i))
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "base")
    for i in range(10):
        (root / "deployments" / f"model-{i:04d}.yaml").write_text(deployment(i, image_tag=2))
    for i in range(500, 505):
        (root / "deployments" / f"model-{i:04d}.yaml").write_text(deployment(i))
    for i in range(495, 500):
        (root / "deployments" / f"model-{i:04d}.yaml").unlink()
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "head")


def timed(argv: list[str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode not in (0, 2):
        sys.exit(f"{argv} failed: {done.stderr}")
    return elapsed, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "repo"
        build(root)
        ours_cmd = [
            sys.executable,
            "-m",
            "maas.cli.main",
            "plan",
            ".",
            "--base",
            "HEAD~1",
            "--head",
            "HEAD",
        ]
        peer_cmd = ["git", "diff", "--stat", "HEAD~1", "HEAD"]
        ours, peer = [], []
        summary = ""
        for _ in range(args.runs):
            elapsed, out = timed(ours_cmd, root)
            ours.append(elapsed)
            summary = out.strip().splitlines()[-1]
            peer.append(timed(peer_cmd, root)[0])
    median = statistics.median(ours)
    print(f"repository: 500 deployments (+5 -5 ~10), 50 nodes; runs: {args.runs}")
    print(f"maasctl plan --base: median {median:.3f} s (min {min(ours):.3f}, max {max(ours):.3f})")
    print(f"git diff --stat:     median {statistics.median(peer):.3f} s")
    print(f"plan output: {summary}")
    print(f"goal <= {GOAL_S:.1f} s: {'met' if median <= GOAL_S else 'MISSED'}")


if __name__ == "__main__":
    main()
