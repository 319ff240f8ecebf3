"""The gateway's admission decision on plain values: a request's facts, the key ring, the route
table and the limit -> refuse / delegate / serve, table by table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from maas.gateway.admission import DELEGATE, Facts, Refuse, Serve, admit, admit_model
from maas.gateway.keys import KeyRing, hash_key
from maas.gateway.routing import Replica, Route, RouteTable

KEY = "sk-maas-admission-test"
GOOD = f"Bearer {KEY}"
LIMIT = 1000
CHAT = "/v1/chat/completions"


@pytest.fixture
def keys(tmp_path: Path) -> KeyRing:
    path = tmp_path / "gateway.keys"
    path.write_text(hash_key(KEY) + " alice\n")
    return KeyRing(path)


def refusal(status: int, *, at_once: bool = False, reason: str | None = None) -> tuple[object, ...]:
    return ("refuse", status, at_once, reason)


def outcome(decision: object) -> tuple[object, ...]:
    """A decision as a row of the tables below: what it is and what the client sees."""
    if isinstance(decision, Refuse):
        return refusal(decision.reply.status, at_once=decision.at_once, reason=decision.reason)
    if isinstance(decision, Serve):
        return ("serve", decision.label, decision.limit)
    assert decision is DELEGATE
    return ("delegate",)


WITH_KEYS = [
    # (method, path, authorization, content-length, upgrade) -> decision
    (Facts(b"POST", CHAT, GOOD, b"10", False), ("serve", "chat/completions", LIMIT)),
    (Facts(b"POST", "/v1/embeddings", GOOD, None, False), ("serve", "embeddings", LIMIT)),
    (Facts(b"POST", "/v1/audio/speech", GOOD, None, False), ("serve", "audio/speech", LIMIT)),
    (Facts(b"POST", CHAT, None, b"10", False), refusal(401, reason="bad_key")),
    (Facts(b"POST", CHAT, "Bearer sk-maas-wrong", b"10", False), refusal(401, reason="bad_key")),
    (Facts(b"POST", CHAT, KEY, b"10", False), refusal(401, reason="bad_key")),  # no "Bearer "
    (Facts(b"GET", "/v1/models", None, None, False), refusal(401, reason="bad_key")),
    (Facts(b"GET", "/health", None, None, False), ("delegate",)),  # open without a key
    (Facts(b"GET", "/v1/models", GOOD, None, False), ("delegate",)),
    (Facts(b"GET", "/metrics", GOOD, None, False), ("delegate",)),
    (Facts(b"POST", "/v1/audio/transcriptions", GOOD, b"10", False), ("delegate",)),
    (Facts(b"PUT", "/proxy/echo/x", GOOD, b"10", False), ("delegate",)),
    (Facts(b"GET", CHAT, GOOD, None, False), refusal(405)),
    (Facts(b"POST", CHAT, GOOD, b"1000", False), ("serve", "chat/completions", LIMIT)),
    (Facts(b"POST", CHAT, GOOD, b"1001", False), refusal(413, at_once=True)),
    # A length that is no number is llhttp's to refuse, before admission sees it.
    (Facts(b"POST", CHAT, GOOD, b"-1", False), ("serve", "chat/completions", LIMIT)),
    (Facts(b"GET", CHAT, GOOD, None, True), refusal(400, at_once=True)),
    (Facts(b"GET", "/health", None, None, True), refusal(400, at_once=True)),
    # The key comes first: without one, nothing else about the request is answered.
    (Facts(b"GET", CHAT, None, b"99999", True), refusal(401, reason="bad_key")),
    # Not a model route (the aiohttp application answers 404).
    (Facts(b"POST", "/v1/chat/completions/", GOOD, None, False), ("delegate",)),
]


@pytest.mark.parametrize(("facts", "want"), WITH_KEYS)
def test_admission_with_keys(keys: KeyRing, facts: Facts, want: tuple[object, ...]) -> None:
    assert outcome(admit(facts, keys, LIMIT)) == want


WITHOUT_KEYS = [
    (b"POST", CHAT, None, ("serve", "chat/completions", LIMIT)),
    (b"POST", CHAT, "Bearer anything", ("serve", "chat/completions", LIMIT)),
    (b"GET", "/v1/models", None, ("delegate",)),
    (b"DELETE", "/v1/completions", None, refusal(405)),
]


@pytest.mark.parametrize(("method", "path", "authorization", "want"), WITHOUT_KEYS)
def test_admission_without_keys(
    method: bytes, path: str, authorization: str | None, want: tuple[object, ...]
) -> None:
    assert outcome(admit(Facts(method, path, authorization), KeyRing(None), LIMIT)) == want


def test_an_empty_key_file_admits_nobody_but_the_health_check(tmp_path: Path) -> None:
    path = tmp_path / "gateway.keys"
    path.write_text("")
    keys = KeyRing(path)
    assert outcome(admit(Facts(b"POST", CHAT, GOOD), keys, LIMIT)) == refusal(401, reason="bad_key")
    assert admit(Facts(b"GET", "/health"), keys, LIMIT) is DELEGATE


def test_refusals_are_openai_errors() -> None:
    decision = admit(Facts(b"POST", CHAT, None, b"5000"), KeyRing(None), LIMIT)
    assert isinstance(decision, Refuse)
    error = json.loads(decision.reply.body)["error"]
    assert error["code"] == "request_too_large" and "1000 bytes" in error["message"]


# Built from routing's values, not from a status document: admission never sees the document.
LLAMA = Route("llama", "running", 1, (Replica("llama", "c1", 0, "http://127.0.0.1:40001"),))
COLD = Route("cold", "starting", 1, ())
TABLE = RouteTable(routes={"llama": LLAMA, "cold": COLD}, aliases={"gpt-4": "llama"})


@pytest.mark.parametrize(
    ("model", "unreachable", "want"),
    [
        ("llama", None, "llama"),
        ("gpt-4", None, "llama"),  # an alias
        ("cold", None, "cold"),  # known but not ready: the balancer says so, with Retry-After
        ("nope", None, refusal(404, reason="unknown_model")),
        ("nope", "connection refused", refusal(503, reason="agent_unreachable")),
        # A table read before the agent went away still serves what it knows.
        ("llama", "connection refused", "llama"),
    ],
)
def test_model_admission(model: str, unreachable: str | None, want: object) -> None:
    decision = admit_model(model, TABLE, unreachable, retry_after_s=7)
    if isinstance(decision, Route):
        assert decision.name == want
    else:
        assert outcome(decision) == want


def test_unreachable_agent_asks_to_retry_later() -> None:
    decision = admit_model("nope", TABLE, "connection refused", retry_after_s=7)
    assert isinstance(decision, Refuse)
    assert decision.reply.headers["Retry-After"] == "7"
    assert "connection refused" in json.loads(decision.reply.body)["error"]["message"]
