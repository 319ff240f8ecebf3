"""maas-agent: the node agent's process. Wires configuration, engine, reconciler, API, health
probes, Docker events, metrics, pull mode and systemd notification into one asyncio loop.

Stopping the agent stops no container: SIGTERM ends the loop and leaves the engine as it is.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import grp
import os
import signal
import socket
import stat
import sys
import time
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from maas.agent.api.demand import add_demand_status
from maas.agent.api.metrics import Metrics
from maas.agent.api.server import Api
from maas.agent.api.status import status_report
from maas.agent.config import AgentConfig, load_config
from maas.agent.desired.gitsource import GitSource
from maas.agent.desired.store import Desired
from maas.agent.reconcile.probes import Prober
from maas.agent.reconcile.reconciler import NodeSource, Reconciler
from maas.compiler import (
    Diagnostic,
    DiagnosticStatus,
    FleetPlan,
    MaasError,
    NodeStatus,
    SourceStatus,
    TaskStatus,
)
from maas.host.engine import Engine
from maas.host.logs import configure_logging
from maas.host.ports import port_range_warning
from maas.host.sdnotify import Notifier
from maas.host.supervise import Supervisor

log = structlog.get_logger("maas.agent")


def node_provider(config: AgentConfig) -> NodeSource:
    """The node the agent plans on: its node file as written, else the live probe (GPU memory
    held by its own containers counted as free for them, foreign processes reported)."""
    if config.node_file is not None:
        from maas.compiler import load_sources

        text = config.node_file.read_text(encoding="utf-8")
        documents = load_sources({str(config.node_file): text}, kinds=("Node",))
        if documents.diagnostics or len(documents.nodes) != 1:
            raise MaasError(documents.diagnostics or [])
        node = documents.nodes[0].model
        return lambda ours: (node, [])
    from maas.host.probe import probe_live

    return probe_live


class Agent:
    def __init__(
        self, config: AgentConfig, config_path: Path | None, overrides: dict[str, Any]
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.overrides = overrides  # command-line flags win over the file, on reload too
        self.engine = Engine()
        self.reconciler = Reconciler(config, self.engine, node_provider(config), wake=self.wake)
        self.notifier = Notifier()
        self.supervisor = Supervisor(log)
        self.metrics = Metrics(
            lambda: self.reconciler.snapshot, self.supervisor, self.reconciler.demand
        )
        self.source = self._git_source(config)
        if self.source is not None:
            # The commit in force survives a restart: it is stored with the plan it gave.
            self.source.state.applied_commit = self._stored_commit()
        self.ready_sent = False
        self.stopping = asyncio.Event()
        self.woken = asyncio.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.started = time.time()
        self.warnings = host_warnings(config)

    def _git_source(self, config: AgentConfig) -> GitSource | None:
        if config.source is None:
            return None
        return GitSource(
            url=config.source.url,
            branch=config.source.branch,
            node=self.reconciler.node_name,
            workdir=config.state_dir / "git",
            verify_signatures=config.source.verify_signatures,
        )

    def _stored_commit(self) -> str | None:
        try:
            return self.reconciler.stored().commit_in_force()
        except MaasError:
            return None  # the reconcile pass reports the unreadable store

    def wake(self) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.woken.set)

    def status(self) -> NodeStatus:
        """The node's status document (maas.compiler.status), from the reconciler's snapshot."""
        source = None
        if self.source is not None:
            state = self.source.state
            source = SourceStatus(
                url=self.source.url,
                branch=self.source.branch,
                applied_commit=state.applied_commit,
                refused_commit=state.refused_commit,
                error=[d.render() for d in state.error],
                fetch_error=[d.render() for d in state.fetch_error],
                fetched_at=state.fetched_at,
            )
        snapshot, now = self.reconciler.snapshot, time.time()
        report = status_report(
            snapshot,
            now=now,
            warnings=[DiagnosticStatus.model_validate(d.as_dict()) for d in self.warnings],
            tasks={
                name: TaskStatus.model_validate(task)
                for name, task in self.supervisor.report().items()
            },
            source=source,
        )
        return add_demand_status(report, snapshot, self.reconciler.demand, now)

    # loops ----------------------------------------------------------------------------------
    async def reconcile_loop(self) -> None:
        while not self.stopping.is_set():
            self.woken.clear()
            with self.supervisor.guard("reconcile"):
                result = await asyncio.to_thread(self.reconciler.reconcile)
                self.metrics.observe_pass(result)
                if not self.ready_sent:
                    # Ready once the first pass ran, even one that refused to act (a corrupt
                    # store): the API then answers and status says why nothing converges.
                    self.ready_sent = True
                    self.notifier.ready(self._summary())
                    log.info(
                        "ready",
                        node=self.reconciler.node_name,
                        containers=len(self.reconciler.snapshot.observed),
                    )
                else:
                    self.notifier.status(self._summary())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken_or_stopping(), timeout=self.config.resync_s)

    async def watchdog_loop(self) -> None:
        """WATCHDOG=1 only while every task runs and none is stuck in a pass: a dead or hung
        loop stops the pings, and systemd restarts the agent."""
        period = self.notifier.watchdog_s
        if not period:
            return
        while not self.stopping.is_set():
            if self.supervisor.healthy():
                self.notifier.watchdog()
            else:
                log.error("watchdog_withheld", tasks=self.supervisor.report())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), timeout=period / 3)

    async def _woken_or_stopping(self) -> None:
        stop = asyncio.ensure_future(self.stopping.wait())
        wake = asyncio.ensure_future(self.woken.wait())
        try:
            await asyncio.wait({stop, wake}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            wake.cancel()

    def _summary(self) -> str:
        snapshot = self.reconciler.snapshot
        plan = snapshot.plan
        wanted = sum(d.replicas for d in plan.deployments) if plan else 0
        errors = f"; error: {snapshot.errors[0].message}" if snapshot.errors else ""
        ready = snapshot.ready_replicas()
        return f"{ready}/{wanted} replicas ready{errors}"

    def watch_events(self) -> None:
        """Docker events wake the loop early (a thread with its own client: the stream blocks).
        An engine that goes away is retried here; anything else ends the call, and the
        supervisor logs it and starts it again."""
        while not self.stopping.is_set():
            try:
                engine = Engine()
                for event in engine.events(self.reconciler.owner.filters()):
                    if event.get("status") == "die":
                        # dockerd announces "die" before it records the exit; an inspect waits
                        # for the container's lock, so the next pass lists it as exited.
                        with contextlib.suppress(MaasError):
                            engine.inspect(str(event.get("id", "")))
                    self.wake()
                    if self.stopping.is_set():
                        return
            except MaasError as exc:
                log.warning("event stream lost", error=exc.diagnostics[0].message)
            time.sleep(2)

    async def pull_loop(self) -> None:
        assert self.source is not None and self.config.source is not None
        while not self.stopping.is_set():
            with self.supervisor.guard("pull"):
                await self._pull_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), timeout=self.config.source.interval_s)

    async def _pull_once(self) -> None:
        assert self.source is not None
        source = self.source
        try:
            found = await asyncio.to_thread(source.poll)
        except MaasError as exc:
            # Kept in the source's state (status shows it) until a fetch works again.
            log.warning("git fetch failed", error=exc.diagnostics[0].render())
            return
        if found is not None:
            await asyncio.to_thread(self._submit_commit, *found)
        if source.state.error and source.state.refused_commit != source.state.reported:
            source.state.reported = source.state.refused_commit
            log.error(
                "refused commit",
                commit=source.state.refused_commit,
                error=source.state.error[0].render(),
            )

    def _submit_commit(self, desired: Desired, fleet: FleetPlan) -> None:
        """A commit's share for this node, compiled and stored as a push is (the node's live
        probe, its own policy, cache and ports); refused when that compile fails. A commit that
        could not be stored (a transient error) is tried again at the next poll."""
        assert self.source is not None and desired.source_commit is not None
        try:
            self.reconciler.submit(desired)
        except MaasError as exc:
            if exc.retryable:
                log.warning("cannot store commit", error=exc.diagnostics[0].message)
                return
            self.source.refused(desired.source_commit, exc)
            return
        self.source.applied(desired.source_commit, fleet)
        log.info("applied commit", commit=desired.source_commit)
        self.wake()

    # lifecycle ------------------------------------------------------------------------------
    async def run(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.loop.add_signal_handler(signal.SIGTERM, self.stop)
        self.loop.add_signal_handler(signal.SIGINT, self.stop)
        self.loop.add_signal_handler(signal.SIGHUP, self.reload)
        api = Api(self)
        # Cancelling the handler of a client that went away ends its followed log stream.
        # keepalive_timeout also bounds a connection that never completes its request headers
        # (aiohttp starts it when the connection is made); Api bounds reading the body.
        runner = web.AppRunner(
            api.app(),
            access_log=None,
            handler_cancellation=True,
            keepalive_timeout=self.config.request_timeout_s,
        )
        await runner.setup()
        sock = open_socket(self.config.socket, self.config.socket_group)
        await web.SockSite(runner, sock).start()
        self.metrics.serve(self.config.metrics_address, self.config.metrics_port)
        self.supervisor.thread("events", self.watch_events, self.stopping)
        spawn = self.supervisor.spawn
        # A pass longer than the watchdog period is stuck (the pings used to follow each pass).
        stall = self.notifier.watchdog_s
        prober = Prober(self)
        tasks = [
            spawn("reconcile", self.reconcile_loop, stall_s=stall, stopping=self.stopping),
            spawn("probes", prober.run, stall_s=stall, stopping=self.stopping),
            asyncio.create_task(self.watchdog_loop(), name="watchdog"),
        ]
        if self.source is not None:
            tasks.append(spawn("pull", self.pull_loop, stopping=self.stopping))
        log.info("started", node=self.reconciler.node_name, socket=str(self.config.socket))
        for warning in self.warnings:
            log.warning(warning.code, problem=warning.render())
        await self.stopping.wait()
        self.notifier.stopping()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        api.close_streams()
        await runner.cleanup()
        with contextlib.suppress(OSError):
            self.config.socket.unlink()
        log.info("stopped; containers keep running", node=self.reconciler.node_name)

    def stop(self) -> None:
        self.stopping.set()

    def reload(self) -> None:
        try:
            config = load_config(self.config_path, self.overrides)
        except MaasError as exc:
            log.error(
                "reload failed; keeping the old configuration", error=exc.diagnostics[0].render()
            )
            return
        if config.label_namespace != self.reconciler.owner.namespace:
            # Switching on the fly would orphan every container of the old namespace.
            log.warning(
                "label_namespace_unchanged",
                reason="the label namespace changes at the next start",
                namespace=self.reconciler.owner.namespace,
            )
        self.config = config
        self.reconciler.config = config
        self.warnings = host_warnings(config)
        log.info("configuration reloaded")
        self.wake()


def host_warnings(config: AgentConfig) -> list[Diagnostic]:
    """What about this host the operator should fix (shown in status and the journal)."""
    warning = port_range_warning(config.port_range)
    return [warning] if warning else []


def open_socket(path: Path, group: str | None) -> socket.socket:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not stat.S_ISSOCK(path.lstat().st_mode):
        # Only a socket (of a dead agent) is ours to replace; anything else is someone's file.
        raise MaasError.single(
            "socket",
            f"{path} exists and is not a socket; refusing to delete it",
            hints=("move it away, or point the agent elsewhere with --socket",),
        )
    if path.exists():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # stale socket of a dead agent
        else:
            raise MaasError.single("socket", f"another agent is listening on {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o117)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o660)
    if group:
        with contextlib.suppress(KeyError, PermissionError):
            os.chown(path, -1, grp.getgrnam(group).gr_gid)
    sock.listen(64)
    return sock


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maas-agent",
        description="MaaS-Base node agent: "
        "reconciles this host's Docker containers against its plan.",
    )
    parser.add_argument("--config", type=Path, help="configuration file (/etc/maas/agent.yaml)")
    parser.add_argument("--node-name", help="this node's name in plans (default: the host name)")
    parser.add_argument(
        "--label-namespace", help="prefix of the container labels and names (default maas)"
    )
    parser.add_argument(
        "--state-dir", type=Path, help="desired state, counters, metadata (default /var/lib/maas)"
    )
    parser.add_argument(
        "--socket", type=Path, help="the API socket maasctl talks to (default /run/maas/agent.sock)"
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        help="models and per-deployment folders (default /var/lib/maas/cache)",
    )
    parser.add_argument(
        "--bind-address", help="the address replicas' ports are published on (default 127.0.0.1)"
    )
    parser.add_argument(
        "--metrics-port", type=int, help="Prometheus metrics on 127.0.0.1:PORT (default 9464)"
    )
    parser.add_argument("--node-file", type=Path, help="use this Node profile instead of probing")
    parser.add_argument(
        "--resync",
        type=float,
        dest="resync_s",
        metavar="SECONDS",
        help="a full reconcile pass at least this often (default 30)",
    )
    parser.add_argument("--source", choices=("git",), help="pull desired state from git")
    parser.add_argument("url", nargs="?", help="the git URL for --source git")
    parser.add_argument("--branch", default="main", help="the branch to follow (default main)")
    parser.add_argument(
        "--interval",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how often the repository is fetched (default 30)",
    )
    parser.add_argument(
        "--verify-signatures", action="store_true", help="refuse commits without a valid signature"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    args = parse_args(argv)
    overrides: dict[str, Any] = {
        k: getattr(args, k)
        for k in (
            "node_name",
            "label_namespace",
            "state_dir",
            "socket",
            "cache_dir",
            "bind_address",
            "metrics_port",
            "node_file",
            "resync_s",
        )
    }
    if args.source == "git":
        if not args.url:
            print("maas-agent: --source git needs a URL", file=sys.stderr)
            return 2
        overrides["source"] = {
            "url": args.url,
            "branch": args.branch,
            "interval_s": args.interval,
            "verify_signatures": args.verify_signatures,
        }
    try:
        config = load_config(args.config, overrides)
        agent = Agent(config, args.config, overrides)
        asyncio.run(agent.run())
    except MaasError as exc:
        for diagnostic in exc.diagnostics:
            print(f"maas-agent: {diagnostic.render()}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
