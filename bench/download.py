"""Benchmark: model download throughput of the agent's downloader against a plain `curl` of the
same files from the same local server (goal: at least 0.9x curl's throughput).

The server is tests/support/hubserver.py, laid out like each hub's file API; the files are random
bytes (one large, like a GGUF, and one small). For each hub and each run: `curl -s -o` of every
file's URL one after another, then `download_revision` (listing excluded, as curl has none; it
includes what curl does not do: hashing every byte against the published sha256 and the fsync-free
atomic rename) into a fresh folder on the same file system, and once more with the hashes left
out (what verifying costs here). Medians and the ratio are printed.

    python bench/download.py [--size-mb 1024] [--runs 5] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from maas.host.models.download import download_revision  # noqa: E402
from maas.host.models.hub import RemoteFile, hub_for  # noqa: E402
from support.hubserver import local_hub  # noqa: E402

GOAL = 0.9


def curl_all(urls: list[str], target: Path) -> float:
    """Seconds for `curl` to fetch `urls` one after another into `target`."""
    target.mkdir(parents=True)
    start = time.perf_counter()
    for index, url in enumerate(urls):
        subprocess.run(["curl", "-s", "-f", "-o", str(target / str(index)), url], check=True)
    elapsed = time.perf_counter() - start
    shutil.rmtree(target)
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, help="where the downloads go (default: beside the hub)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="maas-bench-dl-"))
    out = args.out or work / "out"
    try:
        repo = work / "hub" / "org" / "bench"
        repo.mkdir(parents=True)
        with (repo / "model.gguf").open("wb") as model:
            for _ in range(args.size_mb):
                model.write(os.urandom(1 << 20))
        (repo / "config.json").write_text('{"model_type": "bench"}\n')
        total = sum(p.stat().st_size for p in repo.iterdir())
        ok = True
        with local_hub(work / "hub", chunk=1 << 20) as endpoint:
            os.environ["HF_ENDPOINT"] = endpoint
            os.environ["MODELSCOPE_ENDPOINT"] = endpoint
            for source in ("huggingface", "modelscope"):
                hub = hub_for(source)
                listing = hub.listing("org/bench", None)
                files = listing.select(None)
                urls = [hub.url("org/bench", listing.commit, f.name) for f in files]
                # The same files with no published hash: what verifying costs on this machine.
                bare = [RemoteFile(f.name, f.size) for f in files]
                curl_s, ours_s, bare_s = [], [], []
                for run in range(args.runs):
                    # Alternating who goes first: neither always meets the other's writeback.
                    for who in ("curl", "maas") if run % 2 == 0 else ("maas", "curl"):
                        if who == "curl":
                            curl_s.append(curl_all(urls, out / f"curl-{run}"))
                        else:
                            folder = out / f"maas-{run}" / listing.commit
                            start = time.perf_counter()
                            download_revision(hub, "org/bench", listing.commit, files, folder)
                            ours_s.append(time.perf_counter() - start)
                            shutil.rmtree(folder.parent)
                            start = time.perf_counter()
                            download_revision(hub, "org/bench", listing.commit, bare, folder)
                            bare_s.append(time.perf_counter() - start)
                            shutil.rmtree(folder.parent)
                curl, ours = statistics.median(curl_s), statistics.median(ours_s)
                ratio = curl / ours
                ok = ok and ratio >= GOAL
                runs = {
                    k: ", ".join(f"{t:.2f}" for t in v) for k, v in (("c", curl_s), ("m", ours_s))
                }
                print(
                    f"{source:<12} {total / 2**20:.0f} MiB  curl {total / curl / 2**20:7.1f} MiB/s"
                    f"  maas {total / ours / 2**20:7.1f} MiB/s  ratio {ratio:.2f}x"
                    f"  (median of {args.runs}; curl runs {runs['c']} s; maas runs {runs['m']} s)"
                )
                unverified = total / statistics.median(bare_s) / 2**20
                print(f"{'':<12} without verifying the hash: maas {unverified:7.1f} MiB/s")
        print(f"goal: at least {GOAL}x curl: {'met' if ok else 'NOT met'}")
        return 0 if ok else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
