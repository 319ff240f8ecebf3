"""Gateway overhead: 32 concurrent streaming clients (wrk) against a fast local SSE replica,
directly and through the real `maas-gateway` process, side by side (rounds alternate).

Goals (issue 7): the gateway adds at most 1 ms at the median and keeps at least 0.9x the direct
throughput. A bare aiohttp proxy (bare_proxy.py) runs alongside: what an aiohttp relay with no
features costs, the design the gateway's front replaced.
Three scenarios:
- instant: 32 clients, every token at once (the gateway's own cost dominates: a CPU-bound worst
  case, where load generator, replica and gateway share the machine's cores);
- paced: 32 clients, tokens 5 ms apart, like a model at 200 tokens/s (what a replica looks like);
- single: one client, instant replica: the latency the gateway adds with no queueing at all.
CPU time per request of the gateway and the replica process is read from /proc.

    python bench/gateway/bench_gateway.py [--rounds 3] [--seconds 8] [--connections 32]

Needs Debian's `wrk`. Every process is started here and stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

HERE = Path(__file__).resolve().parent
LUA = """
wrk.method = "POST"
wrk.body = '{"model": "bench", "stream": true, "messages": [{"role": "user", "content": "hi"}]}'
wrk.headers["Content-Type"] = "application/json"
"""
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def process(args: list[str], ready_url: str | None = None) -> Iterator[subprocess.Popen[bytes]]:
    # Output goes to a file: a full pipe would stall the process and the measurement with it.
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        try:
            if ready_url:
                wait_ready(ready_url, proc, log)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_ready(
    url: str, proc: subprocess.Popen[bytes], log: IO[bytes], timeout: float = 20
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise SystemExit(f"{proc.args} exited:\n{log.read().decode()[-2000:]}")
        try:
            request = urllib.request.Request(url, data=b'{"model": "bench"}', method="POST")
            with urllib.request.urlopen(request, timeout=2) as response:
                response.read()
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} never answered")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pinned(args: argparse.Namespace, role: str) -> list[str]:
    """With --pin: the load (wrk and the replica) on CPU 0, the gateway alone on CPU 1."""
    if not args.pin:
        return []
    return ["taskset", "-c", "1" if role == "gateway" else "0"]


def wrk(
    url: str, script: Path, connections: int, seconds: int, prefix: list[str]
) -> tuple[float, float, float]:
    """Requests per second, median and 99th percentile latency in ms."""
    out = subprocess.run(
        [
            *prefix,
            "wrk",
            "-t",
            "1",
            "-c",
            str(connections),
            "-d",
            f"{seconds}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"errors during the run:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def percentile(p: str) -> float:
        value, unit = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        return float(value) * UNITS[unit]

    return rps, percentile("50"), percentile("99")


@dataclass
class Run:
    rps: float
    p50: float
    p99: float
    proxy_cpu_us: float  # CPU time per request of the proxy in the path (none: 0), microseconds
    replica_cpu_us: float


MODES = ("direct", "gateway", "bare")


def measure(
    url: str,
    mode: str,
    args: argparse.Namespace,
    *,
    connections: int,
    script: Path,
    pids: dict[str, int],
) -> Run:
    before = {k: cpu_seconds(p) for k, p in pids.items()}
    wall = time.monotonic()
    rps, p50, p99 = wrk(url, script, connections, args.seconds, pinned(args, "load"))
    requests = rps * (time.monotonic() - wall)
    used = {k: (cpu_seconds(p) - before[k]) * 1e6 / requests for k, p in pids.items()}
    return Run(rps, p50, p99, used.get(mode, 0.0), used["replica"])


def start_peers(
    stack: ExitStack, name: str, interval_ms: float, args: argparse.Namespace, tmp: Path
) -> tuple[dict[str, str], dict[str, int]]:
    """The replica, a status socket naming it, the real maas-gateway and the bare proxy floor;
    the URL of each path and the pid of each process."""
    ports = {mode: free_port() for mode in MODES}
    socket_path = tmp / f"{name}.sock"
    py, peers = sys.executable, str(HERE / "replica.py")
    urls = {mode: f"http://127.0.0.1:{port}/v1/chat/completions" for mode, port in ports.items()}
    replica_args = ["--tokens", str(args.tokens), "--interval-ms", str(interval_ms)]
    load, alone = pinned(args, "load"), pinned(args, "gateway")
    replica_cmd = [*load, py, peers, "replica", str(ports["direct"]), *replica_args]
    replica = stack.enter_context(process(replica_cmd, urls["direct"]))
    stack.enter_context(process([py, peers, "status", str(socket_path), str(ports["direct"])]))
    while not socket_path.exists():
        time.sleep(0.05)
    gateway_args = ["--port", str(ports["gateway"]), "--agent-socket", str(socket_path)]
    gateway_args += ["--keys-file", str(tmp / "no-keys"), "--config", str(tmp / "gateway.yaml")]
    gateway_args += ["--event-loop", args.event_loop]
    gateway_cmd = [*alone, py, "-m", "maas.gateway.main", *gateway_args]
    gateway = stack.enter_context(process(gateway_cmd, urls["gateway"]))
    bare_cmd = [*alone, py, str(HERE / "bare_proxy.py"), str(ports["bare"]), str(ports["direct"])]
    bare = stack.enter_context(process(bare_cmd, urls["bare"]))
    return urls, {"gateway": gateway.pid, "bare": bare.pid, "replica": replica.pid}


def scenario(
    name: str, interval_ms: float, connections: int, args: argparse.Namespace, tmp: Path
) -> dict[str, float]:
    script = tmp / "chat.lua"
    script.write_text(LUA)
    results: dict[str, list[Run]] = {mode: [] for mode in MODES}
    with ExitStack() as stack:
        urls, pids = start_peers(stack, name, interval_ms, args, tmp)
        for url in urls.values():
            wrk(url, script, connections, 2, pinned(args, "load"))  # warm every path up
        for round_ in range(args.rounds):
            for mode in MODES:
                run = measure(
                    urls[mode], mode, args, connections=connections, script=script, pids=pids
                )
                results[mode].append(run)
                print(
                    f"  {name:8} round {round_ + 1} {mode:8} {run.rps:8.1f} req/s  "
                    f"p50 {run.p50:7.2f} ms  p99 {run.p99:7.2f} ms  CPU per request: "
                    f"proxy {run.proxy_cpu_us:4.0f} us, replica {run.replica_cpu_us:4.0f} us",
                    flush=True,
                )

    def median(mode: str, field: str) -> float:
        return statistics.median(getattr(r, field) for r in results[mode])

    return {
        "direct_rps": median("direct", "rps"),
        "gateway_rps": median("gateway", "rps"),
        "direct_p50": median("direct", "p50"),
        "gateway_p50": median("gateway", "p50"),
        "added_p50_ms": median("gateway", "p50") - median("direct", "p50"),
        "ratio": median("gateway", "rps") / median("direct", "rps"),
        "bare_ratio": median("bare", "rps") / median("direct", "rps"),
        "bare_added_p50_ms": median("bare", "p50") - median("direct", "p50"),
        "gateway_cpu_us": median("gateway", "proxy_cpu_us"),
        "bare_cpu_us": median("bare", "proxy_cpu_us"),
        "replica_cpu_us": median("direct", "replica_cpu_us"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--only", choices=["instant", "paced", "single"])
    parser.add_argument(
        "--pin", action="store_true", help="load on CPU 0, the gateway alone on CPU 1"
    )
    parser.add_argument("--event-loop", choices=["auto", "uvloop", "asyncio"], default="auto")
    args = parser.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        f"{os.cpu_count()} CPUs, {args.connections} connections, {args.tokens} tokens per "
        f"stream, {args.rounds} rounds of {args.seconds} s, medians"
    )
    summary = {}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "gateway.yaml").write_text("{}\n")
        scenarios = (
            ("instant", 0.0, args.connections),
            ("paced", 5.0, args.connections),
            ("single", 0.0, 1),
        )
        for name, interval, connections in scenarios:
            if args.only in (None, name):
                summary[name] = scenario(name, interval, connections, args, Path(tmp))
    print()
    print(
        f"{'scenario':8} {'direct req/s':>12} {'gateway req/s':>14} {'ratio':>6} "
        f"{'direct p50':>11} {'gateway p50':>12} {'added p50':>10}   bare aiohttp proxy"
    )
    for name, r in summary.items():
        print(
            f"{name:8} {r['direct_rps']:12.1f} {r['gateway_rps']:14.1f} {r['ratio']:5.2f}x "
            f"{r['direct_p50']:8.2f} ms {r['gateway_p50']:9.2f} ms {r['added_p50_ms']:7.2f} ms"
            f"   {r['bare_ratio']:.2f}x, {r['bare_added_p50_ms']:+.2f} ms"
        )
    print()
    for name, r in summary.items():
        print(
            f"{name:8} CPU per request: gateway {r['gateway_cpu_us']:.0f} us, bare aiohttp "
            f"proxy {r['bare_cpu_us']:.0f} us, replica {r['replica_cpu_us']:.0f} us"
        )
    print("goals: added p50 <= 1 ms, ratio >= 0.9x")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
