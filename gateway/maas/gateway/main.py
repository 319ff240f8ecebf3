"""maas-gateway: the node's OpenAI-compatible endpoint, a sibling process of maas-agent.

`maas-gateway [--config FILE] [--host H] [--port P] [--agent-socket PATH] ...` serves;
`maas-gateway key new|hash` manages the hashed API keys file. SIGTERM drains and stops, SIGHUP
re-reads the keys file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import Any

import structlog

from maas.compiler import MaasError
from maas.gateway.app import Gateway
from maas.gateway.config import (
    DEFAULT_KEYS_FILE,
    GatewayConfig,
    check_exposure,
    load_config,
)
from maas.gateway.front import listening
from maas.gateway.keys import KeyRing, hash_key, new_key
from maas.gateway.source import AgentRouteSource
from maas.host import discovery
from maas.host.logs import configure_logging
from maas.host.sdnotify import Notifier

log = structlog.get_logger("maas.gateway")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="maas-gateway", description="One OpenAI-compatible endpoint for the node's models."
    )
    parser.add_argument("--config", type=Path, help="default /etc/maas/gateway.yaml if it exists")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default 8080)")
    parser.add_argument(
        "--agent-socket",
        type=Path,
        help="the agent's socket; default: $MAAS_AGENT_SOCKET, then the run directory's "
        "agent.sock ($MAAS_RUN_DIR, .run/ of the current directory or of this checkout) when "
        "one exists, then /run/maas/agent.sock",
    )
    parser.add_argument("--keys-file", type=Path, help="default /etc/maas/gateway.keys")
    parser.add_argument(
        "--allow-unauthenticated-remote",
        action="store_true",
        default=None,
        help="listen beyond localhost even without API keys",
    )
    parser.add_argument(
        "--event-loop",
        choices=["auto", "uvloop", "asyncio"],
        default="auto",
        help="auto: uvloop when installed (default)",
    )
    sub = parser.add_subparsers(dest="command")
    key = sub.add_parser("key", help="manage API keys").add_subparsers(dest="key_command")
    create = key.add_parser("new", help="make a key, print it once, append its digest")
    create.add_argument("--keys-file", dest="key_file", type=Path, default=None)
    create.add_argument("--name", default="", help="a label written next to the digest")
    key.add_parser("hash", help="print the digest line of a key read from standard input")
    return parser.parse_args(argv)


def key_command(args: argparse.Namespace) -> int:
    if args.key_command == "hash":
        key = sys.stdin.readline().strip()
        if not key:
            print("maas-gateway: no key on standard input", file=sys.stderr)
            return 2
        print(hash_key(key))
        return 0
    if args.key_command == "new":
        path: Path = args.key_file or args.keys_file or DEFAULT_KEYS_FILE
        key = new_key()
        line = f"{hash_key(key)} {args.name}".rstrip() + "\n"
        try:
            # Digests are not keys, but who holds which key is nobody else's business: 0640.
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            with os.fdopen(fd, "a", encoding="utf-8") as handle:
                handle.write(line)
        except OSError as exc:
            print(f"maas-gateway: cannot write {path}: {exc.strerror}", file=sys.stderr)
            return 1
        print(key)
        print(f"maas-gateway: digest appended to {path}; the key is not stored", file=sys.stderr)
        return 0
    print("maas-gateway: key new | key hash", file=sys.stderr)
    return 2


async def serve(config: GatewayConfig, keys: KeyRing) -> None:
    named = config.agent_socket
    source = AgentRouteSource(
        discovery.agent_socket(named),
        upstream_host=config.upstream_host,
        interval_s=config.poll_interval_s,
        locate=None if named else lambda: discovery.agent_socket(None),
    )
    gateway = Gateway(config, source, keys)
    notifier = Notifier()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, gateway.reload_keys)
    async with listening(gateway, config.host, config.port):
        log.info("listening", host=config.host, port=config.port, keys=keys.required)
        notifier.ready(f"listening on {config.host}:{config.port}")
        watchdog = asyncio.create_task(_watchdog(notifier, gateway), name="gateway-watchdog")
        await stop.wait()
        watchdog.cancel()
        notifier.stopping()


async def _watchdog(notifier: Notifier, gateway: Gateway) -> None:
    """WATCHDOG=1 from the event loop itself, while every background task runs: a stuck loop or
    a dead task stops the pings and systemd restarts the gateway."""
    if not notifier.watchdog_s:
        return
    while True:
        if gateway.supervisor.healthy():
            notifier.watchdog()
        else:
            log.error("watchdog_withheld", tasks=gateway.supervisor.report())
        await asyncio.sleep(notifier.watchdog_s / 3)


def _event_loop_runner(choice: str) -> Any:
    """uvloop when installed: it lowers the gateway's CPU cost per request (see bench/gateway)."""
    if choice == "asyncio":
        return asyncio.run
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise MaasError.single("gateway-loop", "uvloop is not installed") from None
        return asyncio.run
    return uvloop.run


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    args = parse_args(argv)
    if args.command == "key":
        return key_command(args)
    overrides = {
        "host": args.host,
        "port": args.port,
        "agent_socket": args.agent_socket,
        "keys_file": args.keys_file,
        "allow_unauthenticated_remote": args.allow_unauthenticated_remote,
    }
    try:
        config = load_config(args.config, overrides)
        keys = KeyRing(config.keys_file)
        check_exposure(config, keys.required)
        with contextlib.suppress(KeyboardInterrupt):
            _event_loop_runner(args.event_loop)(serve(config, keys))
    except MaasError as exc:
        for diagnostic in exc.diagnostics:
            print(f"maas-gateway: {diagnostic.render()}", file=sys.stderr)
        return 1
    except OSError as exc:  # e.g. the port is taken
        print(f"maas-gateway: cannot listen: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
