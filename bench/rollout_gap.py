"""Benchmark: the serving gap of a one-replica change when image and model are already present
(goal: the backend's own load time plus at most 1 s).

A real agent process, a real `maas-gateway` process (status polled every 0.2 s) and a
one-replica llama.cpp deployment (tests/support/images.py, a tiny GGUF). A client sends chat
requests through the gateway back to back while the spec changes (an env value, so only the
container is replaced); the gap is the longest time between two successful answers during the
change (refused or failed requests in between count as gap, a request that waits counts as gap
too). Side by side, the backend's own load time: `docker run` of the very same image, argv and
mounts as the agent's container (read back with `docker inspect`), until its /health answers 200,
polled every 20 ms. Medians of N each, alternated.

    python bench/rollout_gap.py [--runs 5]
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support.agent import AgentProcess  # noqa: E402
from support.gateway import free_port  # noqa: E402
from support.gguf_factory import write_tiny_llama  # noqa: E402
from support.images import llama_server_image  # noqa: E402

GOAL_EXTRA_S = 1.0
CHAT = {"model": "tiny", "max_tokens": 2, "messages": [{"role": "user", "content": "Hi"}]}


def spec(image: str, model: Path, version: int) -> str:
    return (
        "apiVersion: maas/v1\nkind: Deployment\nmetadata: {name: tiny}\nspec:\n"
        f"  source: local_path\n  path: {model}\n  image: {image}\n"
        "  context_length: 256\n  parallel: 1\n  allow_cpu_offload: true\n"
        f"  health: {{startup_timeout_s: 60}}\n  env: {{VERSION: '{version}'}}\n"
    )


def chat(port: int) -> bool:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        data=json.dumps(CHAT).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return bool(response.status == 200 and json.load(response)["choices"])
    except (OSError, ValueError, KeyError):
        return False


def gap_of_change(agent: AgentProcess, port: int, text: str) -> tuple[float, int, float]:
    """The longest time between two successful answers while the change rolls, how many
    requests failed meanwhile, and when the longest gap began (seconds after the apply)."""
    (before,) = agent.status()["deployments"][0]["containers"]
    answers: list[float] = []
    failed = 0
    stop = threading.Event()

    def client() -> None:
        nonlocal failed
        while not stop.is_set():
            if chat(port):
                answers.append(time.monotonic())
            else:
                failed += 1
                time.sleep(0.01)

    thread = threading.Thread(target=client)
    thread.start()
    try:
        time.sleep(0.5)
        applied = time.monotonic()
        assert agent.apply("tiny", text, wait=False).returncode == 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            (d,) = agent.status()["deployments"]
            if d["ready_replicas"] == 1 and d["containers"][0]["id"] != before["id"]:
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("the change did not roll in 120 s")
        settled = time.monotonic()
        while time.monotonic() < settled + 5 and (not answers or answers[-1] < settled):
            time.sleep(0.05)
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join()
    gaps = [(b - a, a - applied) for a, b in itertools.pairwise(answers)]
    gap, began = max(gaps)
    return gap, failed, began


def own_load(container_id: str) -> float:
    """Seconds from `docker run` of the agent's container's image, argv and mounts to the first
    200 of its /health."""
    (info,) = json.loads(
        subprocess.run(
            ["docker", "inspect", container_id], capture_output=True, text=True, check=True
        ).stdout
    )
    port = free_port()
    name = f"maas-bench-gap-{uuid.uuid4().hex[:8]}"
    mounts = [
        f"--mount=type=bind,src={m['Source']},dst={m['Destination']},readonly"
        for m in info["Mounts"]
        if m["Type"] == "bind"
    ]
    entry = info["Config"].get("Entrypoint") or []
    args = info["Args"] if entry else info["Config"]["Cmd"]
    inner = next(int(p.split("/")[0]) for p in info["Config"].get("ExposedPorts") or {"8080": 0})
    env = [f"--env={e}" for e in info["Config"].get("Env") or [] if not e.startswith("PATH=")]
    start = time.monotonic()
    subprocess.run(
        [
            *("docker", "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:{inner}"),
            *mounts,
            *env,
            info["Config"]["Image"],
            *args,
        ],
        capture_output=True,
        check=True,
    )
    try:
        while time.monotonic() < start + 120:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                    if r.status == 200:
                        return time.monotonic() - start
            except (OSError, urllib.error.HTTPError):
                pass
            time.sleep(0.02)
        raise RuntimeError("the backend did not load in 120 s")
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--drain-s", type=float, default=0.5, help="the agent's drain_s (the gateway polls 0.2 s)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the agent's folder and log")
    args = parser.parse_args()
    image = llama_server_image()
    work = Path(tempfile.mkdtemp(prefix="maas-bench-gap-"))
    models = work / "models"
    models.mkdir()
    model = write_tiny_llama(models / "tiny.gguf")
    (work / "agent").mkdir()
    settings = {"policy": {"allowed_mount_roots": [str(models)]}, "drain_s": args.drain_s}
    agent = AgentProcess(work / "agent", settings)
    agent.start()
    config = work / "gateway.yaml"
    port = free_port()
    config.write_text(json.dumps({"port": port, "poll_interval_s": 0.2}))
    gateway = subprocess.Popen(
        [
            *(sys.executable, "-m", "maas.gateway.main", "--config", str(config)),
            *("--agent-socket", str(agent.socket), "--keys-file", str(work / "no-keys")),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        done = agent.apply("tiny", spec(image, model, 0))
        assert done.returncode == 0, done.stdout + done.stderr
        deadline = time.monotonic() + 60
        while not chat(port):
            assert time.monotonic() < deadline, "the gateway does not serve"
            time.sleep(0.2)
        gaps, loads, failures, began = [], [], [], []
        for run in range(1, args.runs + 1):
            (container,) = agent.status()["deployments"][0]["containers"]
            full = subprocess.run(
                ["docker", "inspect", "-f", "{{.Id}}", container["id"]],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            loads.append(own_load(full))
            gap, failed, at = gap_of_change(agent, port, spec(image, model, run))
            gaps.append(gap)
            failures.append(failed)
            began.append(at)
        return report(gaps, loads, failures, began)
    finally:
        gateway.terminate()
        gateway.wait(timeout=60)
        agent.cleanup()
        if "--keep" not in sys.argv[1:]:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(work)


def report(gaps: list[float], loads: list[float], failures: list[int], began: list[float]) -> int:
    gap, load = statistics.median(gaps), statistics.median(loads)
    print(f"one-replica change, llama.cpp tiny GGUF, image and model present, {len(gaps)} runs")
    print(f"  serving gap through the gateway: median {gap:.2f} s  (runs {fmt(gaps)} s)")
    print(f"  requests refused or failed per change: {failures}")
    print(f"  the longest gap began after the apply (maasctl's start-up included): {fmt(began)} s")
    print(
        f"  backend's own load (docker run -> /health 200): median {load:.2f} s"
        f"  (runs {fmt(loads)} s)"
    )
    extras = [g - f for g, f in zip(gaps, loads, strict=True)]
    extra = statistics.median(extras)
    print(f"  gap - load per run (each change beside its own load): {fmt(extras)} s")
    verdict = "met" if extra <= GOAL_EXTRA_S else "NOT met"
    print(
        f"  gap - load, median of the runs: {extra:+.2f} s"
        f"  (goal: at most +{GOAL_EXTRA_S:.1f} s): {verdict}"
    )
    return 0 if extra <= GOAL_EXTRA_S else 1


def fmt(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


if __name__ == "__main__":
    sys.exit(main())
