"""Issue 13 ground truth on the GPU machine, in one call after bench/gpu/build.sh:

- `memory`: `llama-fit-params -fitp on` breakdowns (model / context / compute MiB per device) for
  header-only models at published shapes of each attention kind (support.gguf_arch: Gemma-3-27B,
  gpt-oss-20b/120b, DeepSeek-V3, Qwen3-30B-A3B; Llama-3-8B as the dense control), ctx 4096 and
  32768, several -ngl and expert layouts, and 4 slots (-np 4); then `-fitt` choices when llama.cpp
  may use 24/48/80 GiB of the GPU;
- `split`: breakdowns of our own MoE layouts as the compiler renders them (a split layer, -ub
  512 and 2048), from bench/gpu/split-jobs.json (written by `compare_arch.py --jobs`);
- `decode`: `llama-bench` decode tok/s of random-weight models of several sizes and offload levels
  (speed-model calibration: efficiency versus fixed per-token cost).

Every result is appended to $OUT as it comes, so a call cut short still returns what it measured.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from gguf import GGMLQuantizationType as Q

from support.gguf_arch import (
    DEEPSEEK_V3,
    GEMMA3_27B,
    GPT_OSS_20B,
    GPT_OSS_120B,
    QWEN3_30B_A3B,
    write_arch_header_only,
)
from support.gguf_factory import LLAMA3_8B, fill_random_weights, write_header_only

BIN = Path("/tmp/llama.cpp/build/bin")
MODELS = Path("/tmp/models")
OUT = Path(os.environ.get("OUT", "/tmp/out"))
PHASES = sys.argv[1:] or ["memory", "decode"]
START = time.monotonic()
DEADLINE = float(os.environ.get("MAAS_BENCH_SECONDS", "330"))  # after the build


def log(name: str, text: str) -> None:
    with (OUT / f"gpu-arch-{name}-raw.log").open("a") as f:
        f.write(text + "\n")


def record(name: str, row: dict[str, object]) -> None:
    with (OUT / f"gpu-arch-{name}-raw.jsonl").open("a") as f:
        f.write(json.dumps(row) + "\n")


def run(name: str, args: list[str], timeout: int = 90) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(
            args, capture_output=True, text=True, errors="replace", timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        log(name, f"$ {' '.join(args)}\n[timeout {timeout}s]")
        return subprocess.CompletedProcess(args, 124, "", "")
    log(name, f"$ {' '.join(args)}\n[rc={proc.returncode}]\n{proc.stdout}\n{proc.stderr[-3000:]}")
    return proc


def models() -> list[tuple[Path, int, int]]:
    """(path, repeating layers, experts) of each header-only model."""
    MODELS.mkdir(parents=True, exist_ok=True)
    out = []
    for m, q, e in (
        (GEMMA3_27B, Q.Q4_K, None),
        (GPT_OSS_20B, Q.Q8_0, Q.MXFP4),
        (GPT_OSS_120B, Q.Q8_0, Q.MXFP4),
        (DEEPSEEK_V3, Q.Q4_K, None),
        (QWEN3_30B_A3B, Q.Q4_K, None),
    ):
        path = write_arch_header_only(MODELS / f"{m.name}.gguf", m, q, e)
        out.append((path, m.layers, m.experts))
    (llama,) = write_header_only(MODELS / "llama-3-8b-q4_k.gguf", LLAMA3_8B, Q.Q4_K)
    out.append((llama, LLAMA3_8B.layers, 0))
    return out


def experts_pattern(layers: range) -> str:
    ids = "|".join(str(i) for i in layers)
    return rf"blk\.({ids})\.ffn_(up|down|gate)_exps=CPU"


def jobs(path: Path, n: int, experts: int) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for ctx in (4096, 32768):
        for ngl in sorted({0, n // 2, n + 1}):
            out.append({"ctx": ctx, "ngl": ngl})
        if experts:
            for k in sorted({n // 2, n}):
                out.append({"ctx": ctx, "ngl": n + 1, "ot": experts_pattern(range(n - k, n))})
    out.append({"ctx": 32768, "ngl": n + 1, "np": 4})  # llama-server's 4 slots, not unified
    return [{**j, "model": path.name} for j in out]


def breakdown(job: dict[str, object]) -> dict[str, object]:
    n_par = int(job.get("np", 1))  # type: ignore[call-overload]
    ctx = int(job["ctx"]) * n_par  # type: ignore[call-overload]
    args = [str(BIN / "llama-fit-params"), "-m", str(MODELS / str(job["model"])), "-fitp", "on"]
    args += ["-c", str(ctx), "-ngl", str(job["ngl"])]
    if n_par > 1:
        args += ["-np", str(n_par)]
    if job.get("ot"):
        args += ["-ot", str(job["ot"])]
    if job.get("ub"):
        args += ["-b", str(job["ub"]), "-ub", str(job["ub"])]
    proc = run("memory", args)
    rows = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 4 and all(p.isdigit() for p in parts[1:]):
            rows[parts[0]] = [int(p) for p in parts[1:]]
    return {**job, "mib": rows, "rc": proc.returncode}


def free_mib(path: Path) -> int:
    proc = run("memory", [str(BIN / "llama-fit-params"), "-m", str(path), "-c", "4096", "-v"])
    match = re.search(r"CUDA0 \(.*?\)\s*\|\s*(\d+)\s*=\s*(\d+)", proc.stdout + proc.stderr)
    return int(match.group(2)) if match else -1


def fit(path: Path, ctx: int, budget_gib: int, free: int) -> dict[str, object]:
    margin = free - budget_gib * 1024
    args = [str(BIN / "llama-fit-params"), "-m", str(path), "-c", str(ctx), "-fitt", str(margin)]
    proc = run("memory", args, timeout=120)
    line = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    ngl = re.search(r"-ngl (\d+)", line)
    ot = re.search(r'-ot "([^"]*)"', line)
    return {
        "model": path.name, "ctx": ctx, "budget_gib": budget_gib, "free_mib": free,
        "ngl": int(ngl.group(1)) if ngl else None, "ot": ot.group(1).split(",") if ot else [],
        "rc": proc.returncode, "line": line,
    }  # fmt: skip


def memory() -> None:
    found = models()
    all_jobs = [j for path, n, e in found for j in jobs(path, n, e)]
    with ThreadPoolExecutor(8) as pool:
        for row in pool.map(breakdown, all_jobs):
            record("breakdown", row)
    print(f"breakdowns: {len(all_jobs)} at {time.monotonic() - START:.0f}s", flush=True)
    free = free_mib(found[-1][0])
    for path, _, _ in found:
        for budget in (24, 48, 80):
            if time.monotonic() - START > DEADLINE * 0.65:
                print("fit: out of time", flush=True)
                return
            record("fit", fit(path, 32768, budget, free))
    print(f"fits done at {time.monotonic() - START:.0f}s", flush=True)


def split() -> None:
    models()
    todo = json.loads((Path(__file__).parent / "split-jobs.json").read_text())
    with ThreadPoolExecutor(8) as pool:
        for row in pool.map(breakdown, todo):
            record("split", row)
    print(f"split breakdowns: {len(todo)} at {time.monotonic() - START:.0f}s", flush=True)


def bench(path: Path, ngl: int, extra: list[str] | None = None) -> dict[str, object]:
    args = [str(BIN / "llama-bench"), "-m", str(path), "-ngl", str(ngl), "-p", "0", "-n", "64"]
    args += ["-r", "2", "-o", "json", *(extra or [])]
    proc = run("decode", args, timeout=120)
    try:
        tps = json.loads(proc.stdout)[0]["avg_ts"]
    except (ValueError, IndexError, KeyError):
        tps = None
    return {"model": path.name, "ngl": ngl, "tok_s": tps, "rc": proc.returncode}


def decode() -> None:
    small = replace(LLAMA3_8B, name="llama-3-1b-shape", width=2048, layers=16, ffn=8192, heads=32)
    plan = [
        (small, Q.Q4_0, (17,)),
        (LLAMA3_8B, Q.Q4_0, (0, 16, 24, 33)),
        (LLAMA3_8B, Q.Q8_0, (33, 24)),
    ]  # fmt: skip
    for shape, q, levels in plan:
        if time.monotonic() - START > DEADLINE:
            print("decode: out of time", flush=True)
            return
        path = MODELS / f"{shape.name}-{q.name.lower()}-data.gguf"
        paths = write_header_only(path, shape, q)
        fill_random_weights(paths)
        for ngl in levels:
            row = bench(path, ngl, ["-t", str(os.cpu_count() or 16)])
            row["weight_bytes"] = path.stat().st_size
            record("decode", row)
            print(json.dumps(row), flush=True)
        path.unlink()


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    if "memory" in PHASES:
        memory()
    if "split" in PHASES:
        split()
    if "decode" in PHASES:
        decode()
