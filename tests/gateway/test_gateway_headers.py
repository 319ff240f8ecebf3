"""The one header policy both relays follow: what travels on to a replica, what comes back, and
the X-Forwarded-For the gateway adds (end to end in test_gateway_http.py and _front.py)."""

from __future__ import annotations

from maas.gateway.headers import request_headers, request_lines, response_headers, response_lines

CLIENT = [
    ("Host", "gw"),
    ("Authorization", "Bearer sk-maas-secret"),
    ("Connection", "keep-alive, X-Custom"),
    ("Keep-Alive", "timeout=5"),
    ("TE", "trailers"),
    ("Transfer-Encoding", "chunked"),
    ("Upgrade", "websocket"),
    ("Proxy-Authorization", "Basic x"),
    ("Expect", "100-continue"),
    ("Content-Length", "12"),
    ("Content-Type", "application/json"),
    ("X-Forwarded-For", "10.0.0.1"),
    ("Accept", "text/event-stream"),
]
REPLICA = [
    ("Content-Type", "text/event-stream"),
    ("Transfer-Encoding", "chunked"),
    ("Connection", "keep-alive"),
    ("Keep-Alive", "timeout=5"),
    ("Trailer", "X-Checksum"),
    ("X-Request-Id", "42"),
]


def names_of(lines: list[bytes]) -> dict[str, str]:
    """Header-line pieces -> {name: value}, as the replica would parse them."""
    text = b"".join(lines).decode()
    pairs = (line.partition(": ") for line in text.split("\r\n") if line)
    return {name: value for name, _, value in pairs}


def test_both_relays_forward_the_same_request_headers_but_the_length() -> None:
    front = names_of(request_lines([(k.encode(), v.encode()) for k, v in CLIENT], b"127.0.0.2"))
    aiohttp = dict(request_headers(dict(CLIENT), "127.0.0.2"))
    assert front == {
        "Content-Type": "application/json",
        "Accept": "text/event-stream",
        "X-Forwarded-For": "10.0.0.1, 127.0.0.2",
    }
    # The front frames the body itself; aiohttp's relay passes the client's length on.
    assert aiohttp == {**front, "Content-Length": "12"}


def test_the_front_side_of_the_socket_pair_names_the_client_once() -> None:
    assert dict(request_headers({"X-Forwarded-For": "10.0.0.1"}, ""))["X-Forwarded-For"] == (
        "10.0.0.1"
    )


def test_both_relays_return_the_same_response_headers() -> None:
    front = names_of(response_lines([(k.encode(), v.encode()) for k, v in REPLICA]))
    aiohttp = dict(response_headers(dict(REPLICA)))
    assert front == aiohttp == {"Content-Type": "text/event-stream", "X-Request-Id": "42"}
