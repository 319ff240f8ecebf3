"""A small client for the agent's JSON API over its unix socket (stdlib http.client)."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from maas.compiler import Diagnostic, MaasError, Position
from maas.host.discovery import ORDER, agent_socket

if TYPE_CHECKING:
    from maas.compiler import NodeStatus


class NoAgent(MaasError):
    """No agent answers on the socket."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.path)
        self.sock = sock


def socket_path(flag: str | None) -> str:
    """The agent's socket: see maas.host.discovery for the order (flag, environment, the local
    run directory, the system socket)."""
    return str(agent_socket(flag))


class AgentClient:
    def __init__(self, path: str, timeout: float = 600) -> None:
        self.path = path
        self.timeout = timeout

    def _open(self, method: str, route: str, body: Any = None) -> http.client.HTTPResponse:
        connection = _UnixConnection(self.path, self.timeout)
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        try:
            connection.request(method, route, body=payload, headers=headers)
            return connection.getresponse()
        except PermissionError as exc:
            raise MaasError(
                [
                    Diagnostic(
                        "socket-permission",
                        f"not allowed to use the agent's socket {self.path}",
                        Position(self.path),
                        hints=(
                            "the socket admits root and its group (maas by default): "
                            "sudo usermod -aG maas $USER, then log in again",
                        ),
                    )
                ]
            ) from exc
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise NoAgent(
                [
                    Diagnostic(
                        "no-agent",
                        f"no agent answers on {self.path} ({exc.strerror})",
                        Position(self.path),
                        hints=(
                            "start it: `bash scripts/run.sh` in the checkout, "
                            "or systemctl start maas-agent",
                            ORDER,
                        ),
                    )
                ],
                retryable=True,
            ) from exc

    def call(self, method: str, route: str, body: Any = None) -> Any:
        response = self._open(method, route, body)
        data = response.read()
        try:
            value = json.loads(data) if data else None
        except json.JSONDecodeError:
            value = {"error": data.decode(errors="replace")}
        if response.status >= 400:
            raise _error(response.status, value)
        return value

    def status(self) -> NodeStatus:
        """`GET /v1/status`, parsed with the status contract (a clear error if it does not fit)."""
        from maas.compiler import parse_status

        return parse_status(self.call("GET", "/v1/status"), f"the agent's status at {self.path}")

    def stream(self, route: str) -> Iterator[bytes]:
        response = self._open("GET", route)
        if response.status >= 400:
            raise _error(response.status, json.loads(response.read() or b"{}"))
        while chunk := response.read1(65536):
            yield chunk


def _error(status: int, value: Any) -> MaasError:
    diagnostics = []
    for d in (value or {}).get("diagnostics", []):
        position = (
            Position(d["file"], d.get("line") or 0, d.get("col") or 0) if d.get("file") else None
        )
        diagnostics.append(
            Diagnostic(
                d["code"],
                d["message"],
                position,
                d.get("severity", "error"),
                tuple(d.get("hints", [])),
            )
        )
    if not diagnostics:
        message = (value or {}).get("error") or f"HTTP {status}"
        diagnostics.append(Diagnostic("agent", f"the agent refused: {message}"))
    return MaasError(diagnostics, retryable=status >= 500)
