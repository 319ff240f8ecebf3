"""Our llama.cpp memory estimate versus llama.cpp's own breakdown (`llama-fit-params -fitp on`).

Reads bench/results/gpu-breakdown-raw.json (recorded on the H100 by collect_memory.py), rebuilds
the same header-only models here, runs maas.compiler.placement.llama_memory on each configuration
and prints per-device errors and a summary as markdown.
Usage: python bench/gpu/compare_memory.py [--holdout]
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
from maas.compiler.placement.llama_memory import LlamaLayout, llama_memory
from support.gguf_factory import (
    LLAMA2_13B,
    LLAMA3_8B,
    LLAMA3_70B,
    MIXTRAL_8X7B,
    MOE_16X,
    QWEN25_14B,
    write_header_only,
)

ROOT = Path(__file__).resolve().parents[2]
HOLDOUT = "--holdout" in sys.argv  # shapes and quant types the estimator was not fitted on
SUFFIX = "-holdout" if HOLDOUT else ""
MIB = 1 << 20


def load_models(folder: Path, holdout: bool = HOLDOUT) -> dict[str, ModelMetadata]:
    models = {}
    shapes = (QWEN25_14B, LLAMA2_13B, MOE_16X) if holdout else (LLAMA3_8B, LLAMA3_70B, MIXTRAL_8X7B)
    for shape in shapes:
        for q in (Q.Q4_K, Q.Q6_K) if holdout else (Q.Q4_0, Q.Q8_0):
            name = f"{shape.name}-{q.name.lower()}.gguf"
            (path,) = write_header_only(folder / name, shape, q)
            with path.open("rb") as f:
                prefix = f.read(8 << 20)
            header = parse_gguf(prefix, name=name, complete=False, file_size=path.stat().st_size)
            models[name] = from_gguf([header], names=[name])
    return models


def layout_for(meta: ModelMetadata, ngl: int, ot: str | None) -> LlamaLayout:
    blocks = max(0, min(ngl - 1, meta.block_count))
    experts: frozenset[int] = frozenset()
    if ot:
        match = re.search(r"blk\\\.\(([\d|]+)\)", ot)
        assert match, ot
        experts = frozenset(int(i) for i in match.group(1).split("|"))
    return LlamaLayout((blocks,), output_on_gpu=ngl >= 1, experts_on_cpu=experts)


def main() -> int:
    raw = json.loads((ROOT / f"bench/results/gpu-breakdown{SUFFIX}-raw.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        models = load_models(Path(tmp))
    rows, errors = [], []
    for r in raw["breakdown"]:
        meta = models[r["model"]]
        layout = layout_for(meta, r["ngl"], r.get("ot"))
        est = llama_memory(meta, layout, n_ctx=r["ctx"], cache_type=r.get("cache") or "f16")
        if r.get("fa") == "off":
            continue  # llama-box runs with flash attention (llama.cpp's default on CUDA)
        for device, ours in (("CUDA0", est.gpus[0]), ("Host", est.host)):
            real = r["mib"][device]
            ours_mib = [ours.model / MIB, ours.kv / MIB, ours.compute / MIB]
            total_real, total_ours = sum(real), sum(ours_mib)
            err = (total_ours - total_real) / total_real * 100 if total_real else 0.0
            errors.append((err, r, device, real, ours_mib))
            rows.append(
                f"| {r['model']} | {r['ctx']} | {r['ngl']} | {'experts' if r.get('ot') else ''}"
                f"{len(layout.experts_on_cpu) or ''} | {r.get('cache') or 'f16'} | {device} | "
                f"{'/'.join(str(x) for x in real)} | {'/'.join(f'{x:.0f}' for x in ours_mib)} | "
                f"{err:+.2f}% |"
            )
    print(
        "| model | ctx | ngl | experts on CPU | KV | device | llama.cpp model/KV/compute MiB |"
        " ours | error of total |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    summarize(errors)
    return 0


def summarize(errors: list[tuple[float, dict[str, object], str, list[int], list[float]]]) -> None:
    gpu = [e for e in errors if e[2] == "CUDA0" and sum(e[3]) > 0]
    host = [e for e in errors if e[2] == "Host" and sum(e[3]) > 0]
    layered = [e for e in gpu if int(e[1]["ngl"]) >= 2]  # type: ignore[call-overload]
    groups = (("GPU, all", gpu), ("GPU, >= 1 repeating layer on it", layered), ("host", host))
    for label, group in groups:
        values = [e[0] for e in group]
        under = [v for v in values if v < -1.0]
        print(
            f"\n{label}: {len(values)} points, median |error| "
            f"{statistics.median(abs(v) for v in values):.2f}%, max over {max(values):+.2f}%, "
            f"worst under {min(values):+.2f}%, {len(under)} below -1%"
        )
        for e in sorted(group, key=lambda e: e[0])[:4]:
            r = e[1]
            print(
                f"  under: {r['model']} ctx {r['ctx']} ngl {r['ngl']} {e[3]} ours "
                f"{[round(x) for x in e[4]]} {e[0]:+.2f}%"
            )


if __name__ == "__main__":
    sys.exit(main())
