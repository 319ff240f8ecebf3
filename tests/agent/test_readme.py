"""The README's quick start, executed: `bash scripts/run.sh` in one terminal, the commands of the
second terminal in another, from the checkout, word for word.

Only what keeps this run apart from others on the same host and engine changes: the run
directory (MAAS_RUN_DIR, so `.run/` in a command means that folder), the gateway's and the
metrics' ports, and the agent's settings file written there first (a node name of its own, a port
range of its own). `maasctl` and the gateway find the agent by themselves: MAAS_AGENT_SOCKET is
unset.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from support.agent import AgentProcess
from support.paths import ROOT

pytestmark = pytest.mark.slow


def quick_start() -> tuple[list[str], list[str]]:
    """The commands of the quick start's two console blocks: terminal 1, then terminal 2."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```console\n(.*?)```", section, re.S)
    assert len(blocks) == 2, "the quick start has one block per terminal"
    first, second = (
        [line[2:] for line in block.splitlines() if line.startswith("$ ")] for block in blocks
    )
    return first, second


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_quick_start_commands_are_what_a_newcomer_types() -> None:
    first, second = quick_start()
    assert first == ["bash scripts/run.sh"]
    assert second[0] == ". .venv/bin/activate"
    assert any(c.startswith("curl") and "/v1/chat/completions" in c for c in second)
    assert not any("MAAS_AGENT_SOCKET" in c or "--socket" in c for c in first + second)


def test_readme_quick_start_runs_as_written(tmp_path: Path, engine_ready: None) -> None:
    first, second = quick_start()
    run_dir = tmp_path / "run"
    (run_dir / "models").mkdir(parents=True)
    # The agent's settings as run.sh writes them, plus what keeps this run apart.
    helper = AgentProcess(tmp_path)
    settings = json.loads(helper.config.read_text())
    settings.pop("node_file")
    settings.pop("socket")
    settings.update(
        {
            "secrets_dir": str(run_dir / "secrets"),
            "policy": {"allowed_mount_roots": [str(run_dir / "models")]},
        }
    )
    (run_dir / "agent.yaml").write_text(json.dumps(settings))
    gateway_port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MAAS_AGENT_SOCKET"}
    env.update(
        MAAS_RUN_DIR=str(run_dir),
        MAAS_GATEWAY_PORT=str(gateway_port),
        MAAS_METRICS_PORT="0",
        NO_COLOR="1",
    )
    log = tmp_path / "terminal1.log"
    with log.open("wb") as out:
        terminal1 = subprocess.Popen(
            ["bash", "-c", first[0]],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 300
        while not (run_dir / "agent.sock").exists():
            assert terminal1.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        script = ["set -euo pipefail"]
        for typed in second:
            command = typed.replace(".run/", "$MAAS_RUN_DIR/").replace(
                "127.0.0.1:8080", f"127.0.0.1:{gateway_port}"
            )
            script += [f"echo {shlex.quote('### ' + typed)}", command, "echo"]
        terminal2 = subprocess.run(
            ["bash", "-c", "\n".join(script)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        output = terminal2.stdout + terminal2.stderr
        assert terminal2.returncode == 0, output + log.read_text()[-3000:]
        answers = {
            typed: answer
            for typed, _, answer in (
                part.partition("\n") for part in terminal2.stdout.split("### ")[1:]
            )
        }
        chat = next(v for k, v in answers.items() if "/v1/chat/completions" in k)
        completion = json.loads(chat)
        assert completion.get("object") == "chat.completion", chat
        assert completion["usage"]["completion_tokens"] > 0
        models = next(v for k, v in answers.items() if k.endswith("/v1/models"))
        assert [m["id"] for m in json.loads(models)["data"]] == ["tiny-llama"]
    finally:
        # Ctrl-C in terminal 1: the whole foreground group gets SIGINT; both processes stop.
        if terminal1.poll() is None:
            os.killpg(terminal1.pid, signal.SIGINT)
        try:
            terminal1.wait(timeout=60)
        finally:
            helper.remove_containers()
    text = log.read_text()
    assert '"event": "listening"' in text, text[-2000:]
    assert terminal1.returncode in (0, 130), text[-2000:]
    leftover = subprocess.run(
        ["pgrep", "-f", str(run_dir / "agent.yaml")], capture_output=True, text=True, check=False
    )
    assert leftover.stdout == "", "the agent outlived Ctrl-C"
