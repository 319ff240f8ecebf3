"""The benchmark's peers of the gateway, each run as its own process:

- `replica PORT [--tokens N] [--interval-ms MS]`: a fast OpenAI-shaped SSE upstream. Every chat
  completion streams N chunks (at once, or MS apart to mimic a model's pace), a usage chunk and
  `[DONE]`.
- `status SOCKET PORT`: the agent's status API on a unix socket, naming that replica ready, so
  the real `maas-gateway` process runs unchanged.
"""

from __future__ import annotations

import argparse
import asyncio
import json

from aiohttp import web

from maas.compiler import ContainerStatus, DeploymentStatus, NodeStatus

CHUNK = {
    "id": "chatcmpl-bench",
    "object": "chat.completion.chunk",
    "created": 0,
    "model": "bench",
    "choices": [{"index": 0, "delta": {"content": "token"}, "finish_reason": None}],
}


def replica_app(tokens: int, interval_s: float) -> web.Application:
    chunk = b"data: " + json.dumps(CHUNK).encode() + b"\n\n"
    usage = {**CHUNK, "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": tokens}}
    tail = b"data: " + json.dumps(usage).encode() + b"\n\ndata: [DONE]\n\n"

    async def chat(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        try:
            await response.prepare(request)
            for _ in range(tokens):
                await response.write(chunk)
                if interval_s:
                    await asyncio.sleep(interval_s)
            await response.write(tail)
            await response.write_eof()
        except ConnectionResetError:
            pass  # wrk closes its connections at the end of a run
        return response

    app = web.Application()
    app.add_routes([web.post("/v1/chat/completions", chat)])
    return app


def status_app(port: int) -> web.Application:
    # The agent's status contract, as the agent builds it.
    document = NodeStatus(
        node="bench",
        deployments=[
            DeploymentStatus(
                name="bench",
                state="running",
                replicas=1,
                ready_replicas=1,
                backend="custom",
                image="bench/replica:1",
                spec_hash="v1:bench",
                containers=[
                    ContainerStatus(id="bench0", replica=0, state="running", port=port, ready=True)
                ],
            )
        ],
    ).document()

    async def status(request: web.Request) -> web.Response:
        return web.json_response(document)

    app = web.Application()
    app.add_routes([web.get("/v1/status", status)])
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="what", required=True)
    replica = sub.add_parser("replica")
    replica.add_argument("port", type=int)
    replica.add_argument("--tokens", type=int, default=16)
    replica.add_argument("--interval-ms", type=float, default=0.0)
    status = sub.add_parser("status")
    status.add_argument("socket")
    status.add_argument("port", type=int)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    if args.what == "replica":
        app = replica_app(args.tokens, args.interval_ms / 1000)
        web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)
    else:
        web.run_app(status_app(args.port), path=args.socket, access_log=None, print=None)


if __name__ == "__main__":
    main()
