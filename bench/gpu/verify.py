"""On the H100: predicted versus measured decode speed, and zero OOM with our layer counts.

Phases (run after bench/gpu/build.sh; results in $OUT):
- `decode`: CPU memory bandwidth (threaded copy), then `llama-bench` decode tok/s of a Llama-3-8B
  Q4_0 with random weights at 0/8/16/24/33 GPU layers next to the two-bandwidth prediction;
- `ballast`: a torch ballast holds all but B GiB of the GPU, maas places the model on a GPU with
  that much free (default 1 GiB margin) and llama.cpp loads and generates with our -ngl / -ot.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as Q

from maas.compiler.metadata.gguf import parse_gguf
from maas.compiler.metadata.model import from_gguf
from maas.compiler.models import Gpu
from maas.compiler.placement.common import GPU_EFFICIENCY
from maas.compiler.placement.llama_fit import experts_pattern, place_llama
from maas.compiler.placement.llama_memory import LlamaLayout, bytes_per_token, decode_tokens_per_s
from support.gguf_factory import LLAMA3_8B, MIXTRAL_8X7B, fill_random_weights, write_header_only

BIN = Path("/tmp/llama.cpp/build/bin")
MODELS = Path("/tmp/models")
OUT = Path(os.environ.get("OUT", "/tmp/out"))
H100_BANDWIDTH = 5120 // 8 * 2619 * 2_000_000  # NVML bus width x max memory clock x 2
GIB = 1 << 30
MOE_SMALL = replace(MIXTRAL_8X7B, name="mixtral-8l", layers=8)


def log(text: str) -> None:
    with (OUT / f"gpu-{sys.argv[1]}-raw.log").open("a") as f:
        f.write(text + "\n")


def model(shape: object, qtype: Q) -> Path:
    path = MODELS / f"{shape.name}-{qtype.name.lower()}-data.gguf"  # type: ignore[attr-defined]
    if not path.exists():
        MODELS.mkdir(parents=True, exist_ok=True)
        write_header_only(path, shape, qtype)  # type: ignore[arg-type]
        fill_random_weights([path])
    return path


def metadata(path: Path):  # type: ignore[no-untyped-def]
    with path.open("rb") as f:
        prefix = f.read(8 << 20)
    header = parse_gguf(prefix, name=path.name, complete=False, file_size=path.stat().st_size)
    return from_gguf([header], names=[path.name])


def cpu_bandwidth(threads: int = 16, size: int = 1 << 30) -> float:
    """Bytes/s read+written by `threads` concurrent large copies (numpy releases the GIL)."""
    chunks = [
        (np.ones(size // 8 // threads), np.empty(size // 8 // threads)) for _ in range(threads)
    ]
    best = float("inf")
    for _ in range(3):
        workers = [threading.Thread(target=np.copyto, args=(d, s)) for s, d in chunks]
        start = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        best = min(best, time.perf_counter() - start)
    return 2 * size / best


def decode() -> dict[str, object]:
    bandwidth = cpu_bandwidth()
    path = model(LLAMA3_8B, Q.Q4_0)
    meta = metadata(path)
    rows = []
    for ngl in (0, 8, 16, 24, 33):
        args = [
            str(BIN / "llama-bench"),
            "-m",
            str(path),
            "-ngl",
            str(ngl),
            "-p",
            "0",
            "-n",
            "64",
            "-r",
            "2",
            "-o",
            "json",
        ]
        proc = subprocess.run(args, capture_output=True, text=True, errors="replace", check=False)
        log(f"$ {' '.join(args)}\n{proc.stdout}\n{proc.stderr[-2000:]}")
        measured = json.loads(proc.stdout)[0]["avg_ts"] if proc.returncode == 0 else None
        layout = LlamaLayout((max(0, ngl - 1),), ngl >= 1)
        gpu_bytes, cpu_bytes = bytes_per_token(meta, layout)
        predicted = decode_tokens_per_s(
            gpu_bytes,
            cpu_bytes,
            gpu_bandwidth=H100_BANDWIDTH * GPU_EFFICIENCY["hbm"],
            cpu_bandwidth=bandwidth,
        )
        rows.append(
            {
                "ngl": ngl,
                "measured": measured,
                "predicted": predicted,
                "gpu_bytes": gpu_bytes,
                "cpu_bytes": cpu_bytes,
            }
        )
        print(rows[-1], flush=True)
    return {"cpu_bandwidth": bandwidth, "decode": rows}


def ballast_run(path: Path, budget_gib: float) -> dict[str, object]:
    import torch

    free, total = torch.cuda.mem_get_info()
    hold = torch.empty(int(free - budget_gib * GIB), dtype=torch.uint8, device="cuda")
    free_now, _ = torch.cuda.mem_get_info()
    meta = metadata(path)
    gpu = Gpu(
        index=0,
        uuid="GPU-0",
        name=torch.cuda.get_device_name(0),
        memory_total_bytes=total,
        memory_free_bytes=free_now,
    )
    full, off = place_llama(meta, [gpu], n_ctx=8192, margin=GIB, allow_cpu=True)
    choice = full or off
    assert choice is not None
    layout = choice.layout
    args = [
        str(BIN / "llama-completion"),
        "-m",
        str(path),
        "-c",
        "8192",
        "-n",
        "16",
        "-p",
        "hello",
        "-no-cnv",
        "--temp",
        "0",
        "-ngl",
        str(layout.n_gpu_layers if choice.gpus else 0),
    ]
    for pattern in experts_pattern(sorted(layout.experts_on_cpu)):
        args += ["-ot", pattern]
    proc = subprocess.run(args, capture_output=True, text=True, errors="replace", check=False)
    text = proc.stdout + proc.stderr
    log(f"$ {' '.join(args)}\n{text[-3000:]}")
    del hold
    torch.cuda.empty_cache()
    return {
        "model": path.name,
        "budget_gib": budget_gib,
        "free_bytes": free_now,
        "kind": choice.kind,
        "ngl": layout.n_gpu_layers,
        "experts_on_cpu": len(layout.experts_on_cpu),
        "estimate_gpu_bytes": [m.total for m in choice.gpu_memory],
        "rc": proc.returncode,
        "oom": "out of memory" in text.lower(),
        "generated": "eval time" in text,
    }


def ballast() -> dict[str, object]:
    dense = model(LLAMA3_8B, Q.Q4_0)
    moe = model(MOE_SMALL, Q.Q4_0)
    runs = []
    for path, budget in [(dense, b) for b in (2.0, 3.0, 4.0, 5.0)] + [(moe, 2.5), (moe, 4.0)]:
        runs.append(ballast_run(path, budget))
        print(runs[-1], flush=True)
        # Written after each run: a call cut off at its time limit still brings back what ran.
        (OUT / "gpu-ballast-raw.json").write_text(json.dumps({"ballast": runs}, indent=1))
    return {"ballast": runs}


if __name__ == "__main__":
    result = decode() if sys.argv[1] == "decode" else ballast()
    (OUT / f"gpu-{sys.argv[1]}-raw.json").write_text(json.dumps(result, indent=1))
