"""Our estimate versus llama.cpp for each attention kind (issue 13), from the raw files that
bench/gpu/collect_arch.py wrote on the GPU machine (bench/results/gpu-arch-*-raw.jsonl).

Rebuilds the same header-only models here, runs maas.compiler.placement.llama_memory on each
configuration and the placement rules at the same budgets, and prints markdown: per-device totals
and errors, then -ngl / expert layout against `llama-fit-params -fitt`.
Usage: PYTHONPATH=tests:compiler python bench/gpu/compare_arch.py [RESULTS_DIR]
"""

from __future__ import annotations

import json
import re
import statistics
import sys
import tempfile
from pathlib import Path

from gguf import GGMLQuantizationType as Q

from maas.compiler.metadata import ModelMetadata
from maas.compiler.metadata.gguf import parse_gguf
from maas.compiler.metadata.model import from_gguf
from maas.compiler.models import Gpu
from maas.compiler.placement.llama_fit import place_llama
from maas.compiler.placement.llama_memory import LlamaLayout, llama_memory
from support.gguf_arch import (
    DEEPSEEK_V3,
    GEMMA3_27B,
    GPT_OSS_20B,
    GPT_OSS_120B,
    QWEN3_30B_A3B,
    write_arch_header_only,
)
from support.gguf_factory import LLAMA3_8B, write_header_only

ROOT = Path(__file__).resolve().parents[2]
MIB = 1 << 20


def load(folder: Path) -> dict[str, ModelMetadata]:
    paths = [
        write_arch_header_only(folder / f"{m.name}.gguf", m, q, e)
        for m, q, e in (
            (GEMMA3_27B, Q.Q4_K, None),
            (GPT_OSS_20B, Q.Q8_0, Q.MXFP4),
            (GPT_OSS_120B, Q.Q8_0, Q.MXFP4),
            (DEEPSEEK_V3, Q.Q4_K, None),
            (QWEN3_30B_A3B, Q.Q4_K, None),
        )
    ]
    paths += write_header_only(folder / "llama-3-8b-q4_k.gguf", LLAMA3_8B, Q.Q4_K)
    out = {}
    for path in paths:
        with path.open("rb") as f:
            header = parse_gguf(
                f.read(16 << 20), name=path.name, complete=False, file_size=path.stat().st_size
            )
        out[path.name] = from_gguf([header], names=[path.name])
    return out


def layout_of(meta: ModelMetadata, ngl: int, ot: str | None) -> LlamaLayout:
    n = meta.block_count
    blocks = max(0, min(ngl, n + 1) - 1)
    experts: frozenset[int] = frozenset()
    if ot:
        match = re.search(r"\(([\d|]+)\)", ot)
        experts = frozenset(int(i) for i in match.group(1).split("|")) if match else frozenset()
    return LlamaLayout((blocks,), output_on_gpu=ngl > n, experts_on_cpu=experts)


def rows(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def memory_table(models: dict[str, ModelMetadata], results: Path) -> None:
    print("| model | ctx | slots | ngl | experts on CPU | device | llama.cpp model/KV/compute MiB "
          "| ours | error of total |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    errors: dict[str, list[float]] = {"CUDA0": [], "Host": []}
    for r in rows(results / "gpu-arch-breakdown-raw.jsonl"):
        meta = models[str(r["model"])]
        mib = r["mib"]
        assert isinstance(mib, dict)
        if r["rc"] != 0 or not mib:
            print(f"| {r['model']} | {r['ctx']} | | {r['ngl']} | | (failed rc={r['rc']}) | | | |")
            continue
        ot = r.get("ot")
        layout = layout_of(meta, int(r["ngl"]), str(ot) if ot else None)  # type: ignore[call-overload]
        slots = int(r.get("np", 1))  # type: ignore[call-overload]
        est = llama_memory(meta, layout, n_ctx=int(r["ctx"]), parallel=slots)  # type: ignore[call-overload]
        n_experts = len(layout.experts_on_cpu)
        for device, theirs in mib.items():
            ours = est.gpus[0] if device.startswith("CUDA") else est.host
            if device.startswith("CUDA") and not est.gpus:
                continue
            mine = [ours.model // MIB, ours.kv // MIB, ours.compute // MIB]
            total = sum(theirs)
            error = (ours.total / MIB - total) / total * 100 if total else 0.0
            key = "CUDA0" if device.startswith("CUDA") else "Host"
            errors[key].append(error)
            print(f"| {r['model']} | {r['ctx']} | {slots} | {r['ngl']} | {n_experts or ''} | "
                  f"{device} | {'/'.join(map(str, theirs))} | {'/'.join(map(str, mine))} | "
                  f"{error:+.2f}% |")  # fmt: skip
    for key, values in errors.items():
        if values:
            print(f"\n{key}: {len(values)} points, median |error| "
                  f"{statistics.median(abs(v) for v in values):.2f}%, worst under "
                  f"{min(values):+.2f}%, worst over {max(values):+.2f}%")  # fmt: skip


def fit_table(models: dict[str, ModelMetadata], results: Path) -> None:
    print("\n| model | ctx | budget GiB | llama.cpp -fitt | ours |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows(results / "gpu-arch-fit-raw.jsonl"):
        meta = models[str(r["model"])]
        budget = int(r["budget_gib"]) << 30  # type: ignore[call-overload]
        gpu = Gpu(index=0, uuid="GPU-0", name="H200", memory_total_bytes=budget,
                  memory_free_bytes=budget)  # fmt: skip
        full, off = place_llama(meta, [gpu], n_ctx=int(r["ctx"]), margin=0, allow_cpu=True)  # type: ignore[call-overload]
        choice = full or off
        assert choice is not None
        ours = f"-ngl {choice.layout.n_gpu_layers}"
        if choice.layout.experts_on_cpu:
            ours += f", experts of {len(choice.layout.experts_on_cpu)} layers on CPU"
        theirs = f"-ngl {r['ngl']}"
        ot = r.get("ot") or []
        assert isinstance(ot, list)
        if ot:
            theirs += f", {len(ot)} overrides: {' '.join(str(o) for o in ot)[:80]}"
        print(f"| {r['model']} | {r['ctx']} | {r['budget_gib']} | {theirs} | {ours} |")


def main() -> None:
    results = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "bench" / "results"
    with tempfile.TemporaryDirectory() as tmp:
        models = load(Path(tmp))
        memory_table(models, results)
        fit_table(models, results)


if __name__ == "__main__":
    main()
