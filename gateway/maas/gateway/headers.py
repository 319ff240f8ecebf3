"""The gateway's header policy, for both relays (the front's protocol-level one and the aiohttp
application's): which headers travel on to a replica, which come back to the client, and what the
gateway adds (X-Forwarded-For). One list of names, in the two spellings the relays work in
(bytes for the front, str for aiohttp).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from multidict import CIMultiDict

# Per-connection headers (RFC 9110 7.6.1): they describe one hop, never the next.
_HOP_BY_HOP = (
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
)
# The gateway names the replica's host itself, its credentials never travel on, and an
# `Expect: 100-continue` was the gateway's to answer (it reads the body itself).
_NOT_FORWARDED = (*_HOP_BY_HOP, "host", "authorization", "expect")
# The front frames every body it sends itself, so the client's length goes too.
_REFRAMED = (*_NOT_FORWARDED, "content-length")
FORWARDED_FOR = "X-Forwarded-For"

HOP_BY_HOP = frozenset(_HOP_BY_HOP)
NOT_FORWARDED = frozenset(_NOT_FORWARDED)
HOP_BY_HOP_BYTES = frozenset(name.encode() for name in _HOP_BY_HOP)
REFRAMED_BYTES = frozenset(name.encode() for name in _REFRAMED)
_FORWARDED_FOR_BYTES = FORWARDED_FOR.lower().encode()


# --- the front: raw header lines --------------------------------------------------------------


def request_lines(headers: Iterable[tuple[bytes, bytes]], peer: bytes) -> list[bytes]:
    """The client's headers that travel on, as header-line pieces, with the client (`peer`)
    appended to X-Forwarded-For; the caller adds Host and the body's framing."""
    lines: list[bytes] = []
    forwarded: list[bytes] = []
    for name, value in headers:
        lower = name.lower()
        if lower == _FORWARDED_FOR_BYTES:
            forwarded.append(value)
        elif lower not in REFRAMED_BYTES:
            lines += (name, b": ", value, b"\r\n")
    forwarded.append(peer)
    lines += (b"X-Forwarded-For: ", b", ".join(forwarded), b"\r\n")
    return lines


def response_lines(headers: Iterable[tuple[bytes, bytes]]) -> list[bytes]:
    """The replica's headers that go back to the client, as header-line pieces; the caller adds
    the framing and Connection of its own hop."""
    lines: list[bytes] = []
    for name, value in headers:
        if name.lower() not in HOP_BY_HOP_BYTES:
            lines += (name, b": ", value, b"\r\n")
    return lines


# --- the aiohttp application's relay ----------------------------------------------------------


def request_headers(headers: Mapping[str, str], peer: str) -> CIMultiDict[str]:
    """The client's headers that travel on; X-Forwarded-For gains `peer` when there is one (none
    on the front's socket pair: the front named the client already)."""
    kept = CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in NOT_FORWARDED)
    if peer:
        forwarded = headers.get(FORWARDED_FOR)
        kept[FORWARDED_FOR] = f"{forwarded}, {peer}" if forwarded else peer
    return kept


def response_headers(headers: Mapping[str, str]) -> CIMultiDict[str]:
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in HOP_BY_HOP)
