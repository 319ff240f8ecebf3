"""Ground truth from llama.cpp itself on the GPU machine: memory breakdowns and its own fit.

Writes $OUT/gpu-memory-raw.json with
- `breakdown`: `llama-fit-params -fitp on` (model / context / compute MiB per device and host) for
  synthetic header-only models at real shapes, over contexts and offload settings;
- `fit`: the `-ngl` / `-ot` that `llama-fit-params` chooses when it may use B GiB of the GPU;
- `tiny`: whether the tiny real model from tests/support/gguf_factory.py loads and generates.
Run on the device after bench/gpu/build.sh; see bench/gpu/README.md.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gguf import GGMLQuantizationType as Q

from support.gguf_factory import (
    LLAMA2_13B,
    LLAMA3_8B,
    LLAMA3_70B,
    MIXTRAL_8X7B,
    MOE_16X,
    QWEN25_14B,
    ModelShape,
    write_header_only,
    write_tiny_llama,
)

BIN = Path("/tmp/llama.cpp/build/bin")
MODELS = Path("/tmp/models")
OUT = Path(os.environ.get("OUT", "/tmp/out"))
CONTEXTS = (4096, 8192, 32768)
BUDGETS_GIB = (8, 12, 16, 23, 24, 40, 47)
HOLDOUT = os.environ.get("MAAS_BENCH_SET") == "holdout"  # shapes the estimator was not fitted on
SHAPES = (QWEN25_14B, LLAMA2_13B, MOE_16X) if HOLDOUT else (LLAMA3_8B, LLAMA3_70B, MIXTRAL_8X7B)
QUANTS = (Q.Q4_K, Q.Q6_K) if HOLDOUT else (Q.Q4_0, Q.Q8_0)
SUFFIX = "-holdout" if HOLDOUT else ""
PHASE = sys.argv[1] if len(sys.argv) > 1 else "breakdown"
LOG = open(OUT / f"gpu-{PHASE}{SUFFIX}-raw.log", "w")  # noqa: SIM115


def run(args: list[str], timeout: int = 120) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        args, capture_output=True, text=True, errors="replace", timeout=timeout, check=False
    )
    LOG.write(f"$ {' '.join(args)}\n[rc={proc.returncode}]\n{proc.stdout}\n")
    return proc


def experts_pattern(layers: range) -> str:
    ids = "|".join(str(i) for i in layers)
    return rf"blk\.({ids})\.ffn_(up|down|gate)_exps=CPU"


def breakdown_jobs(path: Path, shape: ModelShape) -> list[dict[str, object]]:
    n = shape.layers
    jobs: list[dict[str, object]] = []
    for ctx in CONTEXTS:
        for ngl in sorted({0, 1, n // 4, n // 2, 3 * n // 4, n, n + 1}):
            jobs.append({"ctx": ctx, "ngl": ngl, "ot": None})
        if shape.experts:
            for k in (1, 8, 16, n):
                jobs.append({"ctx": ctx, "ngl": n + 1, "ot": experts_pattern(range(n - k, n))})
    if shape is LLAMA3_8B or shape is QWEN25_14B:
        for ct in ("q8_0", "q4_0"):
            jobs.append({"ctx": 8192, "ngl": n + 1, "ot": None, "cache": ct})
            jobs.append({"ctx": 8192, "ngl": n // 2, "ot": None, "cache": ct})
        jobs.append({"ctx": 8192, "ngl": n + 1, "ot": None, "fa": "off"})
    for job in jobs:
        job["model"] = path.name
    return jobs


def breakdown(job: dict[str, object]) -> dict[str, object]:
    args = [str(BIN / "llama-fit-params"), "-m", str(MODELS / str(job["model"])), "-fitp", "on"]
    args += ["-c", str(job["ctx"]), "-ngl", str(job["ngl"])]
    if job.get("ot"):
        args += ["-ot", str(job["ot"])]
    if job.get("cache"):
        args += ["-ctk", str(job["cache"]), "-ctv", str(job["cache"])]
    if job.get("fa"):
        args += ["-fa", str(job["fa"])]
    proc = run(args)
    rows = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 4 and all(p.isdigit() for p in parts[1:]):
            rows[parts[0]] = [int(p) for p in parts[1:]]
    return {**job, "mib": rows, "rc": proc.returncode}


def llama_free_mib(path: Path) -> int:
    """Free MiB as llama.cpp sees it (its own CUDA context already subtracted)."""
    proc = run([str(BIN / "llama-fit-params"), "-m", str(path), "-c", "4096", "-v"])
    text = proc.stdout + proc.stderr
    LOG.write(text[-4000:])
    match = re.search(r"CUDA0 \(.*?\)\s*\|\s*(\d+)\s*=\s*(\d+)", text)
    if not match:
        raise SystemExit("could not read free memory from llama-fit-params -v")
    return int(match.group(2))


def fit(path: Path, budget_gib: int, free_mib: int) -> dict[str, object]:
    margin = free_mib - budget_gib * 1024
    args = [str(BIN / "llama-fit-params"), "-m", str(path), "-c", "8192", "-fitt", str(margin)]
    proc = run(args, timeout=300)
    line = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    ngl = re.search(r"-ngl (\d+)", line)
    ot = re.search(r'-ot "([^"]*)"', line)
    return {
        "model": path.name,
        "budget_gib": budget_gib,
        "free_mib": free_mib,
        "ngl": int(ngl.group(1)) if ngl else None,
        "ot": ot.group(1).split(",") if ot else [],
        "rc": proc.returncode,
        "line": line,
    }


def tiny_check() -> dict[str, object]:
    path = write_tiny_llama(MODELS / "tiny.gguf")
    proc = run(
        [
            str(BIN / "llama-completion"),
            "-m",
            str(path),
            "-p",
            "hello",
            "-n",
            "16",
            "-ngl",
            "99",
            "-no-cnv",
            "--temp",
            "0",
        ],
        timeout=120,
    )
    return {"rc": proc.returncode, "tail": (proc.stdout + proc.stderr)[-1500:]}


def main() -> None:
    MODELS.mkdir(parents=True, exist_ok=True)
    models: list[tuple[Path, ModelShape]] = []
    for shape in SHAPES:
        for q in QUANTS:
            path = MODELS / f"{shape.name}-{q.name.lower()}.gguf"
            write_header_only(path, shape, q)
            models.append((path, shape))
    result: dict[str, object] = {}
    if PHASE == "breakdown":
        jobs = [j for path, shape in models for j in breakdown_jobs(path, shape)]
        with ThreadPoolExecutor(6) as pool:
            rows = list(pool.map(breakdown, jobs))
        print(f"breakdowns: {len(rows)} ({sum(r['rc'] != 0 for r in rows)} failed)", flush=True)
        result = {"breakdown": rows, "tiny": tiny_check()}
        print(json.dumps(result["tiny"])[:600])
    else:
        free = llama_free_mib(models[0][0])
        fits = []
        for path, _ in models:
            fits += [fit(path, b, free) for b in BUDGETS_GIB]
            print(f"{path.name}: {[f['ngl'] for f in fits[-len(BUDGETS_GIB) :]]}", flush=True)
            (OUT / f"gpu-fit{SUFFIX}-raw.json").write_text(json.dumps({"fit": fits}, indent=1))
        result = {"fit": fits}
    (OUT / f"gpu-{PHASE}{SUFFIX}-raw.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    sys.exit(main())
