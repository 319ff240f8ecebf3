"""Progress where a person waits, read from real work: a pull from a real registry on loopback
(Debian's docker-registry), a model download through huggingface_hub from a local server laid out
like the hub, and startup against its budget; drawn as plain lines (not a TTY) and as rich bars
(a pseudo-terminal)."""

from __future__ import annotations

import os
import pty
import secrets
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from maas.host.engine import Engine
from maas.host.progress import PullProgress
from support.agent import AgentProcess, web_spec
from support.gguf_factory import write_tiny_llama
from support.hubserver import COMMIT, Faults, local_hub

pytestmark = pytest.mark.slow


def test_pull_progress_from_a_real_registry(
    tmp_path: Path, registry: str, engine_ready: None
) -> None:
    """An image with a layer of 4 MiB of random bytes, pushed, removed here, pulled back."""
    image = f"{registry}/maas-test/random:{secrets.token_hex(4)}"
    root = tmp_path / "root"
    root.mkdir()
    (root / "blob").write_bytes(secrets.token_bytes(4 * 1024 * 1024))
    with tarfile.open(tmp_path / "rootfs.tar", "w") as tar:
        tar.add(root, arcname=".")
    subprocess.run(
        ["docker", "import", str(tmp_path / "rootfs.tar"), image], check=True, capture_output=True
    )
    subprocess.run(["docker", "push", image], check=True, capture_output=True)
    subprocess.run(["docker", "rmi", image], check=True, capture_output=True)
    events: list[dict[str, Any]] = []
    engine = Engine()
    try:
        engine.pull(image, events.append)
    finally:
        subprocess.run(["docker", "rmi", image], check=False, capture_output=True)
    fold = PullProgress()
    partial = []
    for event in events:
        fold.event(event)
        partial.append((fold.progress.done, fold.progress.total))
    assert any(e.get("status") == "Downloading" for e in events)
    done, total = fold.progress.done, fold.progress.total
    assert total is not None and 4 * 1024 * 1024 <= total < 5 * 1024 * 1024  # gzipped random
    assert done == total and fold.progress.note == "1/1 layers"
    assert all(d <= (t or d) for d, t in partial)


@pytest.mark.parametrize("source", ["huggingface", "modelscope"])
def test_download_progress_in_status(tmp_path: Path, busybox: str, source: str) -> None:
    hub = tmp_path / "hub"
    (hub / "org" / "tiny-GGUF").mkdir(parents=True)
    model = write_tiny_llama(hub / "org" / "tiny-GGUF" / "tiny.gguf")
    size = model.stat().st_size
    with local_hub(hub, chunk_delay_s=0.1) as endpoint:  # ~4.5 s for 11 MiB
        (tmp_path / "agent").mkdir()
        agent = AgentProcess(tmp_path / "agent")
        agent.start(
            env={
                "HF_ENDPOINT": endpoint,
                "MODELSCOPE_ENDPOINT": endpoint,
                "HF_HUB_DISABLE_TELEMETRY": "1",
            }
        )
        try:
            spec = (
                "apiVersion: maas/v1\nkind: Deployment\nmetadata: {name: hub}\nspec:\n"
                f"  source: {source}\n  repo_id: org/tiny-GGUF\n  file: tiny.gguf\n"
                f"  image: {busybox}\n  allow_cpu_offload: true\n"
            )
            assert agent.apply("hub", spec, wait=False).returncode == 0
            seen: list[dict[str, Any]] = []
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                (d,) = agent.status()["deployments"]
                if d["progress_bar"] and d["progress_bar"]["what"] == "download":
                    seen.append(d["progress_bar"])
                    text = agent.ctl("status").stdout
                    if "hub: downloading" in text:
                        break
                time.sleep(0.1)
            assert seen, "no download progress seen"
            assert seen[-1]["total"] == size and seen[-1]["unit"] == "B"
            line = next(x for x in text.splitlines() if x.startswith("hub: downloading"))
            assert f"of {size / 2**20:.1f} MiB" in line and "files" in line
            agent.wait_for(
                lambda: agent.status()["deployments"][0]["state"] != "downloading",
                timeout=60,
                what="the download to end",
            )
            (cached,) = (tmp_path / "agent" / "cache").rglob("tiny.gguf")
            assert cached.stat().st_size == size
            # One folder per pinned revision, and status tells whose it is.
            assert cached.parent.name == COMMIT and cached.parent.parent.parent.name == "org"
            text = agent.ctl("status").stdout
            assert f"{source}:org/tiny-GGUF  {COMMIT[:12]}" in text and "  hub" in text
        finally:
            agent.cleanup()


def _in_a_terminal(args: list[str], env: dict[str, str]) -> str:
    main, sub = pty.openpty()
    process = subprocess.Popen(args, stdin=sub, stdout=sub, stderr=sub, env=env)
    os.close(sub)
    chunks = []
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    process.wait(timeout=60)
    os.close(main)
    return b"".join(chunks).decode(errors="replace")


def test_startup_progress_plain_and_on_a_terminal(agent: AgentProcess, busybox: str) -> None:
    slow = '[/bin/sh, -c, "sleep 6; exec /bin/busybox httpd -f -p {{port}} -h /www"]'
    budget = "  health: {path: /health, startup_timeout_s: 60}\n"
    spec = web_spec("slow", busybox, command=slow).replace("  health: {path: /health}\n", budget)
    result = agent.apply("slow", spec)
    assert result.returncode == 0, result.stderr
    assert "progress: slow starting" in result.stderr and "of 60 s budget" in result.stderr
    assert "\x1b[" not in result.stderr  # plain lines when not a terminal
    agent.apply("slower", spec.replace("slow", "slower").replace("sleep 6", "sleep 30"), wait=False)
    agent.wait_for(
        lambda: any(
            d["name"] == "slower" and d["progress_bar"] for d in agent.status()["deployments"]
        ),
        what="slower starting",
    )
    env = {**os.environ, "MAAS_AGENT_SOCKET": str(agent.socket), "TERM": "xterm", "COLUMNS": "120"}
    env.pop("NO_COLOR", None)
    drawn = _in_a_terminal([sys.executable, "-m", "maas.cli.main", "status"], env)
    assert "slower" in drawn and "of 60 s budget" in drawn
    assert "━" in drawn  # rich's bar
    plain = agent.ctl("status").stdout
    assert "━" not in plain and "slower: starting" in plain
    json_status = agent.ctl("status", "-o", "json").stdout
    assert '"what": "startup"' in json_status and "━" not in json_status


def test_a_download_cut_by_kill_9_resumes_after_the_restart(tmp_path: Path, busybox: str) -> None:
    hub = tmp_path / "hub"
    (hub / "org" / "tiny-GGUF").mkdir(parents=True)
    model = write_tiny_llama(hub / "org" / "tiny-GGUF" / "tiny.gguf")
    size = model.stat().st_size
    faults = Faults()
    with local_hub(hub, chunk_delay_s=0.1, faults=faults) as endpoint:
        (tmp_path / "agent").mkdir()
        agent = AgentProcess(tmp_path / "agent")
        env = {"MODELSCOPE_ENDPOINT": endpoint}
        agent.start(env=env)
        try:
            spec = (
                "apiVersion: maas/v1\nkind: Deployment\nmetadata: {name: hub}\nspec:\n"
                "  source: modelscope\n  repo_id: org/tiny-GGUF\n  file: tiny.gguf\n"
                f"  image: {busybox}\n  allow_cpu_offload: true\n"
            )
            assert agent.apply("hub", spec, wait=False).returncode == 0

            def halfway() -> bool:
                bar = agent.status()["deployments"][0]["progress_bar"]
                return bool(bar and bar["what"] == "download" and bar["done"] > size / 3)

            agent.wait_for(halfway, timeout=60, what="a third of the download")
            agent.kill()  # SIGKILL: no clean-up of any kind
            (part,) = (tmp_path / "agent" / "cache").rglob("tiny.gguf.part")
            kept = part.stat().st_size
            assert 0 < kept < size
            agent.start(env=env)
            agent.wait_for(
                lambda: agent.status()["deployments"][0]["state"] not in ("pending", "downloading"),
                timeout=60,
                what="the download to end",
            )
            (cached,) = (tmp_path / "agent" / "cache").rglob("tiny.gguf")
            assert cached.read_bytes() == model.read_bytes()
            resumed = [r for n, r in faults.ranges if n == "tiny.gguf" and r.endswith("-")]
            assert resumed[-1] == f"bytes={kept}-", faults.ranges  # from the byte it had
        finally:
            agent.cleanup()
