"""On-demand deployments (issue 18): which run now, which sleep, and which make room for another.

`decide` is the pure core over (plan, running deployments, activity, wake requests, now): an
on-demand deployment runs while it is used and sleeps (0 replicas) once it has been idle for its
`idle_timeout_s`; a wake request starts it again. Members of one group take turns within what the
plan reserves for the group on each device (its largest member's need): to start one, the least
recently used idle members are stopped first ("evicted for X"); a member with a request in flight
is never stopped, and the wake waits for it. Always-on deployments are never touched here.

How the agent learns activity: the gateway reports, about once a second, per deployment the
requests in flight or queued (held for a wake) and the seconds since the last one began or ended
(`POST /v1/activity`, relative times, so the two clocks need not agree). A report older than
`STALE_S` counts as no request in flight (the gateway stopped). Loading counts as activity: the
idle clock of a replica starts when it is ready, not when it was woken.

`DemandBook` holds that state between passes (thread-safe: the API writes, the pass reads) and
turns a decision into the plan the pass acts on: the same plan with each sleeping deployment at
0 replicas; `asleep` names them with their planned version, and the diff keeps their containers
stopped (a wake is a `docker start`, an eviction a `docker stop`).

Turns (fairness): a member busy without pause would keep a waiting member out for ever (its
requests time out at the gateway). So a member that a wake waits for *yields*: its replicas
take no new requests (reported not ready, as a draining replica is; the gateway holds them and
asks for its wake), the ones it answers finish, and then it is evicted like an idle member.
Wakes are served first asked, first served: a member woken and not yet ready (loading) is
never evicted, a ready one is, also while requests of its own are held at the gateway (they
wait for its next turn). What is queued at the gateway is not in flight for eviction (the
report tells them apart), only for the idle stop.

A deployment counts as running for the decision when one of its containers runs, or when it has
a container and was to run after the last pass (a crash of an awake one is restarted with
back-off, not taken for sleep; one that waits for room in its group does not count). A stopped
container the agent found at its start (its memory of states is gone) counts as asleep: the kept
containers of a group are never all started at once.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Literal

from maas.agent.reconcile.diff import Replica
from maas.agent.reconcile.health import ReplicaHealth
from maas.agent.reconcile.observe import ObservedContainer
from maas.compiler import PROCESS_CONTEXT_BYTES, Plan, PlanDeployment

STALE_S = 10.0
FAST_PROBE_S = 0.05  # the startup probe's period while a request waits for a woken replica
DemandState = Literal["awake", "waking", "sleeping", "yielding"]


@dataclass(frozen=True)
class Activity:
    last: float  # agent clock: when a request last began or ended (or the replica got ready)
    in_flight: int = 0  # requests in flight or queued at the gateway
    queued: int = 0  # of those, the ones held for a wake (not relayed to a replica)

    @property
    def relayed(self) -> int:
        return self.in_flight - self.queued


@dataclass(frozen=True)
class Demand:
    state: DemandState
    reason: str = ""


@dataclass(frozen=True)
class Decision:
    replicas: dict[str, int]  # per on-demand deployment: the replicas to run now
    states: dict[str, Demand]
    stops: dict[str, str]  # deployments stopped by this decision, and why
    yielding: dict[str, str] = field(default_factory=dict)  # member: the wake it yields to


def needs(d: PlanDeployment) -> dict[str, int]:
    """What the deployment holds per device ('host' or a GPU UUID), replicas and the llama.cpp
    processes' CUDA contexts included: the figures the plan reserved for its group."""
    held = {"host": (d.estimate.ram_bytes or 0) * d.replicas}
    contexts = PROCESS_CONTEXT_BYTES * d.replicas if d.backend == "llama-box" else 0
    for uuid, size in zip(d.placement.gpus, d.estimate.vram_bytes, strict=False):
        held[uuid] = size * d.replicas + contexts
    return held


def fits(members: Collection[PlanDeployment], group: Collection[PlanDeployment]) -> bool:
    """Whether `members` can run at once within the group's reservation: on every device their
    needs together stay within the largest single member's. A member whose need is unknown takes
    the whole reservation (members then run one at a time)."""
    if len(members) <= 1:
        return True
    sized = [needs(d) for d in members]
    if any(not any(n.values()) for n in sized):
        return False
    reservation: dict[str, int] = {}
    for d in group:
        for device, size in needs(d).items():
            reservation[device] = max(reservation.get(device, 0), size)
    return all(
        sum(n.get(device, 0) for n in sized) <= reservation.get(device, 0)
        for device in {k for n in sized for k in n}
    )


def decide(
    plan: Plan,
    running: Collection[str],
    activity: Mapping[str, Activity],
    wakes: Mapping[str, float],
    now: float,
    *,
    ready: Collection[str] = (),
) -> Decision:
    """Which on-demand deployments run now. `running`: those with a container; `wakes`: those a
    request asked to start, with when; `ready`: those whose replicas are all ready."""
    demand = [d for d in plan.deployments if d.on_demand is not None and d.replicas > 0]

    def act(name: str) -> Activity:
        return activity.get(name, Activity(last=now))

    keep: set[str] = set()
    stops: dict[str, str] = {}
    for d in demand:
        if d.name in running:
            why = _idle(d, act(d.name), now) if d.name not in wakes else None
            if why is None:
                keep.add(d.name)
            else:
                stops[d.name] = why
    states, turns = _serve(demand, wakes, act, keep, stops, ready=ready)
    return Decision(
        replicas={d.name: d.replicas if d.name in keep else 0 for d in demand},
        states={d.name: states.get(d.name) or _state(d.name, keep, running, stops) for d in demand},
        stops=stops,
        yielding=turns,
    )


def _serve(
    demand: list[PlanDeployment],
    wakes: Mapping[str, float],
    act: Callable[[str], Activity],
    keep: set[str],
    stops: dict[str, str],
    *,
    ready: Collection[str],
) -> tuple[dict[str, Demand], dict[str, str]]:
    """Start the woken deployments, first asked first, making room in their groups (`keep`
    and `stops` are updated); the states of those that wait, and who yields to whom."""
    groups: dict[str | None, list[PlanDeployment]] = {}
    for d in demand:
        groups.setdefault(d.on_demand.group if d.on_demand else None, []).append(d)
    by_name = {d.name: d for d in demand}
    states: dict[str, Demand] = {}
    turns: dict[str, str] = {}
    for name in sorted(wakes, key=lambda n: (wakes[n], n)):
        woken = by_name.get(name)
        if woken is None or name in keep or woken.on_demand is None:
            continue
        group = groups[woken.on_demand.group] if woken.on_demand.group else [woken]
        where = f"group {woken.on_demand.group}"
        # A member woken and not yet ready (loading, or started this pass) is not evicted.
        loading = {n for n in wakes if n in keep and n not in ready}
        evicted, busy = _make_room(woken, [m for m in group if m.name in keep], group, act, loading)
        if evicted is None:
            states[name] = Demand(
                "waking", f"waits for {', '.join(busy)} to finish its requests ({where})"
            )
            for member in (m for m in busy if m not in loading):
                turns.setdefault(member, name)
                states[member] = Demand(
                    "yielding",
                    f"yields to {name} ({where}): takes no new requests until its own end",
                )
            continue
        for victim in evicted:
            keep.discard(victim)
            stops[victim] = f"evicted for {name} ({where})"
        keep.add(name)
    return states, turns


def _state(
    name: str, keep: Collection[str], running: Collection[str], stops: Mapping[str, str]
) -> Demand:
    if name not in keep:
        return Demand("sleeping", stops.get(name, ""))
    return Demand("awake") if name in running else Demand("waking", "started on request")


def _idle(d: PlanDeployment, activity: Activity, now: float) -> str | None:
    """Why a running on-demand deployment stops now, or None while it is used."""
    assert d.on_demand is not None
    quiet = now - activity.last
    if activity.in_flight == 0 and quiet >= d.on_demand.idle_timeout_s:
        return f"idle for {quiet:.0f} s (timeout {d.on_demand.idle_timeout_s} s)"
    return None


def _make_room(
    d: PlanDeployment,
    others: list[PlanDeployment],
    group: list[PlanDeployment],
    act: Callable[[str], Activity],
    protected: Collection[str],
) -> tuple[list[str] | None, list[str]]:
    """The running members of its group to stop, least recently used first, so that `d` fits
    beside the rest; or, when even stopping every idle one is not enough, None and the members
    it waits for (nothing is stopped then)."""
    candidates = sorted(
        (m for m in others if act(m.name).relayed == 0 and m.name not in protected),
        key=lambda m: (act(m.name).last, m.name),
    )
    evicted: list[str] = []
    while not fits([m for m in others if m.name not in evicted] + [d], group):
        if not candidates:
            return None, [m.name for m in others if m.name not in evicted]
        evicted.append(candidates.pop(0).name)
    return evicted, []


@dataclass
class Wake:
    requested_at: float
    started_at: float | None = None  # the replicas' containers started (the last of them)
    ready_at: float | None = None  # every replica ready


Times = tuple[float | None, float | None]  # (replicas started, all ready since)


@dataclass
class DemandBook:
    """The agent's memory of on-demand deployments between passes: activity the gateway
    reported, pending wakes, and why each sleeping deployment sleeps."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    # name: (last, in flight, of which queued at the gateway)
    reported: dict[str, tuple[float, int, int]] = field(default_factory=dict)
    reported_at: float = -STALE_S
    wakes: dict[str, Wake] = field(default_factory=dict)
    last_wake: dict[str, Wake] = field(default_factory=dict)  # the last completed, for status
    ready_at: dict[str, float] = field(default_factory=dict)
    states: dict[str, Demand] = field(default_factory=dict)
    kept: set[str] = field(default_factory=set)  # to run after the last pass (replicas > 0)
    yielding: dict[str, str] = field(default_factory=dict)  # member: the wake it yields to
    reasons: dict[str, str] = field(default_factory=dict)  # why a deployment sleeps
    timeouts: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # cold_starts, evictions, idle_stops
    loads: list[float] = field(default_factory=list)  # the last backend loads, in seconds
    load_total: tuple[int, float] = (0, 0.0)  # every backend load: how many, seconds together

    def wake(self, name: str, now: float) -> None:
        with self.lock:
            if name not in self.wakes:
                self.wakes[name] = Wake(now)

    def report(self, models: Mapping[str, tuple[float, int, int]], now: float) -> None:
        """The gateway's report: per deployment (seconds since its last request, in flight,
        of which queued)."""
        with self.lock:
            self.reported = {name: (now - idle_s, n, q) for name, (idle_s, n, q) in models.items()}
            self.reported_at = now

    def _activity(self, now: float) -> dict[str, Activity]:
        fresh = now - self.reported_at <= STALE_S
        found: dict[str, Activity] = {}
        for name in {*self.reported, *self.wakes, *self.ready_at}:
            last, in_flight, queued = self.reported.get(name, (0.0, 0, 0))
            wake = self.wakes.get(name)
            last = max(last, self.ready_at.get(name, 0.0), wake.requested_at if wake else 0.0)
            found[name] = Activity(last, in_flight, queued) if fresh else Activity(last)
        return found

    def due(self, now: float) -> bool:
        """Whether a pass now would put a deployment to sleep (the API then wakes the loop)."""
        with self.lock:
            activity = self._activity(now)
            for name, timeout in self.timeouts.items():
                act = activity.get(name)
                if (
                    self.states.get(name, Demand("sleeping")).state == "awake"
                    and name not in self.wakes
                    and act is not None
                    and act.in_flight == 0
                    and now - act.last >= timeout
                ):
                    return True
            return False

    def stop_timeout(self, name: str, default: int) -> int:
        """0 (killed at once) for a replica evicted while a request waits for its group's
        room: it has no request in flight; else the agent's graceful stop."""
        with self.lock:
            return (
                0
                if self.reasons.get(name, "").startswith("evicted")
                and (self.states.get(name) == Demand("sleeping", self.reasons[name]))
                else default
            )

    def fast_probes(self) -> bool:
        """Whether a request waits for a woken replica (its startup probe then runs often)."""
        with self.lock:
            return bool(self.wakes)

    def _awake(self, running: Collection[str], times: Mapping[str, Times]) -> set[str]:
        """Deployments that count as running (module docstring); `times` has those with a
        container."""
        return {*running} | {n for n in times if n in self.kept}

    def preview(
        self, plan: Plan, running: Collection[str], times: Mapping[str, Times], now: float
    ) -> tuple[Plan, dict[str, PlanDeployment]]:
        """What a pass would act on now (`apply`'s plan and `asleep`), remembering nothing: the
        preview of `maasctl apply` shows a sleeping deployment asleep, not created."""
        with self.lock:
            wakes = {n: w.requested_at for n, w in self.wakes.items()}
            awake = self._awake(running, times)
            decision = decide(plan, awake, self._activity(now), wakes, now, ready=_ready(times))
        acted = _with_replicas(plan, decision.replicas)
        return acted, asleep(plan, acted)

    def apply(
        self, plan: Plan, running: Collection[str], times: Mapping[str, Times], now: float
    ) -> Plan:
        """The plan this pass acts on: sleeping on-demand deployments at 0 replicas. `running`:
        on-demand deployments with a running container; `times`: per on-demand deployment with a
        container, when its replicas started and since when all are ready (None: not yet, which
        counts as activity while it is awake: the idle clock starts at ready)."""
        with self.lock:
            planned = {d.name: d for d in plan.deployments if d.on_demand is not None}
            for name in [n for n in self.wakes if n not in planned]:
                del self.wakes[name]
            running = self._awake(running, times)
            for name, (started, ready) in times.items():
                if name in running:
                    self._note(name, started, ready, now)
            for name, wake in list(self.wakes.items()):
                d = planned[name]
                if now - wake.requested_at > d.health.startup_timeout_s + STALE_S:
                    del self.wakes[name]  # its replicas failed to start: status says why
            wakes = {n: w.requested_at for n, w in self.wakes.items()}
            decision = decide(plan, running, self._activity(now), wakes, now, ready=_ready(times))
            self.yielding = decision.yielding
            for name, why in decision.stops.items():
                self.reasons[name] = why
                kind = "evictions" if why.startswith("evicted") else "idle_stops"
                self.counts[kind] = self.counts.get(kind, 0) + 1
                self.ready_at.pop(name, None)
            for name, state in decision.states.items():
                before = self.states.get(name)
                if state == Demand("waking", "started on request") and before != state:
                    self.counts["cold_starts"] = self.counts.get("cold_starts", 0) + 1
            self.states = decision.states
            self.kept = {n for n, r in decision.replicas.items() if r > 0}
            self.timeouts = {
                n: d.on_demand.idle_timeout_s for n, d in planned.items() if d.on_demand
            }
            return _with_replicas(plan, decision.replicas)

    def _note(self, name: str, started: float | None, ready: float | None, now: float) -> None:
        """A running deployment's replica times: its idle clock, and its wake's completion."""
        self.ready_at[name] = now if ready is None else max(self.ready_at.get(name, 0.0), ready)
        wake = self.wakes.get(name)
        done = _completed(wake, started, ready) if wake is not None else None
        if done is None:
            return
        del self.wakes[name]
        self.last_wake[name] = done
        if done.started_at is not None and done.ready_at is not None:
            load = max(0.0, done.ready_at - done.started_at)
            self.loads.append(load)
            del self.loads[:-1000]
            self.load_total = (self.load_total[0] + 1, self.load_total[1] + load)

    def status_of(self, name: str, times: Times, now: float) -> dict[str, object] | None:
        """The `on_demand` part of a deployment's status (None for an always-on one); `times`
        as `apply` takes them, read at the time of the status."""
        with self.lock:
            state = self.states.get(name)
            if state is None:
                return None
            activity = self._activity(now).get(name)
            reason = state.reason or (
                self.reasons.get(name, "") if state.state == "sleeping" else ""
            )
            pending = self.wakes.get(name)
            wake = (
                (_completed(pending, *times) if pending else None)
                or pending
                or self.last_wake.get(name)
            )
            shown = state.state
            if shown == "waking" and pending and wake is not pending:
                shown = "awake"  # ready since the last pass
            return {
                "state": shown,
                "reason": reason or ("not used yet" if shown == "sleeping" else ""),
                "idle_timeout_s": self.timeouts.get(name),
                "idle_s": round(now - activity.last, 1) if activity else None,
                "in_flight": activity.in_flight if activity else 0,
                "wake": dataclasses.asdict(wake) if wake else None,
            }


def _ready(times: Mapping[str, Times]) -> set[str]:
    return {name for name, (_, ready) in times.items() if ready is not None}


def _with_replicas(plan: Plan, replicas: Mapping[str, int]) -> Plan:
    chosen = [
        d.model_copy(update={"replicas": replicas[d.name]})
        if replicas.get(d.name, d.replicas) != d.replicas
        else d
        for d in plan.deployments
    ]
    return plan.model_copy(update={"deployments": chosen})


def asleep(planned: Plan, acted: Plan) -> dict[str, PlanDeployment]:
    """The on-demand deployments that sleep in `acted` (0 replicas where `planned` has some),
    with their planned version: their containers are kept, stopped."""
    now = {d.name: d.replicas for d in acted.deployments}
    return {
        d.name: d
        for d in planned.deployments
        if d.on_demand is not None and d.replicas > 0 and now.get(d.name) == 0
    }


def _completed(wake: Wake, started: float | None, ready: float | None) -> Wake | None:
    """The wake with its replicas' times once they are all ready after it was asked for."""
    if ready is None or started is None or started < wake.requested_at - 1.0:
        return None
    return Wake(wake.requested_at, started, ready)


def replica_times(replicas: Collection[tuple[float | None, bool, float | None]]) -> Times:
    """(started, ready since) of a deployment from its replicas' (started_at, ready,
    ready_since): the last start, and the last replica's readiness when all are ready."""
    started = [s for s, _, _ in replicas if s is not None]
    ready = [since for _, ok, since in replicas if ok and since is not None]
    return (
        max(started) if started else None,
        max(ready) if replicas and len(ready) == len(replicas) else None,
    )


def facts(
    plan: Plan, observed: Collection[ObservedContainer], health: Mapping[Replica, ReplicaHealth]
) -> tuple[set[str], dict[str, Times]]:
    """The on-demand deployments with a running container, and the replicas' times of those
    with a container (kept stopped ones included)."""
    running = {c.deployment for c in observed if c.running}
    present = {c.deployment for c in observed}
    times: dict[str, Times] = {}
    for d in plan.deployments:
        if d.on_demand is None or d.name not in present:
            continue
        replicas = [health.get((d.name, r)) for r in range(d.replicas)]
        times[d.name] = replica_times(
            [(h.started_at, h.ready, h.ready_since) if h else (None, False, None) for h in replicas]
        )
    return running, times
