"""The gateway's errors: its exceptions (one base, `GatewayError`) and its error responses in
OpenAI's format, so OpenAI clients show the message instead of failing to parse:
`{"error": {"message", "type", "param", "code"}}`. Pure values (`Reply`); the aiohttp application
and the front each turn them into their own kind of response."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from aiohttp import web

_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
}


class GatewayError(Exception):
    """Any request the gateway cannot serve: callers that mean "any refusal or failure of the
    gateway's" catch this one type; each kind says which error response it becomes."""

    def reply(self) -> Reply:
        return openai_error(502, f"The gateway failed: {self}")


class BadRequest(GatewayError):
    """The request cannot be routed; `param` names the offending field, as OpenAI's errors do."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def reply(self) -> Reply:
        return openai_error(400, self.message, param=self.param)


class UpstreamUnreachable(GatewayError):
    """No connection to the replica: nothing was sent, so another replica may take the request."""


class UpstreamFailed(GatewayError):
    """The replica failed before its response headers arrived (reset, timeout)."""


class StaleConnection(UpstreamFailed):
    """A reused connection closed before any of the response arrived."""


class BodyTooLarge(GatewayError):
    """A streamed request body grew past `limit` while it was sent on."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body is larger than {limit} bytes")
        self.limit = limit

    def reply(self) -> Reply:
        return too_large(self.limit)


def openai_error(
    status: int,
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Reply:
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return Reply(status, json.dumps(body).encode(), dict(headers or {}))


@dataclass(frozen=True)
class Reply:
    """A complete JSON response the gateway answers itself."""

    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)

    def response(self) -> web.Response:
        return web.Response(
            status=self.status,
            body=self.body,
            headers=self.headers,
            content_type="application/json",
        )


def unknown_model(model: str) -> Reply:
    return openai_error(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        code="model_not_found",
        param="model",
    )


def agent_unreachable(why: str, retry_after_s: int) -> Reply:
    return openai_error(
        503,
        f"The model routes are unavailable: {why}; is maas-agent running? Retry later.",
        code="agent_unreachable",
        headers={"Retry-After": str(retry_after_s)},
    )


def no_ready_replica(model: str, state: str, retry_after_s: int) -> Reply:
    return openai_error(
        503,
        f"The model `{model}` has no ready replica (state: {state}); retry later.",
        code="model_not_ready",
        headers={"Retry-After": str(retry_after_s)},
    )


def too_large(limit: int) -> Reply:
    return openai_error(
        413, f"The request body is larger than {limit} bytes.", code="request_too_large"
    )


def bad_key() -> Reply:
    return openai_error(
        401,
        "Incorrect or missing API key; send it as `Authorization: Bearer <key>`.",
        code="invalid_api_key",
        headers={"WWW-Authenticate": 'Bearer realm="maas"'},
    )
