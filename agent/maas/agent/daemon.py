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
import sys
import threading
import time
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from maas.agent.api import Api
from maas.agent.config import AgentConfig, load_config
from maas.agent.engine import Engine
from maas.agent.gitsource import GitSource
from maas.agent.hostports import port_range_warning
from maas.agent.metrics import Metrics
from maas.agent.probing import Prober
from maas.agent.reconcile import Reconciler
from maas.agent.sdnotify import Notifier
from maas.agent.status import status_report
from maas.agent.store import Desired
from maas.compiler.diagnostics import Diagnostic, MaasError
from maas.compiler.repo import FleetPlan

log = structlog.get_logger("maas.agent")


def node_provider(config: AgentConfig) -> Any:
    if config.node_file is not None:
        from maas.compiler.sources import load_sources

        text = config.node_file.read_text(encoding="utf-8")
        documents = load_sources({str(config.node_file): text}, kinds=("Node",))
        if documents.diagnostics or len(documents.nodes) != 1:
            raise MaasError(documents.diagnostics or [])
        node = documents.nodes[0].model
        return lambda: node
    from maas.agent.probe import probe

    return probe


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
        self.metrics = Metrics(self.reconciler)
        self.source = self._git_source(config)
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

    def wake(self) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.woken.set)

    def status(self) -> dict[str, Any]:
        r = self.reconciler
        extra: dict[str, Any] = {
            "applied_at": r.applied_at,
            "errors": [d.as_dict() for d in r.errors],
            "warnings": [d.as_dict() for d in self.warnings],
            "last_pass": {
                "at": r.last.started,
                "duration_s": round(r.last.duration_s, 4),
                "ok": r.last.ok,
                "actions": [a.__dict__ for a in r.last.actions if a.kind != "noop"],
            },
        }
        if self.source is not None:
            state = self.source.state
            extra["source"] = {
                "url": self.source.url,
                "branch": self.source.branch,
                "applied_commit": state.applied_commit,
                "refused_commit": state.refused_commit,
                "error": [d.render() for d in state.error],
            }
        extra["removal_errors"] = dict(r.removal_errors)
        return status_report(r.node_name, r.plan, r.observed, r.health, extra)

    # loops ----------------------------------------------------------------------------------
    async def reconcile_loop(self) -> None:
        first = True
        while not self.stopping.is_set():
            self.woken.clear()
            result = await asyncio.to_thread(self.reconciler.reconcile)
            self.metrics.observe_pass(result)
            if first and result.ok:
                first = False
                self.notifier.ready(self._summary())
                log.info(
                    "ready",
                    node=self.reconciler.node_name,
                    containers=len(self.reconciler.observed),
                )
            else:
                self.notifier.status(self._summary())
            self.notifier.watchdog()
            # Pings must come at least twice per watchdog period, whatever the resync period.
            idle = min(self.config.resync_s, (self.notifier.watchdog_s or float("inf")) / 2)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken_or_stopping(), timeout=idle)

    async def _woken_or_stopping(self) -> None:
        stop = asyncio.ensure_future(self.stopping.wait())
        wake = asyncio.ensure_future(self.woken.wait())
        try:
            await asyncio.wait({stop, wake}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            wake.cancel()

    def _summary(self) -> str:
        r = self.reconciler
        plan = r.plan
        ready = sum(1 for h in r.health.values() if h.ready)
        wanted = sum(d.replicas for d in plan.deployments) if plan else 0
        errors = f"; error: {r.errors[0].message}" if r.errors else ""
        return f"{ready}/{wanted} replicas ready{errors}"

    def watch_events(self) -> None:
        """Docker events wake the loop early (a thread with its own client: the stream blocks)."""
        while not self.stopping.is_set():
            try:
                engine = Engine()
                for event in engine.events(self.reconciler.owner):
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
            try:
                found = await asyncio.to_thread(self.source.poll)
            except MaasError as exc:
                log.warning("git fetch failed", error=exc.diagnostics[0].message)
                found = None
            if found is not None:
                await asyncio.to_thread(self._submit_commit, *found)
            elif self.source.state.error:
                log.error(
                    "refused commit",
                    commit=self.source.state.refused_commit,
                    error=self.source.state.error[0].render(),
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), timeout=self.config.source.interval_s)

    def _submit_commit(self, desired: Desired, fleet: FleetPlan) -> None:
        """A commit's share for this node, compiled and stored as a push is (the node's live
        probe, its own policy, cache and ports); refused when that compile fails."""
        assert self.source is not None and desired.source_commit is not None
        try:
            self.reconciler.submit(desired)
        except MaasError as exc:
            if exc.retryable:
                log.warning("cannot store commit", error=exc.diagnostics[0].message)
                return  # tried again at the next poll
            self.source.refused(desired.source_commit, exc)
            log.error(
                "refused commit",
                commit=desired.source_commit,
                error=exc.diagnostics[0].render(),
            )
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
        runner = web.AppRunner(api.app(), access_log=None, handler_cancellation=True)
        await runner.setup()
        sock = open_socket(self.config.socket, self.config.socket_group)
        await web.SockSite(runner, sock).start()
        self.metrics.serve(self.config.metrics_address, self.config.metrics_port)
        threading.Thread(target=self.watch_events, daemon=True, name="events").start()
        tasks = [
            asyncio.create_task(self.reconcile_loop()),
            asyncio.create_task(Prober(self).run()),
        ]
        if self.source is not None:
            tasks.append(asyncio.create_task(self.pull_loop()))
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
    parser = argparse.ArgumentParser(
        prog="maas-agent",
        description="MaaS-Base node agent: "
        "reconciles this host's Docker containers against its plan.",
    )
    parser.add_argument("--config", type=Path, help="configuration file (/etc/maas/agent.yaml)")
    parser.add_argument("--node-name")
    parser.add_argument(
        "--label-namespace", help="prefix of the container labels and names (default maas)"
    )
    parser.add_argument("--state-dir", type=Path)
    parser.add_argument("--socket", type=Path)
    parser.add_argument("--cache-dir", type=Path)
    parser.add_argument("--bind-address")
    parser.add_argument("--metrics-port", type=int)
    parser.add_argument("--node-file", type=Path, help="use this Node profile instead of probing")
    parser.add_argument("--resync", type=float, dest="resync_s", metavar="SECONDS")
    parser.add_argument("--source", choices=("git",), help="pull desired state from git")
    parser.add_argument("url", nargs="?", help="the git URL for --source git")
    parser.add_argument("--branch", default="main")
    parser.add_argument("--interval", type=float, default=30.0, metavar="SECONDS")
    parser.add_argument("--verify-signatures", action="store_true")
    return parser.parse_args(argv)


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


def configure_logging() -> None:
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
    )


if __name__ == "__main__":
    sys.exit(main())
