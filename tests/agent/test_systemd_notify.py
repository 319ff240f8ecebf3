"""The real maas-agent speaks systemd's notify protocol to a socket this test listens on."""

from __future__ import annotations

import configparser
import socket
import time
from pathlib import Path

from support.agent import AgentProcess
from support.paths import ROOT

UNIT = ROOT / "packaging" / "systemd" / "maas-agent.service"


def test_ready_status_watchdog_and_stopping(tmp_path: Path, busybox: str) -> None:
    address = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(address)
    listener.settimeout(0.5)
    agent = AgentProcess(tmp_path, {"resync_s": 600})  # pings must follow the watchdog period
    messages: list[str] = []
    try:
        agent.start(env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "2000000"})
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and messages.count("WATCHDOG=1") < 3:
            try:
                messages.append(listener.recv(4096).decode())
            except TimeoutError:
                continue
        agent.kill(15)
        while True:
            try:
                messages.append(listener.recv(4096).decode())
            except TimeoutError:
                break
    finally:
        agent.cleanup()
        listener.close()
    ready = [m for m in messages if "READY=1" in m]
    assert len(ready) == 1 and "STATUS=0/0 replicas ready" in ready[0]
    assert messages.count("WATCHDOG=1") >= 3
    assert messages[-1] == "STOPPING=1"


def test_unit_file_is_type_notify_with_state_dirs() -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read(UNIT)
    service = parser["Service"]
    assert service["Type"] == "notify" and service["Restart"] == "on-failure"
    for key in ("StateDirectory", "RuntimeDirectory", "ConfigurationDirectory", "WatchdogSec"):
        assert service[key]
    assert "PrivateDevices" not in service  # GPUs (/dev/nvidia*) must stay reachable
