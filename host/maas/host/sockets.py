"""Whether something on this host listens on, or is connected to, a TCP address and port, read
from the kernel's socket table (psutil) instead of by connecting.

A llama.cpp RPC worker serves one client at a time with a listen backlog of 1 (ggml-rpc's
`start_server` accepts the next client only when the current one leaves; transport.cpp calls
`listen(sockfd, 1)`): while its primary is connected, every probe connection waits in that
backlog, and once it is full a connect times out though the worker is well. Its own node asks
the socket table instead.
"""

from __future__ import annotations

from typing import Any

import psutil

ANY = ("0.0.0.0", "::", "")


def listening(address: str, port: int) -> bool:
    """True when a socket in the host's network namespace listens on `address:port` (or on that
    port of every address)."""
    return any(
        s.status == psutil.CONN_LISTEN
        and s.laddr
        and s.laddr.port == port
        and (s.laddr.ip == address or s.laddr.ip in ANY)
        for s in _tcp()
    )


def connected(address: str, port: int) -> bool:
    """True when a socket of this host holds an established connection to `address:port`: a
    running primary's link to its worker (llama.cpp's RPC client keeps one per worker), which
    the kernel takes out of ESTABLISHED when the worker's end closes or resets."""
    return any(
        s.status == psutil.CONN_ESTABLISHED
        and s.raddr
        and s.raddr.port == port
        and s.raddr.ip == address
        for s in _tcp()
    )


def _tcp() -> list[Any]:
    """The host's TCP sockets; none where they cannot be read (which answers False)."""
    try:
        return list(psutil.net_connections(kind="tcp"))
    except (psutil.AccessDenied, OSError):
        return []
