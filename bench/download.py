"""Benchmark: model download throughput of the agent's downloader against a plain `curl` of the
same files from the same local server (goal: at least 0.9x curl's throughput).

The server is tests/support/hubserver.py, laid out like each hub's file API, in a process of its
own (as a hub is: in the benchmark's process it would take the GIL from the downloader and not
from curl); the files are random bytes (one large, like a GGUF, and one small). For each hub and
each run, in alternating order: `curl -s -o` of every file's URL one after another, then
`download_revision` (listing excluded, as curl has none; it includes what curl does not do:
hashing every byte against the published sha256 and the atomic rename) into a fresh folder on
the same file system. `--also FILE` measures a second downloader module (say, an earlier
version of maas/host/models/download.py) in the same runs, for a before/after side by side.
Medians and the ratios are printed, and the CPU seconds each client spent per GiB
(load-independent: what a busy host's cores must find; curl's from RUSAGE_CHILDREN, ours from
RUSAGE_SELF, the hash thread included).

`--shards N` splits the large file into N files of equal size, as large GGUFs are published
(`-00001-of-0000N`); curl still fetches them one after another, as a plain `curl` of the files
does, and the downloader up to four at once.

`--link-mib-s R` paces the server to about R MiB/s (a pause after each MiB it sends), as a hub
behind a real link is: the downloader's verification (one core's sha256, about 1.2 GiB/s on an
idle Xeon core) then hides behind the transfer, as it does wherever the link is the slower.

    python bench/download.py [--size-mb 1024] [--runs 5] [--out DIR] [--also FILE]
        [--shards N] [--link-mib-s R]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

from maas.host.models.download import download_revision  # noqa: E402
from maas.host.models.hub import hub_for  # noqa: E402

GOAL = 0.9
SERVE = (
    "import sys; from pathlib import Path\n"
    f"sys.path.insert(0, {str(ROOT / 'tests')!r})\n"
    "from support.hubserver import local_hub\n"
    "with local_hub(Path(sys.argv[1]), float(sys.argv[2]), chunk=1 << 20) as endpoint:\n"
    "    print(endpoint, flush=True)\n"
    "    sys.stdin.read()\n"
)


def cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def curl_all(urls: list[str], target: Path) -> tuple[float, float]:
    """Seconds for `curl` to fetch `urls` one after another into `target`, and the CPU seconds
    curl spent (the server, a child still running, is not in RUSAGE_CHILDREN)."""
    target.mkdir(parents=True)
    start, used = time.perf_counter(), cpu(resource.RUSAGE_CHILDREN)
    for index, url in enumerate(urls):
        subprocess.run(["curl", "-s", "-f", "-o", str(target / str(index)), url], check=True)
    elapsed = time.perf_counter() - start
    used = cpu(resource.RUSAGE_CHILDREN) - used
    shutil.rmtree(target)
    return elapsed, used


def load(path: Path) -> Callable[..., None]:
    spec = importlib.util.spec_from_file_location("maas_bench_also", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.download_revision  # type: ignore[no-any-return]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, help="where the downloads go (default: beside the hub)")
    parser.add_argument("--also", type=Path, help="another downloader module, measured alike")
    parser.add_argument("--link-mib-s", type=float, help="pace the server to about this rate")
    parser.add_argument("--shards", type=int, default=1, help="the large file split in N files")
    args = parser.parse_args()
    pause = 1 / args.link_mib_s if args.link_mib_s else 0.0
    work = Path(tempfile.mkdtemp(prefix="maas-bench-dl-"))
    out = args.out or work / "out"
    clients: dict[str, Callable[..., Any]] = {"maas": download_revision}
    if args.also:
        clients["also"] = load(args.also)
    try:
        repo = work / "hub" / "org" / "bench"
        repo.mkdir(parents=True)
        for shard in range(args.shards):
            name = f"model-{shard + 1:05d}-of-{args.shards:05d}.gguf" if args.shards > 1 else ""
            with (repo / (name or "model.gguf")).open("wb") as model:
                for _ in range(args.size_mb // args.shards):
                    model.write(os.urandom(1 << 20))
        (repo / "config.json").write_text('{"model_type": "bench"}\n')
        total = sum(p.stat().st_size for p in repo.iterdir())
        ok = True
        with subprocess.Popen(
            [sys.executable, "-c", SERVE, str(work / "hub"), str(pause)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        ) as server:
            assert server.stdout is not None and server.stdin is not None
            endpoint = server.stdout.readline().strip()
            os.environ["HF_ENDPOINT"] = endpoint
            os.environ["MODELSCOPE_ENDPOINT"] = endpoint
            try:
                for source in ("huggingface", "modelscope"):
                    ok = bench(source, total, out, clients, args.runs) and ok
            finally:
                server.stdin.close()
        print(f"goal: at least {GOAL}x curl: {'met' if ok else 'NOT met'}")
        return 0 if ok else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


def bench(
    source: str, total: int, out: Path, clients: dict[str, Callable[..., Any]], runs: int
) -> bool:
    hub = hub_for(source)
    listing = hub.listing("org/bench", None)
    files = listing.select(None)
    assert all(f.sha256 or f.git_sha1 for f in files), "the hub publishes every hash"
    urls = [hub.url("org/bench", listing.commit, f.name) for f in files]
    times: dict[str, list[float]] = {"curl": [], **{name: [] for name in clients}}
    cpus: dict[str, list[float]] = {name: [] for name in times}
    order = list(times)
    for run in range(runs):
        # Alternating who goes first: none always meets another's writeback.
        for who in order if run % 2 == 0 else order[::-1]:
            if who == "curl":
                elapsed, used = curl_all(urls, out / f"curl-{run}")
                times["curl"].append(elapsed)
                cpus["curl"].append(used)
                continue
            folder = out / f"{who}-{run}" / listing.commit
            start, used = time.perf_counter(), cpu(resource.RUSAGE_SELF)
            clients[who](hub, "org/bench", listing.commit, files, folder)
            times[who].append(time.perf_counter() - start)
            cpus[who].append(cpu(resource.RUSAGE_SELF) - used)
            shutil.rmtree(folder.parent)
    curl = statistics.median(times["curl"])
    mib = total / 2**20
    print(f"{source} {mib:.0f} MiB, median of {runs}:")
    ok = True
    for who, seconds in times.items():
        median = statistics.median(seconds)
        ratio = curl / median
        if who == "maas":
            ok = ratio >= GOAL
        runs_s = ", ".join(f"{t:.2f}" for t in seconds)
        per_gib = statistics.median(cpus[who]) / (total / 2**30)
        print(
            f"  {who:<5} {mib / median:7.1f} MiB/s  {ratio:.2f}x curl  CPU {per_gib:.2f} s/GiB"
            f"  (runs {runs_s} s)"
        )
    return ok


if __name__ == "__main__":
    sys.exit(main())
