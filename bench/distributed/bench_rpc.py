"""Decode tokens/s of one model split over llama.cpp RPC (primary + one rpc-server worker, over
loopback) against the same model on one node, side by side, with the image the tests build
(support.images.llama_rpc_image). Prints the figures recorded in
bench/results/distributed-2026-12-02.md.

    PYTHONPATH=tests .venv/bin/python bench/distributed/bench_rpc.py
"""

from __future__ import annotations

import json
import statistics
import subprocess
import tempfile
import time
import urllib.request
import uuid
from dataclasses import replace
from pathlib import Path

from support.gguf_factory import TINY, write_tiny_llama
from support.images import llama_rpc_image

SHAPE = replace(
    TINY,
    name="bench-rpc",
    vocab=32000,
    width=768,
    layers=12,
    ffn=2048,
    heads=12,
    kv_heads=12,
    context=2048,
)
RUNS = 3
TOKENS = 64


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True).stdout


def wait_http(url: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer")


def decode_rate(port: int) -> float:
    body = json.dumps(
        {"prompt": "Once upon a time", "n_predict": TOKENS, "temperature": 0, "ignore_eos": True}
    ).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/completion",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=600) as response:
        return float(json.load(response)["timings"]["predicted_per_second"])


def run(image: str, model: Path, port: int, extra: list[str], tag: str) -> list[float]:
    name = f"bench-rpc-{tag}-{uuid.uuid4().hex[:6]}"
    docker(
        "run",
        "-d",
        "--rm",
        "--network",
        "host",
        "--name",
        name,
        "-v",
        f"{model.parent}:/models:ro",
        image,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--model",
        f"/models/{model.name}",
        "--ctx-size",
        "512",
        "--threads",
        "1",
        "--fit",
        "off",
        *extra,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/health")
        decode_rate(port)  # warm-up
        return [decode_rate(port) for _ in range(RUNS)]
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


def main() -> None:
    image = llama_rpc_image()
    with tempfile.TemporaryDirectory() as tmp:
        model = write_tiny_llama(Path(tmp) / "bench.gguf", shape=SHAPE)
        worker = f"bench-rpc-worker-{uuid.uuid4().hex[:6]}"
        docker(
            "run",
            "-d",
            "--rm",
            "--network",
            "host",
            "--name",
            worker,
            "--entrypoint",
            "ggml-rpc-server",
            image,
            "-H",
            "127.0.0.1",
            "-p",
            "47311",
            "-t",
            "1",
        )
        try:
            time.sleep(2)
            one = run(image, model, 47301, ["--n-gpu-layers", "0"], "one")
            half = SHAPE.layers // 2
            split = run(
                image,
                model,
                47302,
                ["--rpc", "127.0.0.1:47311", "--n-gpu-layers", str(half), "--tensor-split", "1"],
                "split",
            )
        finally:
            subprocess.run(["docker", "rm", "-f", worker], capture_output=True, check=False)
    a, b = statistics.median(one), statistics.median(split)
    print(
        f"model: {SHAPE.layers} layers, width {SHAPE.width}, F32, random weights; "
        f"{TOKENS} tokens decoded, median of {RUNS} after a warm-up; 1 thread per process"
    )
    print(f"one node:            {a:8.1f} tok/s  {[round(x, 1) for x in one]}")
    print(
        f"split (primary CPU {SHAPE.layers - half} layers + rpc-server {half} layers, loopback): "
        f"{b:8.1f} tok/s  {[round(x, 1) for x in split]}"
    )
    print(f"split / one: {b / a:.2f}")


if __name__ == "__main__":
    main()
