"""Where the gateway's routes come from: the agent's status over its unix socket, polled.

The last good table stays in force while the agent is unreachable (containers outlive the agent,
and a replica that stops answering is ejected by the balancer anyway). A static source serves
tests and set-ups without an agent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import structlog

from maas.compiler import MaasError, NodeStatus, parse_status
from maas.gateway.routing import RouteTable, route_table_from_status

log = structlog.get_logger("maas.gateway")


class RouteSource(Protocol):
    table: RouteTable

    @property
    def unreachable(self) -> str | None:
        """Why the routes may be incomplete (the agent cannot be reached), or None."""
        ...

    async def start(self) -> None: ...

    async def recheck(self) -> bool: ...

    async def close(self) -> None: ...


class StaticRouteSource:
    """A fixed status document, e.g. from a test or a file."""

    def __init__(
        self, status: NodeStatus | Mapping[str, Any], upstream_host: str = "127.0.0.1"
    ) -> None:
        self.table = route_table_from_status(status, upstream_host)

    @property
    def unreachable(self) -> str | None:
        return None

    def update(
        self, status: NodeStatus | Mapping[str, Any], upstream_host: str = "127.0.0.1"
    ) -> None:
        self.table = route_table_from_status(status, upstream_host)

    async def start(self) -> None:
        return None

    async def recheck(self) -> bool:
        return False

    async def close(self) -> None:
        return None


class AgentRouteSource:
    """Polls `GET /v1/status` on the agent's unix socket every `interval_s`.

    `locate` (maas.host.discovery) is asked again after every failed poll when the socket was not
    named: an agent started after the gateway (scripts/run.sh starts both) is still found."""

    def __init__(
        self,
        socket: Path,
        *,
        upstream_host: str,
        interval_s: float = 1.0,
        locate: Callable[[], Path] | None = None,
    ) -> None:
        self.socket = socket
        self.locate = locate
        self.error = "not polled yet"
        self.upstream_host = upstream_host
        self.interval_s = interval_s
        self.table = RouteTable()
        self.healthy: bool | None = None
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._recheck: asyncio.Future[bool] | None = None

    @property
    def unreachable(self) -> str | None:
        if self.healthy:
            return None
        return f"the gateway cannot reach the node agent at {self.socket} ({self.error})"

    def _open(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=str(self.socket)),
            timeout=aiohttp.ClientTimeout(total=max(5.0, self.interval_s * 5)),
        )

    async def start(self) -> None:
        self._open()
        await self.refresh()
        self._task = asyncio.create_task(self._poll(), name="gateway-route-source")

    async def recheck(self) -> bool:
        """A poll now, shared by every request that asks while it runs: a model that became
        ready since the last poll (a client that waited for `apply --wait` and asks at once)
        is served instead of answered 503. True when the table was updated."""
        if self._recheck is None or self._recheck.done():
            self._recheck = asyncio.ensure_future(self._guarded_refresh())
        return await asyncio.shield(self._recheck)

    async def _guarded_refresh(self) -> bool:
        try:
            return await self.refresh()
        except Exception as exc:  # a bad status document answers the request as before
            log.error("route_recheck_failed", exc_info=exc)
            return False

    async def refresh(self) -> bool:
        """One poll; True when the table was updated."""
        assert self._session is not None, "start() first"
        try:
            async with self._session.get("http://agent/v1/status") as response:
                response.raise_for_status()
                status = parse_status(await response.json(), f"the agent's status at {self.socket}")
            table = route_table_from_status(status, self.upstream_host)
            if status.desired in ("refused", "pending"):
                # The agent cannot read its desired state (and keeps every container), or has
                # not read it yet: the routes to what runs are kept too.
                table = table.merged_over(self.table)
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError, MaasError) as exc:
            error = exc.diagnostics[0].message if isinstance(exc, MaasError) else str(exc)
            if self.healthy is not False:
                log.warning("agent_unreachable", socket=str(self.socket), error=error)
            self.healthy = False
            self.error = error or type(exc).__name__
            await self._relocate()
            return False
        if self.healthy is not True:
            log.info("agent_reachable", socket=str(self.socket), models=len(table.routes))
        self.healthy = True
        self.table = table
        return True

    async def _relocate(self) -> None:
        if self.locate is None:
            return
        found = self.locate()
        if found != self.socket:
            log.info("agent_socket", socket=str(found), previous=str(self.socket))
            self.socket = found
            if self._session is not None:
                await self._session.close()
            self._open()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.refresh()
            except Exception as exc:  # a bad status document must not end the polling
                self.healthy = False
                log.error("route_poll_failed", exc_info=exc)

    async def close(self) -> None:
        if self._recheck is not None:
            self._recheck.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._session is not None:
            await self._session.close()
