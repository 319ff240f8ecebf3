"""Readiness and liveness probes of the running replicas (HTTP GET of the plan's health paths,
or a TCP connect when it has none), feeding each replica's ReplicaHealth; a replica that fails
its startup budget or its liveness is stopped, and the crash-loop back-off decides its restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

import aiohttp

from maas.agent.reconcile.diff import Replica
from maas.agent.reconcile.groups import headless, listens_on
from maas.agent.reconcile.ondemand import FAST_PROBE_S
from maas.host.sockets import listening

if TYPE_CHECKING:
    from maas.agent.daemon import Agent

# Starting replicas: probed often, as each period is added to the gap of a one-replica change
# (bench/rollout_gap.py); a GET of a local port 4 times a second costs nothing worth saving.
STARTUP_PERIOD_S = 0.25
LIVENESS_PERIOD_S = 10.0
# (replica, port, health paths or None, startup budget, the address a group worker binds)
Due = tuple[Replica, int, list[str] | None, float, str | None]


class Prober:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent  # not imported at run time: the daemon imports us
        self.probed: dict[Replica, float] = {}  # when each replica was last probed

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=2)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not self.agent.stopping.is_set():
                with self.agent.supervisor.guard("probes"):
                    await self._probe_all(session)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self.agent.stopping.wait(), timeout=self._startup_period()
                    )

    def _startup_period(self) -> float:
        """Faster while a request waits for a woken on-demand replica: its wake time counts."""
        return FAST_PROBE_S if self.agent.reconciler.demand.fast_probes() else STARTUP_PERIOD_S

    def _due_probes(self, now: float) -> list[Due]:
        """Replicas to probe now: starting ones every STARTUP_PERIOD_S (ready soon after they
        are), ready ones every LIVENESS_PERIOD_S (the kubelet's default), which keeps the agent
        idle at rest. A distributed group's worker is probed on the address it binds; a vLLM
        follower, which has no port, not at all (paths None: running is ready)."""
        snapshot = self.agent.reconciler.snapshot
        plan = snapshot.plan
        planned = {d.name: d for d in plan.deployments} if plan else {}
        due: list[Due] = []
        for container in snapshot.observed:
            key = (container.deployment, container.replica)
            d = planned.get(container.deployment)
            health = snapshot.healths.get(key)
            if d is None or health is None or container.port is None:
                continue
            if health.container_id != container.id or health.phase not in ("starting", "running"):
                continue
            period = LIVENESS_PERIOD_S if health.ready else self._startup_period()
            if now - self.probed.get(key, 0.0) >= period - 0.1:
                paths = None if headless(d) else d.health.paths
                due.append((key, container.port, paths, d.health.startup_timeout_s, listens_on(d)))
        return due

    async def _probe_all(self, session: aiohttp.ClientSession) -> None:
        now = time.time()
        due = self._due_probes(now)
        results = await asyncio.gather(
            *(self._probe(session, p, paths, host) for _, p, paths, _, host in due)
        )
        for (key, _, _, startup_timeout_s, _), ok in zip(due, results, strict=True):
            self.probed[key] = now
            reconciler = self.agent.reconciler
            if not reconciler.probe_result(
                key, ok, time.time(), startup_timeout_s=startup_timeout_s
            ):
                continue
            health = reconciler.snapshot.healths.get(key)
            reason = (health.last_error if health else None) or "unhealthy"
            await asyncio.to_thread(reconciler.restart_unhealthy, key, reason)
            self.agent.wake()

    async def _probe(
        self,
        session: aiohttp.ClientSession,
        port: int,
        paths: list[str] | None,
        at: str | None = None,
    ) -> bool:
        if paths is None:
            return True  # nothing listens: running (probed only while it runs) is ready
        host = at or (
            "127.0.0.1"
            if self.agent.config.bind_address in ("0.0.0.0", "")
            else self.agent.config.bind_address
        )
        if not paths and at is not None:
            # A group's worker: asked of the socket table, never connected to (maas.host.sockets).
            return await asyncio.to_thread(listening, at, port)
        if not paths:
            return await _connects(host, port)
        for path in paths:
            try:
                async with session.get(f"http://{host}:{port}{path}") as response:
                    if response.status != 200:
                        return False
            except (aiohttp.ClientError, TimeoutError, OSError):
                return False
        return True


async def _connects(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True
