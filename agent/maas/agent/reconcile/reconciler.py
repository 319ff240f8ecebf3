"""One reconcile pass: desired state -> live compile -> observe -> diff -> execute -> status facts.

Level-triggered: every pass compares the whole Plan with everything Docker reports for this node.
Failures of single actions are recorded on the replica (with back-off) and never stop the pass;
a corrupt store or an engine that does not answer stops the pass before anything is touched.
A container the policy refuses right before its creation (a bind source that resolves outside the
allowed roots, a secret that cannot be passed) is recorded on its replica once and re-checked on
each pass without touching the engine: no back-off, no restarts counted, nothing logged again.
Secret values the agent resolved are scrubbed from every error text it stores or logs.
What a pass decides is a value (`step.step`: plan, observed, healths, now -> actions, healths');
this class does the I/O around it. Readers (API, probes, metrics) never reach into its fields:
they read `snapshot`, a NodeSnapshot published after each pass and each probe result.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import MappingProxyType

import structlog
from pydantic import ValidationError

from maas.agent.config import AgentConfig
from maas.agent.desired.sources import merge, remove_deployment
from maas.agent.desired.store import Desired, Store
from maas.agent.reconcile.containers import container_spec
from maas.agent.reconcile.counters import Counters
from maas.agent.reconcile.diff import Action, Replica, diff
from maas.agent.reconcile.drain import drains
from maas.agent.reconcile.groups import GroupGate, answers, shares, wired
from maas.agent.reconcile.health import ReplicaHealth
from maas.agent.reconcile.observe import ObservedContainer, Owner, observe
from maas.agent.reconcile.ondemand import DemandBook, asleep, facts
from maas.agent.reconcile.overlap import (
    adopted,
    beside_name,
    overlaps,
    serving_kept,
    settle,
    spare_ports,
)
from maas.agent.reconcile.prepare import (
    Job,
    PrepareFailed,
    Preparer,
    hubs_offline,
    node_tokens,
)
from maas.agent.reconcile.rollback import rollback_short
from maas.agent.reconcile.sandbox import Sandboxes
from maas.agent.reconcile.snapshot import NodeSnapshot, PassResult
from maas.agent.reconcile.step import notice, step
from maas.compiler import (
    CompileOptions,
    Deployment,
    Diagnostic,
    Loaded,
    MaasError,
    ModelMetadata,
    Node,
    Plan,
    PlanDeployment,
    Policy,
    Position,
    SecretRef,
    compile_plan,
    load_sources,
    narrow,
)
from maas.host.engine import Engine, ImageMissing
from maas.host.gpuroom import ForeignProcess, blocked
from maas.host.models.cache import ModelCache
from maas.host.models.metadata import fetch_models
from maas.host.paths import admitted, resolved_mounts
from maas.host.secrets import read_secret

log = structlog.get_logger("maas.agent")
# Our container IDs -> the node to plan on and the foreign processes holding GPU memory.
NodeSource = Callable[[frozenset[str]], tuple[Node, list[ForeignProcess]]]
STORE_REFUSALS = ("store-corrupt", "store-missing")
PARALLEL_ACTIONS = 8
PARALLEL_STOPS = 4


def internal_error(what: str, exc: BaseException) -> Diagnostic:
    """An unexpected exception as status shows it: its type only (its text may hold data that
    must not be stored, such as bytes of a secret); the journal has the traceback."""
    return Diagnostic(
        "internal",
        f"internal error in {what}: {type(exc).__name__}",
        hints=("the agent's journal has the traceback; the next pass tries again",),
    )


def load_deployments(
    sources: dict[str, str], assigned: dict[str, int] | None = None
) -> list[Loaded[Deployment]]:
    """The Deployment documents of the desired sources; any error among them raises.

    With `assigned` (pull mode), only the deployments the fleet gave this node, with the number
    of replicas it gave.
    """
    documents = load_sources(sources, kinds=("Deployment",))
    if [d for d in documents.diagnostics if d.severity == "error"]:
        raise MaasError(documents.diagnostics)
    if assigned is None:
        return documents.deployments
    chosen = []
    for loaded in documents.deployments:
        replicas = assigned.get(loaded.model.metadata.name)
        if replicas is not None:
            spec = loaded.model.spec.model_copy(update={"replicas": replicas})
            chosen.append(Loaded(loaded.model.model_copy(update={"spec": spec}), loaded.doc))
    return chosen


def fetch_metadata(
    deployments: list[Loaded[Deployment]], config: AgentConfig, policy: Policy
) -> dict[str, ModelMetadata]:
    """Model metadata for placement (GGUF/safetensors headers: local files, caches, or range
    requests to the hub); a model it cannot read is placed without an estimate. A local model
    is opened only when `policy` admits the path it resolves to."""
    fetched = fetch_models(
        deployments,
        offline=not config.download_models,
        metadata_cache=config.state_dir / "metadata",
        model_cache=config.cache_dir,
        token=node_tokens(config.secrets_dir),
        admit=lambda name, path: admitted(
            path, policy=policy, cache_dir=config.cache_dir, deployment=name
        ),
    )
    for warning in fetched.warnings:
        log.warning("model metadata", warning=warning.render())
    return fetched.models


class Reconciler:
    def __init__(
        self,
        config: AgentConfig,
        engine: Engine,
        node: NodeSource,
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        self.config = config
        self.engine = engine
        self.node_source = node
        self.wake = wake
        self.foreign: list[ForeignProcess] = []  # GPU memory held outside our containers
        self.live_node: Node | None = None
        self.node_name = config.node_name or node(frozenset())[0].metadata.name
        self.owner = Owner(self.node_name, config.label_namespace)
        self.store = Store(config.state_dir)
        self.preparer = Preparer(
            engine,
            done=wake,
            token=node_tokens(config.secrets_dir),
            offline=hubs_offline() or not config.download_models,
        )
        self.cache = ModelCache(config.cache_dir, config.state_dir, config.cache_max_idle_s)
        self.cache_usage: list[dict[str, object]] = []
        self.preparing: dict[str, Job] = {}  # new versions prepared while the old ones serve
        self._roll_waits: set[tuple[str, str, int] | tuple[str, str]] = set()
        # Per deployment: the last version whose replicas were all ready, and a roll-out taken
        # back to it (the failed spec hash, the version brought back, why).
        self.last_good: dict[str, PlanDeployment] = {}
        self.rollbacks: dict[str, tuple[str, PlanDeployment, str]] = {}
        self.health: dict[Replica, ReplicaHealth] = {}
        self.demand = DemandBook()  # on-demand deployments: activity, wakes, sleep reasons
        self.sandboxes = Sandboxes(engine, self.owner, config.bind_address)
        self._yielded: set[Replica] = set()  # replicas that take no new requests: their turn
        self.counters = Counters(config.state_dir)
        # Deployments whose containers could not be removed: {name: {error, permanent}}.
        self.removal_errors: dict[str, dict[str, object]] = {}
        self.observed: list[ObservedContainer] = []
        self.plan: Plan | None = None
        self.applied_at: float | None = None  # when the desired state was last submitted
        self._memo: tuple[tuple[object, ...], Plan] | None = None
        self._models: tuple[object, dict[str, ModelMetadata]] | None = None
        self.policy: Policy = config.policy  # in force: the node's, narrowed by a repository's
        self._secrets: set[str] = set()  # values resolved so far, scrubbed from error texts
        self.errors: list[Diagnostic] = []
        self.last: PassResult = PassResult()
        self.passes = 0
        # What readers see (`snapshot`), replaced whole after each pass and probe result.
        self.snapshot = NodeSnapshot(self.node_name)
        self._publishing = threading.Lock()
        self.groups = GroupGate()
        # `lock`: one pass (or probe restart) at a time; it is held while Docker works, for
        # seconds. `state_lock`: the desired state (store, compile memo), held only briefly, so
        # that apply and delete are answered during a long pass and the next pass takes them all.
        self.lock = threading.RLock()
        self.state_lock = threading.RLock()
        self.pool = ThreadPoolExecutor(max_workers=PARALLEL_ACTIONS, thread_name_prefix="action")
        self.stop_pool = ThreadPoolExecutor(max_workers=PARALLEL_STOPS, thread_name_prefix="stop")

    # desired state -------------------------------------------------------------------------
    def desired_plan(self) -> tuple[Plan, list[Diagnostic]]:
        """The plan to work towards, and why it is the last good one rather than a new one."""
        with self.state_lock:
            desired = self.store.load()
            self.applied_at = desired.applied_at
            policy = self._options(desired).policy
            assert policy is not None
            self.policy = policy  # what containers are checked against at creation
            if not desired.sources and desired.assigned is None:
                # Only an old state file has a plan without sources; a plan is never trusted
                # past the checks at container creation.
                return desired.plan or Plan(node=self.node_name), []
            try:
                return self._compiled(desired, desired.plan), []
            except MaasError as exc:
                if desired.plan is None:
                    raise
                return desired.plan, list(exc.diagnostics)  # keep running the last good plan
            except Exception as exc:
                if desired.plan is None:
                    raise
                log.error("compile_crashed", exc_info=exc)
                return desired.plan, [internal_error("the compile", exc)]

    def compile(self, desired: Desired) -> Plan:
        with self.state_lock:
            return self._compiled(desired, self.stored_plan())

    def _options(self, desired: Desired) -> CompileOptions:
        """The node's own options (cache, ports, margin) and policy, which a repository's policy
        can only narrow."""
        node = self.config.policy
        policy = node
        if desired.policy is not None:
            try:
                stated = Policy.model_validate({**node.model_dump(), **desired.policy})
            except ValidationError:
                raise MaasError.single(
                    "store-corrupt",
                    "the stored repository policy is not a policy; refusing to act",
                    position=Position(str(self.store.path)),
                ) from None
            policy = narrow(node, stated)
        return dataclasses.replace(self.config.compile_options(), policy=policy)

    def _compiled(self, desired: Desired, previous: Plan | None) -> Plan:
        """The one place the agent compiles, for push and pull mode alike (desired sources x
        live node x its own options and policy), remembered: a resync with the same sources,
        node and options (most of them) reuses the last plan instead of compiling again."""
        sources, assigned = desired.sources, desired.assigned
        node, self.foreign = self.node_source(frozenset(c.id for c in self.observed))
        self.live_node = node
        options = dataclasses.replace(
            self._options(desired), reserved_ports=spare_ports(self.observed, previous)
        )
        ports = {d.name: d.ports for d in previous.deployments} if previous else {}
        members = {k: v.model_dump(mode="json") for k, v in desired.groups.items()}
        frozen = json.dumps([assigned, members], sort_keys=True)
        key = (sources, frozen, node, options, ports)
        if self._memo is not None and self._memo[0] == key:
            return self._memo[1]
        deployments = load_deployments(sources, assigned)
        assert options.policy is not None
        if self._models is None or self._models[0] != (sources, frozen, options.policy):
            # Fetched once per set of sources: the hub is not asked again on every resync.
            models = fetch_metadata(deployments, self.config, options.policy)
            self._models = ((sources, frozen, options.policy), models)
        plan = compile_plan(
            deployments,
            node,
            options=options,
            previous=previous,
            models=self._models[1],
            shares=shares(desired.groups, node.metadata.name),
        )
        plan = wired(plan, desired.groups, options.cache_dir).model_copy(
            update={"node": self.node_name}
        )
        self._memo = (key, plan)
        return plan

    def submit(self, desired: Desired) -> Plan:
        """Validate and store new desired state; raises MaasError and stores nothing if bad."""
        with self.state_lock:
            plan = self.compile(desired)
            stored = self.store.load()
            if stored.model_copy(update={"applied_at": None}) != desired.model_copy(
                update={"plan": plan, "applied_at": None}
            ):  # else: nothing to write
                update = {"plan": plan, "applied_at": time.time()}
                self.store.save(desired.model_copy(update=update))
            for health in list(self.health.values()):
                health.retry()  # submitting again is how a permanent failure is retried
            return plan

    def stored_plan(self) -> Plan | None:
        try:
            return self.store.load().plan
        except MaasError:
            return None

    def stored(self) -> Desired:
        """The desired state as stored; MaasError when it cannot be read."""
        with self.state_lock:
            return self.store.load()

    def apply(self, sources: dict[str, str], *, dry_run: bool) -> tuple[Plan, list[Action]]:
        """`sources` over the stored ones, compiled, and stored unless `dry_run`: the plan, and
        the actions that bring what runs now to it."""
        with self.state_lock:
            stored = self.store.load()
            # A forced apply in pull mode keeps the commit: it is replaced at the next one.
            desired = Desired(
                sources=merge(stored.sources, sources), source_commit=stored.source_commit
            )
            plan = self.compile(desired) if dry_run else self.submit(desired)
            observed = self.refresh_observed()
            acted, sleeping = self.demand.preview(
                plan, *facts(plan, observed, self.health), time.time()
            )
            return plan, diff(acted, observed, asleep=sleeping)

    def delete(self, name: str) -> bool:
        """Remove a deployment's sources from the desired state; False when there is none."""
        with self.state_lock:
            sources, found = remove_deployment(self.store.load().sources, name)
            if found:
                self.submit(Desired(sources=sources))
            return found

    # the pass ---------------------------------------------------------------------------------
    def reconcile(self) -> PassResult:
        with self.lock:
            started = time.time()
            try:
                return self._reconcile(started)
            except Exception as exc:  # one bad pass must not end the loop; the next one retries
                log.error("reconcile_failed", exc_info=exc)
                self.errors = [internal_error("the reconcile pass", exc)]
                return self._finish(PassResult(started=started, ok=False))

    def _reconcile(self, started: float) -> PassResult:
        # self.errors is replaced, never emptied first: status (read from other threads) must
        # not show a refusing agent as a healthy one with nothing to run, even for a moment.
        try:
            # Observed first: a pass that refuses to act still shows what runs.
            self._observe()
            plan, errors = self.desired_plan()
            if not plan.deployments and self.observed and not self.store.path.exists():
                raise self._store_missing()
            self.errors = errors
        except MaasError as exc:
            self.errors = list(exc.diagnostics)
            log.error("reconcile refused", error=exc.diagnostics[0].render())
            return self._finish(PassResult(started=started, ok=False))
        now = time.time()  # the pass's one reading of the clock (actions note their own)
        observed = [
            dataclasses.replace(c, error=self.scrub(c.error)) if c.error else c
            for c in self.observed
        ]
        # Before it adopts a restarted agent's containers one by one: a roll-out in progress.
        self.health.update(adopted(plan, observed, self.health, now))
        self._notice(observed, now)  # before roll-backs: a crash now may take a version back
        plan = self._with_rollbacks(plan)
        full, plan = plan, self.demand.apply(plan, *facts(plan, self.observed, self.health), now)
        self._take_turns(plan)
        sleeping = asleep(full, plan)  # their containers are kept, stopped
        before, self.plan = self.plan, plan
        planned = {d.name: d for d in plan.deployments}
        self.health.update(settle(plan, observed, self.health))
        actions, healths = step(plan, observed, self.health, now, sleeping)
        self.health.update(healths)
        actions = serving_kept(actions, self.health, observed)
        result = PassResult(started=started, actions=tuple(self._prepared_first(actions, planned)))
        beside = self._overlapping(plan, before, result.actions)
        # Readers see what this pass decided before the engine works on it (stops wait out
        # their timeout, creations pull): the new plan, errors and preparations.
        self.publish()
        # Stops first (they free GPUs and ports), a few at a time: one by one, a hundred
        # backends that wait out the stop timeout take minutes, yet dockerd 20.10's
        # libnetwork has deadlocked on a hundred simultaneous exits. Creations and starts
        # then run a few at a time, as the engine creates containers concurrently.
        stops = [
            a
            for a in result.actions
            if a.kind in ("remove", "recreate", "stop") and a not in beside
        ]
        stopped = list(self.stop_pool.map(self._stop_for, stops))
        # Before creations: a sandbox nothing needs now must not hold a port a creation takes.
        gone = {a.container_id for a in stopped if a is not None and a.kind != "stop"}
        self.sandboxes.tidy(full, [c for c in self.observed if c.id not in gone])
        todo = [a for a in result.actions if a.kind in ("start", "create") or a in beside]
        todo[:0] = [a for a in stopped if a is not None and a.kind == "recreate"]
        todo = self._group_gate(plan, self._room_for(plan, todo))
        list(
            self.pool.map(
                lambda a: self._execute(a, planned.get(a.deployment), beside.get(a)), todo
            )
        )
        if stopped or todo:
            self.refresh_observed()  # status and apply previews see what this pass did
        self._forget_removed(plan, sleeping)
        self._keep_cache(plan)
        return self._finish(result)

    def _take_turns(self, plan: Plan) -> None:
        """The replicas of on-demand members that yield to a waiting member take no new
        requests (reported not ready, as draining ones are) until they stop; the others that
        yielded before serve again (reconcile/ondemand.py, turns)."""
        yielding = self.demand.yielding
        for d in plan.deployments:
            for key in ((d.name, r) for r in range(d.replicas)):
                health = self.health.get(key)
                if d.name in yielding and health is not None and health.ready:
                    health.draining = True
                    self._yielded.add(key)
        for key in [k for k in self._yielded if k[0] not in yielding]:
            self._yielded.discard(key)
            if key in self.health:
                self.health[key].draining = False

    def _overlapping(
        self, plan: Plan, before: Plan | None, actions: tuple[Action, ...]
    ) -> dict[Action, int]:
        """The recreations whose new container starts beside the old one, and its host port
        (reconcile/overlap.py); the others stop first."""
        known = [*(before.deployments if before else []), *self.last_good.values()]
        port_range = self.config.compile_options().port_range
        decided = overlaps(plan, actions, self.observed, known, port_range=port_range)
        for action, decision in decided.items():
            log.info(
                "roll-out",
                deployment=action.deployment,
                replica=action.replica,
                overlap=decision.ok,
                reason=decision.reason,
            )
        return {a: d.port for a, d in decided.items() if d.port is not None}

    def _with_rollbacks(self, plan: Plan) -> Plan:
        """The plan to act on: a deployment whose new version failed on a replica (not ready
        within its startup budget, a crash loop, a permanent failure) while an earlier version
        served goes back to that version, until a new spec is applied."""
        # What the last pass acted on and is now all ready (a version can get ready and be
        # replaced between two passes) is the version a failed roll-out goes back to.
        self._remember_good(self.plan.deployments if self.plan else [])
        chosen = []
        for d in plan.deployments:
            back = self.rollbacks.get(d.name)
            if back is not None and back[0] == d.spec_hash:
                chosen.append(back[1])
                continue
            self.rollbacks.pop(d.name, None)  # a new spec: tried afresh
            good = self.last_good.get(d.name)
            why = self._failed_version(d) if good and good.spec_hash != d.spec_hash else None
            short = rollback_short(plan, good) if good is not None and why is not None else None
            if short is not None:  # it would not fit the GPUs now: the new version stays
                if (d.name, d.spec_hash) not in self._roll_waits:
                    self._roll_waits.add((d.name, d.spec_hash))
                    log.error("roll-out not rolled back", deployment=d.name, reason=short)
                why = None
            if good is not None and why is not None:
                self.rollbacks[d.name] = (d.spec_hash, good, why)
                log.error("roll-out rolled back", deployment=d.name, reason=why)
                chosen.append(good)
                continue
            chosen.append(d)
        self._remember_good(chosen)
        for name in set(self.last_good) - {d.name for d in chosen}:
            del self.last_good[name]
        return plan.model_copy(update={"deployments": chosen})

    def _remember_good(self, deployments: list[PlanDeployment]) -> None:
        for d in deployments:
            replicas = [self.health.get((d.name, r)) for r in range(d.replicas)]
            if d.replicas and all(
                h is not None and h.ready and h.spec_hash == d.spec_hash for h in replicas
            ):
                self.last_good[d.name] = d

    def _failed_version(self, d: PlanDeployment) -> str | None:
        for replica in range(d.replicas):
            h = self.health.get((d.name, replica))
            if h is None or h.spec_hash != d.spec_hash or h.phase != "failed":
                continue
            if h.cause == "probe" or h.crash_loop or h.permanent:
                return f"replica {replica} of the new version failed: {h.last_error}"
        return None

    def _prepared_first(
        self, actions: list[Action], planned: dict[str, PlanDeployment]
    ) -> list[Action]:
        """Recreations whose new version is still being pulled or downloaded wait, and the old
        container keeps serving meanwhile; the preparation's end wakes the next pass. A failed
        preparation goes on as before: the creation reports it, with its back-off. Replicas of
        one deployment then roll one at a time (`_may_roll`)."""
        kept, preparing = [], {}
        rolling: set[str] = set()
        for action in actions:
            wanted = planned.get(action.deployment)
            if action.kind == "recreate" and action.container_id and wanted is not None:
                job = self.preparer.start(wanted)
                if job.phase in ("pulling", "downloading"):
                    preparing[action.deployment] = job
                    continue
                if wanted.replicas > 1 and not self._may_roll(wanted, action, rolling):
                    continue
            kept.append(action)
        self.preparing = preparing
        return kept

    def _may_roll(self, wanted: PlanDeployment, action: Action, rolling: set[str]) -> bool:
        """Replicas roll one at a time: a recreation waits while another replica of the new
        version is not ready yet (starting, or failed: the roll-out stops there, and the
        replicas of the old version keep serving)."""
        if wanted.name in rolling:
            return False  # one per pass
        for replica in range(wanted.replicas):
            health = self.health.get((wanted.name, replica))
            if replica == action.replica or health is None:
                continue
            if health.spec_hash == wanted.spec_hash and not health.ready:
                wait = (wanted.name, wanted.spec_hash, replica)
                if wait not in self._roll_waits:  # once per wait, not once per pass
                    self._roll_waits.add(wait)
                    log.info("roll-out waits", deployment=wanted.name, for_replica=replica)
                return False
        rolling.add(wanted.name)
        return True

    def _keep_cache(self, plan: Plan) -> None:
        """Stamp and collect the model cache; its trouble never fails the pass."""
        try:
            self.cache.pass_done(plan)
            self.cache_usage = self.cache.usage(plan)
        except OSError as exc:
            log.error("model cache", error=str(exc))

    @property
    def refused(self) -> bool:
        """The desired state cannot be read: nothing is touched, what runs is kept."""
        return any(d.code in STORE_REFUSALS for d in self.errors)

    def _store_missing(self) -> MaasError:
        """No desired state, yet containers of ours run: the state directory was lost or
        emptied. Reading that as "remove everything" would stop every model."""
        count = len(self.observed)
        return MaasError.single(
            "store-missing",
            f"no desired state, yet {count} container(s) of this node run; "
            "refusing to act so that none is removed",
            position=Position(str(self.store.path)),
            hints=(
                "apply the specs again (maasctl apply ...): the containers are adopted",
                f"or, to remove them all, start from an empty state: echo '{{}}' > "
                f"{self.store.path}",
            ),
        )

    def _observe(self) -> None:
        listed = self.engine.list_ours(self.owner.filters())
        self.observed = observe(listed, self.owner)
        self.sandboxes.observe(listed)

    def refresh_observed(self) -> list[ObservedContainer]:
        with contextlib.suppress(MaasError):  # the next pass reports an engine that went away
            self._observe()
        self.publish()  # status and the probes see the containers just created
        return self.observed

    def _room_for(self, plan: Plan, todo: list[Action]) -> list[Action]:
        """The starts the GPUs have room for now; the others wait as pending, with the reason
        (a foreign process took memory the plan counted on), instead of failing to load."""
        if not self.foreign or self.live_node is None:
            return todo
        margin = self.config.compile_options().gpu_margin_bytes
        waiting = blocked(plan, self.live_node, self.foreign, margin)
        for action in todo:
            if action.deployment in waiting:
                self.replica_health((action.deployment, action.replica)).wait(
                    waiting[action.deployment]
                )
        return [a for a in todo if a.deployment not in waiting]

    def _group_gate(self, plan: Plan, todo: list[Action]) -> list[Action]:
        """A group's primary starts only once its workers answer; one that lost a worker is
        restarted when they all answer again (reconcile/groups.py)."""
        running = {c.deployment for c in self.observed if c.running}
        for name in self.groups.step(plan, answers(plan, running=running), running):
            log.warning("restarting a group's primary: a lost worker is back", deployment=name)
            for c in (c for c in self.observed if c.deployment == name and c.running):
                with contextlib.suppress(MaasError):  # the next pass sees what it left
                    self.engine.stop(c.id)
        for action in todo:
            reason = self.groups.reason(action.deployment)
            if reason:
                self.replica_health((action.deployment, action.replica)).wait(reason)
        return [a for a in todo if not self.groups.reason(a.deployment)]

    def replica_health(self, key: Replica) -> ReplicaHealth:
        """The replica's health; a new one starts from the counters kept in the state folder."""
        health = self.health.get(key)
        if health is None:
            health = self.health[key] = ReplicaHealth()
            health.restarts, health.rollouts = self.counters.get(key)
        return health

    def _finish(self, result: PassResult) -> PassResult:
        self.counters.save(self.health)
        result = dataclasses.replace(result, duration_s=time.time() - result.started)
        self.last = result
        self.passes += 1
        self.publish()
        return result

    def publish(self) -> NodeSnapshot:
        """A new snapshot of the node for readers (the API, probes, metrics)."""
        with self._publishing:
            self.snapshot = NodeSnapshot(
                node_name=self.node_name,
                plan=self.plan,
                observed=tuple(self.observed),
                healths=MappingProxyType({k: copy.copy(h) for k, h in list(self.health.items())}),
                errors=tuple(self.errors),
                refused=self.refused,
                passes=self.passes,
                last=self.last,
                applied_at=self.applied_at,
                removal_errors=MappingProxyType(dict(self.removal_errors)),
                foreign=tuple(self.foreign),
                cache_usage=tuple(self.cache_usage),
                rollbacks=MappingProxyType(dict(self.rollbacks)),
                preparing=MappingProxyType(dict(self.preparing)),
                group_waiting=MappingProxyType(
                    {k: tuple(v) for k, v in self.groups.waiting.items()}
                ),
            )
            return self.snapshot

    def probe_result(self, key: Replica, ok: bool, now: float, *, startup_timeout_s: float) -> bool:
        """Record a probe of the replica; True when it must be restarted. Published at once: a
        replica is routable as soon as its readiness probe passes, not at the next pass."""
        health = self.health.get(key)
        if health is None:
            return False
        was_ready = health.ready
        restart = health.probe_result(ok, now, startup_timeout_s=startup_timeout_s)
        self._publish_health(key, health)
        if health.serving is not None and health.ready and not was_ready:
            self.wake()  # the old container of an overlapping roll-out may stop now
        return restart

    def _publish_health(self, key: Replica, health: ReplicaHealth) -> None:
        with self._publishing:  # on the latest snapshot, which a pass may have just replaced
            healths = {**self.snapshot.healths, key: copy.copy(health)}
            self.snapshot = dataclasses.replace(self.snapshot, healths=MappingProxyType(healths))

    def _notice(self, observed: list[ObservedContainer], now: float) -> None:
        """Crashes and adoptions (`step.notice`), a new replica's health starting from the
        counters kept in the state folder."""
        for container in observed:
            self.replica_health((container.deployment, container.replica))
        before = dict(self.health)
        self.health.update(notice(observed, before, now))
        for container in observed:
            key = (container.deployment, container.replica)
            health = self.health[key]
            if health.restarts > before[key].restarts:
                log.warning(
                    "replica crashed",
                    deployment=key[0],
                    replica=key[1],
                    exit_code=container.exit_code,
                    backoff_s=health.backoff_s,
                )

    def _execute(
        self, action: Action, planned: PlanDeployment | None, beside: int | None = None
    ) -> None:
        """One start or creation; `beside`: the host port of a new container that starts next
        to the old one of its replica, which serves until the new one is ready."""
        key = (action.deployment, action.replica)
        health = self.replica_health(key)
        now = time.time()
        if not health.refused:  # a refusal is logged once, when it happens or changes
            log.info(
                "action",
                kind=action.kind,
                deployment=action.deployment,
                replica=action.replica,
                reason=action.reason,
            )
        try:
            assert planned is not None
            if action.kind == "start" and action.container_id:
                self._learn_secrets(planned)  # an error of this start may quote them
                if self._joins(planned, action):
                    self.engine.start(action.container_id)
                    # As after a create: the process runs from here (the backend's load).
                    health.started(action.container_id, time.time())
                    return
                # Its network sandbox was made anew: a new container joins the new one.
                self.engine.remove(action.container_id, stop_timeout=0)
            if action.kind == "recreate":
                health.rolled_out(planned.spec_hash)
            health.spec_hash = planned.spec_hash
            if beside is not None:
                health.serving = action.container_id
            self._create(planned, action.replica, health, beside)
        except MaasError as exc:
            cause = "pull" if isinstance(exc, ImageMissing | PrepareFailed) else "create"
            message = self.scrub(exc.diagnostics[0].message)
            health.fail(message, now, cause, permanent=not exc.retryable)
            log.error(
                "action failed",
                deployment=action.deployment,
                replica=action.replica,
                error=message,
                permanent=not exc.retryable,
                backoff_s=health.backoff_s,
            )
        except Exception as exc:
            # A bug met by one replica fails that replica (with back-off), not the whole pass.
            health.fail(
                internal_error(f"{action.kind} of this replica", exc).message, now, "create"
            )
            log.error(
                "action crashed",
                deployment=action.deployment,
                replica=action.replica,
                backoff_s=health.backoff_s,
                exc_info=exc,
            )

    def _joins(self, planned: PlanDeployment, action: Action) -> bool:
        """Whether the stopped container `action` starts can join its network: its own, or
        its sandbox, started first (the sandbox it was created in, not one made since)."""
        joined = next((c.sandbox for c in self.observed if c.id == action.container_id), "")
        return not joined or self.sandboxes.ensure(planned, action.replica) == joined

    def _stop_for(self, action: Action) -> Action | None:
        """Remove the container a remove or recreate replaces, or stop the one a sleeping
        on-demand deployment keeps; the action when that worked.

        A failure is recorded on the replica (back-off), and its recreate waits for a later pass:
        the old container still holds its name and GPUs.
        """
        if not action.container_id:
            return action
        log.info(
            "action",
            kind=action.kind,
            deployment=action.deployment,
            replica=action.replica,
            reason=action.reason,
        )
        key = (action.deployment, action.replica)
        own = self.health.get(key)
        if own is not None and own.serving == action.container_id:
            # The old container of an overlapping roll-out, its new one ready: it leaves the
            # routing, then drains like a replaced replica.
            own.serving = None
            self._publish_health(key, own)
            time.sleep(self.config.drain_s)
        elif drains(action, self.health, self.config.drain_s):
            self.health[key].draining = True
            self._publish_health(key, self.health[key])  # the gateway must see it before the stop
            time.sleep(self.config.drain_s)
        try:
            stop_timeout = self.demand.stop_timeout(action.deployment, self.config.stop_timeout_s)
            if action.kind == "stop":  # kept for the next wake (an on-demand one sleeps)
                self.engine.stop(action.container_id, timeout=stop_timeout)
                self.replica_health((action.deployment, action.replica)).asleep()
            else:
                self.engine.remove(action.container_id, stop_timeout=stop_timeout)
        except Exception as exc:
            health = self.replica_health((action.deployment, action.replica))
            health.draining = False  # it still runs: it serves again
            self._publish_health((action.deployment, action.replica), health)
            permanent = isinstance(exc, MaasError) and not exc.retryable
            if isinstance(exc, MaasError):
                message = self.scrub(exc.diagnostics[0].message)
                log.error("remove failed", deployment=action.deployment, error=message)
            else:
                message = internal_error("removing this replica", exc).message
                log.error("remove crashed", deployment=action.deployment, exc_info=exc)
            health.fail(message, time.time(), "remove", permanent=permanent)
            if action.kind == "remove":
                self.removal_errors[action.deployment] = {"error": message, "permanent": permanent}
            return None
        return action

    def _create(
        self,
        planned: PlanDeployment,
        replica: int,
        health: ReplicaHealth,
        beside: int | None = None,
    ) -> None:
        job = self.preparer.ready(planned)
        if job.phase == "failed":
            raise PrepareFailed.single(
                "prepare", job.error or "preparation failed", retryable=job.retryable
            )
        if job.phase != "done":
            health.phase, health.progress, health.bar = job.phase, job.progress, job.bar
            return
        sandbox = self.sandboxes.ensure(planned, replica) if beside is None else None
        try:
            # Right before creation: a link can appear under an allowed root after planning.
            mounts = resolved_mounts(planned, policy=self.policy, cache_dir=self.config.cache_dir)
            spec = container_spec(
                planned.model_copy(update={"mounts": mounts}),
                replica,
                owner=self.owner,
                bind_address=self.config.bind_address,
                secret=self._secret,
                host_port=beside,
                name=beside_name(self.owner, planned, replica) if beside is not None else None,
                sandbox=sandbox,
            )
        except MaasError as exc:
            if exc.retryable:
                raise
            self._refuse(planned.name, replica, health, exc)
            return
        try:
            container_id = self.engine.create_and_start(spec)
        except ImageMissing:
            self.preparer.forget(planned.name)  # removed meanwhile: pull it again
            raise
        health.started(container_id, time.time(), planned.spec_hash)

    def _refuse(self, name: str, replica: int, health: ReplicaHealth, exc: MaasError) -> None:
        """A permanent refusal before the engine is asked: recorded once; each pass checks
        again (a fixed link or secret is taken at once) without back-off or a log line."""
        message = self.scrub(exc.diagnostics[0].message)
        if not health.refused or health.last_error != message:
            log.error("replica refused", deployment=name, replica=replica, error=message)
        health.refuse(message)

    def _secret(self, name: str) -> str:
        value = read_secret(self.config.secrets_dir, name)
        if value:
            # As the engine may quote it (Go's %q, JSON): scrubbed in each form.
            self._secrets.update({value, repr(value)[1:-1], json.dumps(value)[1:-1]})
        return value

    def _learn_secrets(self, planned: PlanDeployment) -> None:
        """The values of a container created before this agent started, for `scrub`."""
        for value in planned.env.values():
            if isinstance(value, SecretRef):
                with contextlib.suppress(MaasError):
                    self._secret(value.secret)

    def scrub(self, text: str) -> str:
        """`text` without any secret value this agent resolved (longest first)."""
        for value in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(value, "<secret>")
        return text

    def _forget_removed(self, plan: Plan, sleeping: dict[str, PlanDeployment]) -> None:
        present = {c.deployment for c in self.observed}
        for name in [n for n in self.removal_errors if n not in present]:
            del self.removal_errors[name]
        wanted = {
            (d.name, r) for d in [*plan.deployments, *sleeping.values()] for r in range(d.replicas)
        }
        for key in [k for k in self.health if k not in wanted]:
            del self.health[key]

    def restart_unhealthy(self, key: Replica, reason: str) -> None:
        """A failed liveness or startup probe: stop the container; back-off decides the start."""
        with self.lock:
            health = self.health.get(key)
            if health is None or health.container_id is None:
                return
            log.warning(
                "restarting unhealthy replica", deployment=key[0], replica=key[1], reason=reason
            )
            try:
                self.engine.stop(health.container_id)
            except MaasError as exc:
                log.error("stop failed", error=self.scrub(exc.diagnostics[0].message))
