"""Admission: what the gateway does with a request, decided from its facts alone.

Two steps, each a pure function from values to a decision that the caller carries out:
`admit` when a request's head has arrived (refuse it, delegate it to the aiohttp application, or
serve it as a model request), and `admit_model` once its body named the model (refuse it, or the
route that serves it; the balancer then picks the replica). Nothing here reads a socket, the clock
or a file, so every decision is table-tested (tests/gateway/test_gateway_admission.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from maas.gateway import errors
from maas.gateway.keys import KeyRing
from maas.gateway.routing import Route, RouteTable

# The routes whose body is a JSON document naming the `model`: the front serves them itself.
JSON_ROUTES = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/rerank",
    "/v1/audio/speech",
)
MODEL_ROUTES = {path: path[4:] for path in JSON_ROUTES}  # path -> label, e.g. chat/completions
OPEN_PATHS = frozenset({"/health"})  # answered without a key
UPGRADE_REFUSED = "The gateway does not switch protocols; send the request without Upgrade."

# The decision values are made once per request on the front's hot path: plain slotted
# dataclasses, since a frozen one's __init__ costs about a microsecond more (bench/gateway).


@dataclass(slots=True)
class Facts:
    """What admission looks at in a request's head (the path without its query string)."""

    method: bytes
    path: str
    authorization: str | None = None
    content_length: bytes | None = None
    upgrade: bool = False


@dataclass(slots=True)
class Refuse:
    """Answer `reply` instead of serving. `at_once`: answer now and close the connection, leaving
    the body unread; otherwise the body is read (and dropped) first, so the connection stays
    usable. `reason`: the error the metrics count, where the refusal counts as one."""

    reply: errors.Reply
    at_once: bool = False
    reason: str | None = None


@dataclass(slots=True)
class Delegate:
    """Not a model request the front serves itself: the aiohttp application takes it."""


@dataclass(slots=True)
class Serve:
    """A model request on the route `label` (e.g. chat/completions); its body is held up to
    `limit` bytes."""

    label: str
    limit: int


Admission = Refuse | Delegate | Serve
DELEGATE = Delegate()


def admit(facts: Facts, keys: KeyRing, max_body_bytes: int) -> Admission:
    """The decision on a request whose head has arrived. The key comes first: a client without
    one learns nothing else about the gateway."""
    if facts.path not in OPEN_PATHS and not keys.allows(facts.authorization):
        return Refuse(errors.bad_key(), reason="bad_key")
    if facts.upgrade:
        return Refuse(errors.openai_error(400, UPGRADE_REFUSED), at_once=True)
    label = MODEL_ROUTES.get(facts.path)
    if label is None:
        return DELEGATE
    if facts.method != b"POST":
        return Refuse(errors.openai_error(405, "Method Not Allowed"))
    length = facts.content_length
    if length is not None and length.isdigit() and int(length) > max_body_bytes:
        return Refuse(errors.too_large(max_body_bytes), at_once=True)
    return Serve(label, max_body_bytes)


def admit_model(
    model: str, table: RouteTable, unreachable: str | None, retry_after_s: int
) -> Refuse | Route:
    """The route that serves `model`, or the refusal. `unreachable` (why the agent's routes could
    not be read, None when they could): not knowing a model then proves nothing."""
    route = table.resolve(model)
    if route is not None:
        return route
    if unreachable is not None:
        reply = errors.agent_unreachable(unreachable, retry_after_s)
        return Refuse(reply, reason="agent_unreachable")
    return Refuse(errors.unknown_model(model), reason="unknown_model")
