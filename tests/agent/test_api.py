"""The agent's unix-socket API under bad requests, its logs stream, SIGHUP reload, and `maasctl`
without an agent. A request may fail, but the agent must keep answering."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from maas.cli.client import AgentClient
from maas.compiler.diagnostics import MaasError
from support.agent import AgentProcess, web_spec


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=30)
        self.unix_path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.unix_path)


def request(agent: AgentProcess, method: str, route: str, body: bytes | None = None) -> Any:
    connection = UnixConnection(agent.socket)
    try:
        connection.request(method, route, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_bad_requests_get_json_errors_and_the_agent_survives(agent: AgentProcess) -> None:
    cases = [
        ("GET", "/v1/nothing-here", None, 404),
        ("POST", "/v1/apply", b"{not json", 400),
        ("POST", "/v1/apply", b"[1, 2]", 400),
        ("POST", "/v1/apply", b'{"sources": {"a.yaml": 3}}', 400),
        ("POST", "/v1/apply", b"x" * (9 * 1024 * 1024), 413),
        ("DELETE", "/v1/deployments/ghost", None, 404),
        ("GET", "/v1/logs/ghost?tail=oops", None, 400),
        ("GET", "/v1/logs/ghost", None, 404),
    ]
    for method, route, body, expected in cases:
        status, answer = request(agent, method, route, body)
        assert status == expected, (method, route, answer)
        assert answer["error"], answer
    bad_spec = {"sources": {"bad.yaml": "apiVersion: maas/v1\nkind: Deployment\nmetadata: {}\n"}}
    status, answer = request(agent, "POST", "/v1/apply", json.dumps(bad_spec).encode())
    assert status == 422 and answer["diagnostics"][0]["file"] == "bad.yaml"
    status, answer = request(agent, "GET", "/v1/status")
    assert status == 200 and answer["node"] == agent.node and answer["deployments"] == []


def test_invalid_spec_is_refused_by_maasctl_apply(agent: AgentProcess, busybox: str) -> None:
    result = agent.apply("web", web_spec("web", busybox, replicas=-1))
    assert result.returncode == 1
    assert "web.yaml" in result.stderr and "Traceback" not in result.stderr
    assert agent.containers() == []


def test_logs_tail_and_follow(agent: AgentProcess, busybox: str) -> None:
    command = (
        '[/bin/busybox, sh, -c, "echo hello-logs; exec /bin/busybox httpd -f -p {{port}} -h /www"]'
    )
    assert agent.apply("web", web_spec("web", busybox, command=command)).returncode == 0
    tail = agent.ctl("logs", "web", "--tail", "5")
    assert tail.returncode == 0 and "hello-logs" in tail.stdout
    with subprocess.Popen(
        [sys.executable, "-m", "maas.cli.main", "logs", "web", "-f"],
        stdout=subprocess.PIPE,
        env={**os.environ, "MAAS_AGENT_SOCKET": str(agent.socket)},
    ) as follow:
        try:
            assert follow.stdout is not None
            assert b"hello-logs" in follow.stdout.readline()
            assert follow.poll() is None  # still following
        finally:
            follow.kill()
    assert agent.status()["deployments"][0]["ready_replicas"] == 1


def test_sighup_reloads_config(agent: AgentProcess, busybox: str) -> None:
    settings = json.loads(agent.config.read_text())
    agent.config.write_text("port_range: [oops]\n")
    agent.kill_signal(signal.SIGHUP)
    agent.wait_for(lambda: "reload failed" in agent.log.read_text(), what="refused reload")
    settings["port_range"] = [19990, 19999]
    agent.config.write_text(json.dumps(settings))
    agent.kill_signal(signal.SIGHUP)
    agent.wait_for(lambda: "configuration reloaded" in agent.log.read_text(), what="reload")
    assert agent.apply("web", web_spec("web", busybox)).returncode == 0
    (web,) = agent.status()["deployments"]
    assert 19990 <= web["containers"][0]["port"] <= 19999


def test_maasctl_without_an_agent_says_how_to_start_one(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "maas.cli.main", "status", "--socket", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 69
    assert "no agent answers" in result.stderr and "maas-agent" in result.stderr


def test_metrics_and_applied_at(tmp_path: Path, busybox: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    agent = AgentProcess(tmp_path, {"metrics_port": port})
    agent.start()
    try:
        assert agent.apply("web", web_spec("web", busybox)).returncode == 0
        status = agent.status()
        assert status["applied_at"] > 0
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        metrics = text.decode()
        assert 'maas_agent_deployments{state="running"} 1.0' in metrics
        assert 'maas_agent_reconcile_passes_total{result="ok"}' in metrics
        assert 'maas_agent_actions_total{kind="create"} 1.0' in metrics
        assert "maas_agent_last_success_timestamp_seconds" in metrics
    finally:
        agent.cleanup()


def _connect_as(path: Path, uid: int, gid: int) -> int:
    """`maasctl`'s client from a forked child running as uid:gid; its exit status says how."""
    pid = os.fork()
    if pid == 0:  # the child: drop root, then try
        code = 1
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            AgentClient(str(path), timeout=10).call("GET", "/v1/status")
            code = 0
        except MaasError as exc:
            code = 13 if exc.diagnostics[0].code == "socket-permission" else 2
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_socket_admits_its_group_and_refuses_other_users(
    tmp_path: Path, engine_ready: None
) -> None:
    import grp
    import pwd
    import tempfile

    nobody = pwd.getpwnam("nobody")
    group = grp.getgrgid(nobody.pw_gid).gr_name
    other_gid = next(g.gr_gid for g in grp.getgrall() if g.gr_gid not in (0, nobody.pw_gid))
    run_dir = Path(tempfile.mkdtemp(prefix="maas-sock-"))
    run_dir.chmod(0o755)  # only the socket's own mode may decide
    agent = AgentProcess(tmp_path, {"socket": str(run_dir / "agent.sock"), "socket_group": group})
    agent.socket = run_dir / "agent.sock"
    agent.start()
    try:
        info = agent.socket.stat()
        assert info.st_mode & 0o777 == 0o660 and info.st_gid == nobody.pw_gid
        assert _connect_as(agent.socket, nobody.pw_uid, nobody.pw_gid) == 0
        assert _connect_as(agent.socket, nobody.pw_uid, other_gid) == 13
        assert agent.status()["deployments"] == []  # still answering
    finally:
        agent.cleanup()
        run_dir.rmdir()
