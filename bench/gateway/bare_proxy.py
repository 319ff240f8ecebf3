"""The least an aiohttp reverse proxy can do per streamed request (read the body, one pooled
client request, copy the chunks back), with none of the gateway's routing, keys, limits, usage or
metrics: the gateway's model routes were relayed this way before its front (front.py).

    python bench/gateway/bare_proxy.py LISTEN_PORT REPLICA_PORT
"""

from __future__ import annotations

import sys

import aiohttp
from aiohttp import web


def bare_proxy(replica_port: int) -> web.Application:
    upstream = f"http://127.0.0.1:{replica_port}"
    sessions: list[aiohttp.ClientSession] = []

    async def start(app: web.Application) -> None:
        sessions.append(
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0),
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        )

    async def stop(app: web.Application) -> None:
        await sessions[0].close()

    async def relay(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {"Content-Type": request.headers.get("Content-Type", "application/json")}
        async with sessions[0].post(upstream + request.path, data=body, headers=headers) as up:
            response = web.StreamResponse(
                status=up.status, headers={"Content-Type": up.headers["Content-Type"]}
            )
            await response.prepare(request)
            try:
                async for chunk in up.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
            except ConnectionResetError:
                pass  # wrk closes its connections at the end of a run
            return response

    app = web.Application()
    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.add_routes([web.post("/v1/chat/completions", relay)])
    return app


def main() -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    app = bare_proxy(int(sys.argv[2]))
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
