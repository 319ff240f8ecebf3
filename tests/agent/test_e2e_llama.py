"""End to end with a REAL backend: llama.cpp's llama-server (Debian sid) serving a tiny GGUF,
deployed by `maasctl apply` through the real agent, answering /v1/chat/completions."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from support.agent import AgentProcess
from support.gguf_factory import write_tiny_llama
from support.images import llama_server_image

pytestmark = pytest.mark.slow


def test_llama_box_deployment_answers_chat(tmp_path: Path, engine_ready: None) -> None:
    image = llama_server_image()
    models = tmp_path / "models"
    models.mkdir()
    model = write_tiny_llama(models / "tiny-llama.gguf")
    agent = AgentProcess(tmp_path, {"policy": {"allowed_mount_roots": [str(models)]}})
    agent.start()
    try:
        spec = (
            "apiVersion: maas/v1\nkind: Deployment\nmetadata: {name: tiny-llama}\nspec:\n"
            f"  source: local_path\n  path: {model}\n  image: {image}\n"
            "  context_length: 512\n  parallel: 2\n  allow_cpu_offload: true\n"
            "  health: {startup_timeout_s: 120}\n"
        )
        result = agent.apply("tiny", spec)
        assert result.returncode == 0, result.stderr + agent.log.read_text()[-2000:]
        (deployment,) = agent.status()["deployments"]
        assert deployment["backend"] == "llama-box" and deployment["state"] == "running"
        port = deployment["containers"][0]["port"]
        body = {
            "model": "tiny-llama",
            "max_tokens": 8,
            "messages": [{"role": "user", "content": "Hello"}],
        }
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.load(response)
        assert answer["object"] == "chat.completion"
        assert answer["choices"][0]["message"]["role"] == "assistant"
        assert answer["usage"]["completion_tokens"] > 0
        logs = agent.ctl("logs", "tiny-llama", "--tail", "400")
        assert logs.returncode == 0 and "llama" in logs.stdout + logs.stderr
        # the argv in the plan is the argv in the container, and llama-server took it as is
        plan = _agent_get(agent.socket, "/v1/plan")
        (planned,) = plan["deployments"]
        inspect = subprocess.run(
            ["docker", "inspect", deployment["containers"][0]["id"]],
            capture_output=True,
            text=True,
            check=True,
        )
        (container,) = json.loads(inspect.stdout)
        assert container["Args"] == planned["command"]
        command = " ".join(planned["command"])
        assert "--ctx-size 1024" in command and "--parallel 2" in command  # 2 slots of 512
        assert planned["command"][-2:] == ["--fit", "off"]
    finally:
        agent.cleanup()


def _agent_get(path: Path, route: str) -> Any:
    """GET a route of the agent's JSON API over its unix socket, closing the connection."""
    connection = http.client.HTTPConnection("localhost", timeout=30)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(path))
    connection.sock = sock
    try:
        connection.request("GET", route)
        return json.loads(connection.getresponse().read())
    finally:
        connection.close()
