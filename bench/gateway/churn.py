"""Connection churn through the real maas-gateway: rounds of short connections, a third cut
mid-request, a third cut mid-response, the rest read whole; the gateway's RSS and open files
after each round (they must stay flat), and its requests in flight at the end (must be 0).

    python bench/gateway/churn.py [--rounds 3] [--connections 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import urllib.request
from contextlib import ExitStack
from pathlib import Path

from bench_gateway import start_peers

BODY = b'{"model": "bench", "stream": true}'
REQUEST = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
)


async def one(port: int, i: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if i % 3 == 0:
        writer.write(REQUEST[: len(REQUEST) // 2])  # gone mid-request
    else:
        writer.write(REQUEST)
        await (reader.read(100) if i % 3 == 1 else reader.read())  # mid-response, or whole
    writer.close()


async def churn(port: int, count: int) -> None:
    for start in range(0, count, 50):
        await asyncio.gather(*(one(port, start + i) for i in range(min(50, count - start))))


def usage(pid: int) -> str:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))
    return f"RSS {int(rss) / 1024:.1f} MiB, open fds {len(list(Path(f'/proc/{pid}/fd').iterdir()))}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=3000)
    args = parser.parse_args()
    peer_args = argparse.Namespace(tokens=16, pin=False, event_loop="auto")
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        (Path(tmp) / "gateway.yaml").write_text("{}\n")
        urls, pids = start_peers(stack, "churn", 0.0, peer_args, Path(tmp))
        port = int(urls["gateway"].split(":")[2].split("/")[0])
        print(f"before: {usage(pids['gateway'])}")
        for round_ in range(args.rounds):
            asyncio.run(churn(port, args.connections))
            print(f"round {round_ + 1}, {args.connections} connections: {usage(pids['gateway'])}")
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as response:
                metrics = response.read().decode()
            in_flight = [
                line for line in metrics.splitlines() if line.startswith("maas_gateway_outstanding")
            ]
            print("in flight at the end:", ", ".join(in_flight) or "none")


if __name__ == "__main__":
    main()
