"""Waking sleeping models (issue 18): a request for an on-demand deployment with no running
replica is held while the agent starts it, and the gateway tells the agent what is in use.

* Admission (`admit`, pure): at most `wake_queue` requests wait per model; more get 503 at once.
* One start per model: the first held request asks the agent (`POST /v1/wake/{name}`); the
  others share that call and every status poll (`RouteSource.recheck`, shared too), polled every
  `WAKE_POLL_S` until a replica is ready or `wake_timeout_s` since the request arrived has passed
  (then 503 with Retry-After, naming the model and its state and why). The activity report is
  sent right before the wake, so that the agent evicts by what is in use now.
* Activity: per deployment the requests in flight or held, and the time of the last one that
  began or ended, reported to the agent about once a second (`POST /v1/activity`, relative
  seconds); the agent never stops a deployment the last report shows in use
  (maas.agent.reconcile.ondemand).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import structlog

from maas.gateway import errors
from maas.gateway.routing import Route
from maas.gateway.source import RouteSource

log = structlog.get_logger("maas.gateway")
WAKE_POLL_S = 0.05
REPORT_S = 1.0
ASLEEP = ("sleeping", "waking")


def admit(held: int, limit: int) -> bool:
    """Whether one more request may wait for the model's wake."""
    return held < limit


def wants_wake(route: Route) -> bool:
    """A known on-demand model without a ready replica that is asleep or on its way up."""
    return route.on_demand and not route.ready and route.state in ASLEEP


@dataclass
class Usage:
    in_flight: int = 0  # relayed now, or held for a wake
    last: float = 0.0  # gateway clock


class ActivityBook:
    """Requests per deployment, as the agent's idle decisions need them."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.models: dict[str, Usage] = {}

    def begin(self, name: str) -> None:
        usage = self.models.setdefault(name, Usage())
        usage.in_flight += 1
        usage.last = self.clock()

    def end(self, name: str) -> None:
        usage = self.models.setdefault(name, Usage())
        usage.in_flight = max(0, usage.in_flight - 1)
        usage.last = self.clock()

    def report(self, known: set[str], held: Mapping[str, int]) -> dict[str, dict[str, float]]:
        """Per deployment: requests in flight (`held` of them queued for a wake, which the
        agent does not wait for when it takes turns) and seconds since the last one."""
        now = self.clock()
        for name in [n for n in self.models if n not in known and not self.models[n].in_flight]:
            del self.models[name]  # removed deployments do not grow the map
        return {
            name: {
                "in_flight": u.in_flight,
                "queued": min(held.get(name, 0), u.in_flight),
                "idle_s": round(max(0.0, now - u.last), 3),
            }
            for name, u in self.models.items()
        }


@dataclass(frozen=True)
class Woken:
    """A request that waited for a wake: when the wait ended, and the backend's own load."""

    at: float
    backend_load_s: float | None


class Waker:
    def __init__(
        self,
        source: RouteSource,
        *,
        timeout_s: float,
        queue: int,
        retry_after_s: int,
        clock: Callable[[], float],
    ) -> None:
        self.source = source
        self.timeout_s = timeout_s
        self.queue = queue
        self.retry_after_s = retry_after_s
        self.clock = clock
        self.activity = ActivityBook(clock)
        self.held: dict[str, int] = {}
        self.woken: dict[int, Woken] = {}  # id(call) -> how its wake went, for the metrics
        self._starts: dict[str, asyncio.Future[None]] = {}
        self._session: aiohttp.ClientSession | None = None
        self._socket: Path | None = None
        self._old: list[aiohttp.ClientSession] = []

    @property
    def enabled(self) -> bool:
        """Only a gateway that reads an agent can wake models and report activity."""
        return isinstance(getattr(self.source, "socket", None), Path)

    def wants(self, route: Route) -> bool:
        return self.enabled and wants_wake(route)

    async def wait(self, route: Route, started: float, call_id: int) -> Route | errors.Reply:
        """Hold a request for `route` until a replica is ready: the route then, else the reply."""
        name = route.name
        if not admit(self.held.get(name, 0), self.queue):
            return errors.openai_error(
                503,
                f"The model `{name}` is {route.state} and {self.queue} requests already wait "
                "for it to start; retry later.",
                code="model_queue_full",
                headers={"Retry-After": str(self.retry_after_s)},
            )
        self.held[name] = self.held.get(name, 0) + 1
        self.activity.begin(name)
        try:
            return await self._wait(route, started, call_id)
        finally:
            self.activity.end(name)
            self.held[name] -= 1
            if not self.held[name]:
                del self.held[name]

    async def _wait(self, route: Route, started: float, call_id: int) -> Route | errors.Reply:
        name = route.name
        start = self._starts.get(name)
        if start is None or start.done():
            start = self._starts[name] = asyncio.ensure_future(self._start(name))
            start.add_done_callback(_retrieved)
        deadline = started + self.timeout_s
        current = route
        while self.clock() < deadline:
            if start.done() and start.exception() is not None:
                break
            await asyncio.sleep(WAKE_POLL_S)
            await self.source.recheck()
            found = self.source.table.routes.get(name)
            if found is None:
                break  # deleted meanwhile: answered as any unknown model would be
            current = found
            if found.ready:
                self.woken[call_id] = Woken(self.clock(), found.backend_load_s)
                return found
            if not found.on_demand:
                return found  # no longer on demand: the usual answers apply
        why = f" ({current.reason})" if current.reason else ""
        return errors.openai_error(
            503,
            f"The model `{name}` is {current.state}{why} and had no ready replica within "
            f"{self.timeout_s:g} s of the request; retry later.",
            code="model_waking",
            headers={"Retry-After": str(self.retry_after_s)},
        )

    async def _start(self, name: str) -> None:
        """Ask the agent once to wake `name` (every held request shares this call). The activity
        report goes first: the agent decides whom to evict from it, and the last periodic one
        (up to REPORT_S old) can still show the request that just ended, which would make the
        wake wait for that member until the next report."""
        await self.report()
        session = self._client()
        try:
            async with session.post(f"http://agent/v1/wake/{name}") as response:
                if response.status >= 400:
                    text = await response.text()
                    log.warning("wake_refused", model=name, status=response.status, error=text)
                    response.raise_for_status()
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            log.warning("wake_failed", model=name, error=str(exc) or type(exc).__name__)
            raise
        log.info("wake_requested", model=name)

    def _client(self) -> aiohttp.ClientSession:
        socket = getattr(self.source, "socket", None)
        assert isinstance(socket, Path), "waking needs the agent's socket"
        if self._session is None or socket != self._socket:
            if self._session is not None:
                self._old.append(self._session)  # closed with the gateway
            self._socket = socket
            self._session = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=str(socket)),
                timeout=aiohttp.ClientTimeout(total=10),
            )
        return self._session

    async def report_loop(self) -> None:
        """The activity report, about once a second, while the gateway runs."""
        while True:
            await asyncio.sleep(REPORT_S)
            await self.report()

    async def report(self) -> None:
        if not self.enabled:
            return
        models = self.activity.report(set(self.source.table.routes), self.held)
        try:
            async with self._client().post(
                "http://agent/v1/activity", json={"models": models}
            ) as response:
                response.raise_for_status()
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            log.debug("activity_report_failed", error=str(exc))  # the route poll logs it

    async def close(self) -> None:
        for start in self._starts.values():
            start.cancel()
        for session in [*self._old, *([self._session] if self._session else [])]:
            with contextlib.suppress(Exception):
                await session.close()


def _retrieved(future: asyncio.Future[None]) -> None:
    """A failed start is answered by the wait (its timeout); its error was logged."""
    if not future.cancelled():
        future.exception()
