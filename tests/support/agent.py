"""Helpers: a real `maas-agent` process against the real Docker engine, one node name per test.

Containers are labelled with the test's node name and removed by that label afterwards, so tests
never touch anything else on the engine.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any


def docker_available() -> bool:
    try:
        return (
            subprocess.run(
                ["docker", "info"], capture_output=True, timeout=20, check=False
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


NODE_PROFILE = """apiVersion: maas/v1
kind: Node
metadata: {{name: {name}, labels: {{os: linux, arch: amd64}}}}
spec:
  cpu: {{cores: 2, threads: 2}}
  memory: {{total_bytes: 8589934592}}
"""


def web_spec(
    name: str,
    image: str,
    *,
    replicas: int = 1,
    extra: str = "",
    command: str = '[/bin/busybox, httpd, -f, -p, "{{port}}", -h, /www]',
) -> str:
    return (
        f"apiVersion: maas/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n"
        f"  source: huggingface\n  repo_id: org/{name}\n  backend: custom\n"
        f"  image: {image}\n  command: {command}\n  health: {{path: /health}}\n"
        f"  allow_cpu_offload: true\n  replicas: {replicas}\n{extra}"
    )


_PORT_BASES = itertools.cycle(random.sample(range(20000, 32000, 100), 120))


class AgentProcess:
    def __init__(
        self, tmp: Path, config: dict[str, Any] | None = None, *, node: str | None = None
    ) -> None:
        self.node = node or f"t{uuid.uuid4().hex[:8]}"
        self.dir = tmp
        self.socket = tmp / "agent.sock"
        (tmp / "node.yaml").write_text(NODE_PROFILE.format(name=self.node))
        settings = {
            "node_name": self.node,
            "state_dir": str(tmp / "state"),
            "socket": str(self.socket),
            "cache_dir": str(tmp / "cache"),
            "secrets_dir": str(tmp / "secrets"),
            "node_file": str(tmp / "node.yaml"),
            "metrics_port": 0,
            "resync_s": 2,
            "stop_timeout_s": 1,
            "socket_group": None,
            # Agents share the host (within a run and across concurrent runs): each gets its own
            # ports, below the kernel's ephemeral range, where no outgoing connection holds one.
            "port_range": [base := next(_PORT_BASES), base + 99],
        }
        settings.update(config or {})
        self.namespace = str(settings.get("label_namespace", "maas"))
        self.config = tmp / "agent.yaml"
        self.config.write_text(json.dumps(settings))
        self.process: subprocess.Popen[bytes] | None = None
        self.log = tmp / "agent.log"

    def start(self, env: dict[str, str] | None = None) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "maas.agent.daemon", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.socket.exists() and self.ctl("status", "-o", "json").returncode == 0:
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"agent did not start:\n{self.log.read_text()}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"the agent ignored signal {sig} for 30 s") from None

    def kill_signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def ctl(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "maas.cli.main", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={**os.environ, "MAAS_AGENT_SOCKET": str(self.socket)},
        )

    def apply(self, name: str, text: str, *, wait: bool = True) -> subprocess.CompletedProcess[str]:
        path = self.dir / f"{name}.yaml"
        path.write_text(text)
        args = ["apply", str(path), "-y"] + (["--wait", "--timeout", "60"] if wait else [])
        return self.ctl(*args)

    def status(self) -> dict[str, Any]:
        result = self.ctl("status", "-o", "json")
        assert result.returncode == 0, result.stderr
        value: dict[str, Any] = json.loads(result.stdout)
        return value

    def status_now(self) -> dict[str, Any]:
        """`GET /v1/status` from this process (no maasctl start-up): for loops that must see
        states lasting about a second."""
        from maas.compiler import parse_status

        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(30)
            sock.connect(str(self.socket))
            sock.sendall(b"GET /v1/status HTTP/1.0\r\nHost: agent\r\n\r\n")
            response = b"".join(iter(lambda: sock.recv(1 << 16), b""))
        head, _, body = response.partition(b"\r\n\r\n")
        assert head.split(b" ", 2)[1] == b"200", head
        return parse_status(json.loads(body)).document()

    def containers(self, *, all_states: bool = True) -> list[dict[str, str]]:
        args = [
            "docker",
            "ps",
            "--filter",
            f"label={self.namespace}.node={self.node}",
            "--format",
            "{{json .}}",
        ] + (["-a"] if all_states else [])
        out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
        found = [json.loads(line) for line in out.splitlines()]
        # Replicas only: the network sandboxes of on-demand replicas are not (sandboxes()).
        return [c for c in found if f"{self.namespace}.role=" not in c.get("Labels", "")]

    def sandboxes(self) -> list[dict[str, str]]:
        args = ["docker", "ps", "-a", "--filter", f"label={self.namespace}.node={self.node}"]
        args += ["--filter", f"label={self.namespace}.role=sandbox", "--format", "{{json .}}"]
        out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
        return [json.loads(line) for line in out.splitlines()]

    def wait_for(self, predicate: Any, timeout: float = 30, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}\n{self.log.read_text()[-3000:]}")

    def cleanup(self) -> None:
        try:
            self.kill(signal.SIGTERM)
        finally:
            self.remove_containers()

    def remove_containers(self) -> None:
        ids = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label={self.namespace}.node={self.node}"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        # A few at a time: dockerd 20.10 has deadlocked here on a hundred simultaneous exits.
        for batch in range(0, len(ids), 8):
            subprocess.run(
                ["docker", "rm", "-f", *ids[batch : batch + 8]], capture_output=True, check=False
            )
