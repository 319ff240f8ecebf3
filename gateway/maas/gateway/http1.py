"""HTTP/1.1 messages as the front writes them (RFC 9112): a client's request as httptools parses
it, how a response body is framed towards the client, and the bytes of the gateway's own answers.
Parsing is httptools'; this module only decides framing and writes status lines, header lines
and chunk sizes. Pure: no sockets.
"""

from __future__ import annotations

import contextlib
import email.utils
import functools
from collections.abc import Callable
from http import HTTPStatus

from maas.gateway import errors

MAX_HEAD_BYTES = 64 * 1024
# A refused request's body up to this size is read (and dropped), to keep the connection.
DISCARD_BYTES = 64 * 1024
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
LAST_CHUNK = b"0\r\n\r\n"

# How a response body is framed towards the client.
LENGTH, CHUNKED, UNTIL_CLOSE, NO_BODY = range(4)


class Request:
    """One client request as it is parsed; its body either collects in `body` or, once the
    request is relayed as it arrives, goes to `sink`."""

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_size = 0
        self.method = b""
        self.keep_alive = True
        self.http10 = False
        self.complete = False
        self.body: list[bytes] = []
        self.size = 0
        self.limit = 0  # > 0: the body is held, up to this size
        self.sink: Callable[[bytes], None] | None = None
        self.on_complete: Callable[[], None] | None = None
        self.upgrade = False

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def path(self) -> bytes:
        return self.url.partition(b"?")[0]

    def small_body(self) -> bool:
        """Whether the body is known to be small enough to read and drop (DISCARD_BYTES)."""
        length = self.header(b"content-length")
        if self.header(b"transfer-encoding") is not None:
            return False
        return length is None or (length.isdigit() and int(length) <= DISCARD_BYTES)


def discard(chunk: bytes) -> None:
    """The sink of a body that goes nowhere."""


def framing(request: Request, status: int, headers: list[tuple[bytes, bytes]]) -> tuple[int, bool]:
    """How the response's body goes to the client, and whether the replica ends it by closing
    the connection (no length, not chunked)."""
    if request.method == b"HEAD" or status in (204, 304):
        return NO_BODY, False
    has_length = False
    chunked = False
    for name, value in headers:
        lower = name.lower()
        if lower == b"content-length":
            has_length = True
        elif lower == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
    if has_length and not chunked:
        return LENGTH, False
    return (UNTIL_CLOSE if request.http10 else CHUNKED), not chunked


def phrase(status: int) -> bytes:
    with contextlib.suppress(ValueError):
        return HTTPStatus(status).phrase.encode()
    return b"Unknown"


def answer(reply: errors.Reply, keep_alive: bool) -> bytes:
    """The whole response for the gateway's own JSON answer."""
    head = [
        b"HTTP/1.1 %d %s\r\n" % (reply.status, phrase(reply.status)),
        b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(reply.body),
        b"Date: " + email.utils.formatdate(usegmt=True).encode() + b"\r\n",
    ]
    head += [f"{name}: {value}\r\n".encode("latin-1") for name, value in reply.headers.items()]
    if not keep_alive:
        head.append(b"Connection: close\r\n")
    head.append(b"\r\n")
    return b"".join(head) + reply.body


@functools.lru_cache(maxsize=4096)
def address(url: str) -> tuple[bytes, tuple[str, int]]:
    """`http://host:port` -> the Host header value and the address to connect to."""
    host_port = url.removeprefix("http://").rstrip("/")
    host, _, port = host_port.rpartition(":")
    return host_port.encode(), (host.strip("[]"), int(port))
