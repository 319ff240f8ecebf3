"""How maasctl and maas-gateway find the agent's socket: flag, environment, run directory,
system socket (maas.host.discovery), with real unix sockets on disk."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from maas.host.discovery import SYSTEM_SOCKET, agent_socket, checkout_root
from support.paths import ROOT


@contextmanager
def listening(path: Path) -> Iterator[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))
        yield path


def test_order_flag_environment_run_directory_system(tmp_path: Path) -> None:
    cwd = tmp_path / "work"
    cwd.mkdir()
    empty = tmp_path / "empty"
    empty.mkdir()
    # Nothing in the run directories (this test may run inside a checkout with an agent running).
    no_run = {"MAAS_RUN_DIR": str(empty)}
    with listening(cwd / ".run" / "agent.sock") as local:
        assert agent_socket("/x.sock", {"MAAS_AGENT_SOCKET": "/y.sock"}, cwd) == Path("/x.sock")
        assert agent_socket(None, {"MAAS_AGENT_SOCKET": "/y.sock"}, cwd) == Path("/y.sock")
        assert agent_socket(None, {}, cwd) == local
        with listening(tmp_path / "elsewhere" / "agent.sock") as moved:
            assert agent_socket(None, {"MAAS_RUN_DIR": str(moved.parent)}, cwd) == moved
    # A leftover file that is not a socket is not an agent.
    (empty / "agent.sock").write_text("")
    found = agent_socket(None, no_run, empty)
    root = checkout_root()
    assert found == SYSTEM_SOCKET or (root is not None and found == root / ".run" / "agent.sock")


def test_checkout_root_is_this_checkout() -> None:
    assert checkout_root() == ROOT


def test_maasctl_finds_the_run_directory_and_says_where_it_looked(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "MAAS_RUN_DIR": str(tmp_path / "run")}
    with listening(tmp_path / "run" / "agent.sock") as path:
        result = subprocess.run(
            [sys.executable, "-m", "maas.cli.main", "status"],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=60,
            check=False,
        )
    # The socket listens but nobody accepts: the error names the socket found in the run dir.
    assert str(path) in result.stderr, result.stderr
    usage = subprocess.run(
        [sys.executable, "-m", "maas.cli.main", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    flat = " ".join(usage.split())
    assert "--socket; $MAAS_AGENT_SOCKET; $MAAS_RUN_DIR/agent.sock, .run/agent.sock" in flat
    assert "/run/maas/agent.sock" in flat
