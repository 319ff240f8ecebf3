"""The `maas-gateway` process and its route source: exposure refusal, key commands, systemd
notification, SIGTERM, and polling a status API on a real unix socket."""

from __future__ import annotations

import asyncio
import configparser
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from aiohttp import web

from maas.gateway.keys import hash_key
from maas.gateway.source import AgentRouteSource
from support.gateway import asynctest, deployment, free_port, status
from support.paths import ROOT


def gateway_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "maas.gateway.main", *args]


def run(*args: str, stdin: str = "", tmp: Path) -> subprocess.CompletedProcess[str]:
    config = tmp / "gateway.yaml"
    if not config.exists():
        config.write_text("{}\n")
    return subprocess.run(
        gateway_command("--config", str(config), *args),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_refuses_to_listen_beyond_localhost_without_keys(tmp_path: Path) -> None:
    result = run("--host", "0.0.0.0", "--keys-file", str(tmp_path / "none"), tmp=tmp_path)
    assert result.returncode == 1
    assert "refusing to listen on 0.0.0.0 without API keys" in result.stderr
    assert "--allow-unauthenticated-remote" in result.stderr


def test_key_commands(tmp_path: Path) -> None:
    keys = tmp_path / "gateway.keys"
    made = run("key", "new", "--keys-file", str(keys), "--name", "alice", tmp=tmp_path)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("sk-maas-")
    assert keys.read_text() == f"{hash_key(key)} alice\n"
    assert keys.stat().st_mode & 0o777 == 0o640
    assert key not in keys.read_text()
    hashed = run("key", "hash", stdin=key + "\n", tmp=tmp_path)
    assert hashed.stdout.strip() == hash_key(key)


def test_bad_config_is_a_diagnostic(tmp_path: Path) -> None:
    (tmp_path / "gateway.yaml").write_text("port: many\n")
    result = run(tmp=tmp_path)
    assert result.returncode == 1
    assert "gateway.yaml:1:7: error:" in result.stderr
    assert "Traceback" not in result.stderr


def test_serves_notifies_systemd_and_stops_on_sigterm(tmp_path: Path) -> None:
    notify = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify))
    listener.settimeout(30)
    port = free_port()
    log = tmp_path / "gateway.log"
    (tmp_path / "gateway.yaml").write_text(json.dumps({"port": port, "poll_interval_s": 0.2}))
    with log.open("wb") as out:
        process = subprocess.Popen(
            gateway_command(
                "--config",
                str(tmp_path / "gateway.yaml"),
                "--agent-socket",
                str(tmp_path / "no-agent.sock"),
                "--keys-file",
                str(tmp_path / "none"),
            ),
            env={**os.environ, "NOTIFY_SOCKET": str(notify), "WATCHDOG_USEC": "600000"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        messages = listener.recv(4096).decode()
        assert "READY=1" in messages and f"listening on 127.0.0.1:{port}" in messages
        assert "WATCHDOG=1" in listener.recv(4096).decode()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5) as r:
            assert json.load(r) == {"object": "list", "data": []}  # no agent: no models yet
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert any("STOPPING=1" in listener.recv(4096).decode() for _ in range(5))
        assert '"event": "agent_unreachable"' in log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        listener.close()


@asynctest()
async def test_agent_route_source_polls_the_status_socket(tmp_path: Path) -> None:
    document: dict[str, Any] = status(deployment("a", [40001]))

    async def serve_status(request: web.Request) -> web.Response:
        return web.json_response(document)

    app = web.Application()
    app.add_routes([web.get("/v1/status", serve_status)])
    runner = web.AppRunner(app)
    await runner.setup()
    path = tmp_path / "agent.sock"
    await web.UnixSite(runner, str(path)).start()
    source = AgentRouteSource(path, upstream_host="127.0.0.1", interval_s=0.05)
    await source.start()
    try:
        assert list(source.table.routes) == ["a"] and source.healthy
        document = status(deployment("a", [40001]), deployment("b", [40002], ready=False))
        deadline = time.monotonic() + 5
        while "b" not in source.table.routes:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        assert source.table.routes["b"].ready == ()
        await runner.cleanup()  # the agent goes away: the last table stays in force
        await asyncio.sleep(0.2)
        assert source.healthy is False and set(source.table.routes) == {"a", "b"}
    finally:
        await source.close()
        await runner.cleanup()


UNIT = ROOT / "packaging" / "systemd" / "maas-gateway.service"


def test_unit_file() -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read(UNIT)
    service = parser["Service"]
    assert service["Type"] == "notify" and service["Restart"] == "on-failure"
    assert service["ExecStart"].split()[0].endswith("/maas-gateway")
    assert service["SupplementaryGroups"] == "maas"  # the agent's socket, not Docker's
    assert "docker" not in UNIT.read_text().split("[Service]")[1]
    assert "maas-agent.service" in parser["Unit"]["After"]
    assert float(service["TimeoutStopSec"].rstrip("s")) > 30  # streams drain for 30 s first


def _post_chat(port: int) -> tuple[int, dict[str, Any], str | None]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        data=json.dumps({"model": "a", "messages": []}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.load(response), None
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc), exc.headers.get("Retry-After")


def test_unreachable_agent_is_503_and_a_later_agent_is_found(tmp_path: Path) -> None:
    """No --agent-socket: the gateway follows MAAS_AGENT_SOCKET, answers 503 agent_unreachable
    (not 404 model_not_found) while nothing listens there, and finds the agent once it starts."""
    port = free_port()
    sock = tmp_path / "later.sock"
    (tmp_path / "gateway.yaml").write_text(json.dumps({"port": port, "poll_interval_s": 0.1}))
    log = tmp_path / "gateway.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            gateway_command(
                "--config", str(tmp_path / "gateway.yaml"), "--keys-file", str(tmp_path / "none")
            ),
            env={**os.environ, "MAAS_AGENT_SOCKET": str(sock)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    document = json.dumps(status(deployment("a", [1], ready=False)))
    agent = subprocess.Popen([sys.executable, "-c", _STATUS_SERVER, str(sock), document])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                code, body, retry_after = _post_chat(port)
                break
            except urllib.error.URLError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        assert code == 503, body
        assert body["error"]["code"] == "agent_unreachable"
        assert str(sock) in body["error"]["message"] and retry_after
        # The agent comes up: the model is known (its replica is not ready: 503 model_not_ready).
        (sock.parent / "go").touch()
        deadline = time.monotonic() + 30
        while body["error"]["code"] == "agent_unreachable":
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
            code, body, _ = _post_chat(port)
        assert code == 503 and body["error"]["code"] == "model_not_ready", body
    finally:
        for child in (process, agent):
            child.terminate()
            child.wait(timeout=30)


# A stand-in for the agent's status API (the gateway only reads GET /v1/status): it binds its
# socket once the test creates `go` beside it.
_STATUS_SERVER = """
import pathlib, sys, time
from aiohttp import web
sock, document = sys.argv[1], sys.argv[2]
while not (pathlib.Path(sock).parent / "go").exists():
    time.sleep(0.05)
async def status(request):
    return web.Response(text=document, content_type="application/json")
app = web.Application()
app.add_routes([web.get("/v1/status", status)])
web.run_app(app, path=sock, print=None)
"""
