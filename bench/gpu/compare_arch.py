"""Our estimate versus llama.cpp for each attention kind (issue 13), from the raw files that
bench/gpu/collect_arch.py wrote on the GPU machine (bench/results/gpu-arch-*-raw.jsonl).

Rebuilds the same header-only models here, runs maas.compiler.placement.llama_memory on each
configuration and the placement rules at the same budgets, and prints markdown: per-device totals
and errors, then -ngl / expert layout against `llama-fit-params -fitt`.
Usage: PYTHONPATH=tests:compiler python bench/gpu/compare_arch.py [RESULTS_DIR]
       PYTHONPATH=tests:compiler python bench/gpu/compare_arch.py --jobs  (writes
       bench/gpu/split-jobs.json: our split-layer layouts for collect_arch.py's `split` phase)
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
from maas.compiler.placement.llama_fit import (
    PROMPT_UBATCH,
    LlamaChoice,
    experts_pattern,
    place_llama,
)
from maas.compiler.placement.llama_memory import N_UBATCH, LlamaLayout, llama_memory
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


# How much of a layer's FFN stays on the GPU for each split llama.cpp makes, most first (common/
# fit.cpp: LAYER_FRACTION_GATE, _UP, _MOE, _ATTN); a layout's "step" counts these per layer.
SPLITS = {
    "ffn_down.*": "down",
    "ffn_(gate|gate_up|down).*": "gate_down",
    "ffn_(up|down|gate_up|gate)_(ch|)exps": None,
    "ffn_(gate|up|gate_up|down).*": "ffn",
}
KEEPS = {"down": 3, "gate_down": 2, None: 1, "ffn": 0}


def layout_of(meta: ModelMetadata, ngl: int, ot: str | None, ub: int = N_UBATCH) -> LlamaLayout:
    """The layout of one measured run from its -ngl, -ot (comma-separated patterns: one for
    whole-expert layers, maybe one split layer as llama_fit.experts_pattern writes them) and -ub."""
    n = meta.block_count
    blocks = max(0, min(ngl, n + 1) - 1)
    experts: set[int] = set()
    split = None
    for pattern in (ot or "").split(","):
        group = re.search(r"\(([\d|]+)\)", pattern)
        single = re.fullmatch(r"blk\\\.(\d+)\\\.(ffn_.*)=CPU", pattern)
        if group:
            experts |= {int(i) for i in group.group(1).split("|")}
        elif single and single.group(2) in SPLITS:
            experts.add(int(single.group(1)))
            split = SPLITS[single.group(2)]
    return LlamaLayout((blocks,), output_on_gpu=ngl > n, experts_on_cpu=frozenset(experts),
                       n_ubatch=ub, split_ffn=split)  # type: ignore[arg-type]  # fmt: skip


def rows(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def memory_table(models: dict[str, ModelMetadata], results: Path) -> None:
    print("| model | ctx | slots | ngl | experts on CPU | ub | device "
          "| llama.cpp model/KV/compute MiB | ours | error of total |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    errors: dict[str, list[float]] = {"CUDA0": [], "Host": []}
    # our own split-layer layouts (split-jobs.json) are also summed up on their own: they are the
    # layouts the compiler renders, so they carry the per-device goals by themselves too
    split_errors: dict[str, list[float]] = {"CUDA0": [], "Host": []}
    measured = [(r, False) for r in rows(results / "gpu-arch-breakdown-raw.jsonl")]
    for r, is_split in measured + [(r, True) for r in rows(results / "gpu-arch-split-raw.jsonl")]:
        meta = models[str(r["model"])]
        mib = r["mib"]
        assert isinstance(mib, dict)
        if r["rc"] != 0 or not mib:
            print(f"| {r['model']} | {r['ctx']} | | {r['ngl']} | | | (failed rc={r['rc']}) | | | |")
            continue
        ot = r.get("ot")
        ub = int(r.get("ub") or N_UBATCH)  # type: ignore[call-overload]
        layout = layout_of(meta, int(r["ngl"]), str(ot) if ot else None, ub)  # type: ignore[call-overload]
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
            if is_split:
                split_errors[key].append(error)
            split = f" ({layout.split_ffn or 'experts'} split)" if is_split else ""
            experts = f"{n_experts or ''}{split}"
            print(f"| {r['model']} | {r['ctx']} | {slots} | {r['ngl']} | {experts} | "
                  f"{ub} | {device} | {'/'.join(map(str, theirs))} | {'/'.join(map(str, mine))} | "
                  f"{error:+.2f}% |")  # fmt: skip
    summary(errors, "all")
    summary(split_errors, "our split layouts (gpu-arch-split-raw.jsonl)")


def summary(errors: dict[str, list[float]], label: str) -> None:
    """Per device: median |error| of the total and the worst under/over, with the goals
    (median |error| <= 2%, never under by more than 1%) checked."""
    for key, values in errors.items():
        if values:
            median = statistics.median(abs(v) for v in values)
            met = "met" if median <= 2 and min(values) >= -1 else "NOT met"
            print(f"\n{key}, {label}: {len(values)} points, median |error| {median:.2f}%, "
                  f"worst under {min(values):+.2f}%, worst over {max(values):+.2f}%; "
                  f"goal {met}")  # fmt: skip


def their_layout(meta: ModelMetadata, ot: list[str]) -> tuple[int, str | None]:
    """(first layer with FFN parts in host memory, its split) from llama.cpp's -ot list. Its
    layer index counts the output head as layer n_layer (set_ngl_tensor_split_tbo), so a pattern
    for blk.{n_layer} matches no tensor and is dropped."""
    layers: dict[int, str | None] = {}
    for pattern in ot:
        match = re.fullmatch(r"blk\\\.(\d+)\\\.(.*)=CPU", pattern)
        assert match, pattern
        if int(match.group(1)) < meta.block_count:
            layers[int(match.group(1))] = SPLITS[match.group(2)]
    first = min(layers)
    return first, layers[first]


def step(first: int, split: str | None) -> int:
    return first * 4 + KEEPS[split]


def fit_table(models: dict[str, ModelMetadata], results: Path) -> None:
    print("\n| model | ctx | budget GiB | llama.cpp -fitt (-ub 512) | ours (as rendered) "
          "| ours at -ub 512 vs llama.cpp | ours as rendered vs llama.cpp |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows(results / "gpu-arch-fit-raw.jsonl"):
        meta = models[str(r["model"])]
        budget = int(r["budget_gib"]) << 30  # type: ignore[call-overload]
        gpu = Gpu(index=0, uuid="GPU-0", name="H200", memory_total_bytes=budget,
                  memory_free_bytes=budget)  # fmt: skip
        verdicts = []
        for ubatch in (N_UBATCH, PROMPT_UBATCH):  # llama.cpp's default, then what we render
            full, off = place_llama(meta, [gpu], n_ctx=int(r["ctx"]), margin=0, allow_cpu=True,  # type: ignore[call-overload]
                                    prompt_ubatch=ubatch)  # fmt: skip
            choice = full or off
            assert choice is not None
            ours, verdict = compare_choice(meta, choice, r)
            verdicts.append(verdict)
        theirs = describe(meta, r)
        print(f"| {r['model']} | {r['ctx']} | {r['budget_gib']} | {theirs} | {ours} | "
              f"{verdicts[0]} | {verdicts[1]} |")  # fmt: skip


def describe(meta: ModelMetadata, r: dict[str, object]) -> str:
    n = meta.block_count
    theirs = f"-ngl {r['ngl'] or n + 1}"
    ot = r.get("ot") or []
    assert isinstance(ot, list)
    if ot:
        their = their_layout(meta, [str(o) for o in ot])
        theirs += (
            f", experts of {their[0]}..{n - 1} on CPU, layer {their[0]}: {their[1] or 'experts'}"
        )
    return theirs


def compare_choice(
    meta: ModelMetadata, choice: LlamaChoice, r: dict[str, object]
) -> tuple[str, str]:
    """(our layout in words, how it compares with llama.cpp's: equal, or steps of one split
    fraction of one layer more or less conservative)."""
    n = meta.block_count
    ngl = choice.layout.n_gpu_layers
    ours = f"-ngl {ngl}"
    mine: tuple[int, str | None] = (n, None)
    if choice.layout.experts_on_cpu:
        mine = (min(choice.layout.experts_on_cpu), choice.layout.split_ffn)
        ours += f", experts of {mine[0]}..{n - 1} on CPU, layer {mine[0]}: {mine[1] or 'experts'}"
    ot = r.get("ot") or []
    assert isinstance(ot, list)
    their = their_layout(meta, [str(o) for o in ot]) if ot else (n, None)
    diff = step(*mine) - step(*their)
    if ngl != (r["ngl"] or n + 1):
        verdict = "different -ngl"
    elif diff == 0:
        verdict = "equal"
    else:
        verdict = f"{abs(diff)} step(s) {'less' if diff > 0 else 'more'} conservative"
    if choice.layout.n_ubatch != N_UBATCH:
        ours += f", -ub {choice.layout.n_ubatch}"
    return ours, verdict


def split_jobs(models: dict[str, ModelMetadata]) -> list[dict[str, object]]:
    """Our own layouts (split layer and prompt ubatch as rendered) for the MoE models that
    llama.cpp offloads at 24/48/80 GiB, for collect_arch.py's `split` phase to measure."""
    out: list[dict[str, object]] = []
    for name in ("gpt-oss-120b.gguf", "deepseek-v3.gguf"):
        meta = models[name]
        for budget in (24, 48, 80):
            gpu = Gpu(index=0, uuid="GPU-0", name="H200", memory_total_bytes=budget << 30,
                      memory_free_bytes=budget << 30)  # fmt: skip
            _, off = place_llama(meta, [gpu], n_ctx=32768, margin=0, allow_cpu=True)
            if off is None or off.kind != "experts":
                continue
            layout = off.layout
            ot = ",".join(experts_pattern(sorted(layout.experts_on_cpu), layout.split_ffn))
            job = {"model": name, "ctx": 32768, "ngl": layout.n_gpu_layers, "ot": ot,
                   "budget_gib": budget}  # fmt: skip
            # both ubatches: the compute buffer at -ub 2048 has no measured point otherwise
            out += [{**job, "ub": ub} for ub in (N_UBATCH, PROMPT_UBATCH)]
    return out


def main() -> None:
    results = Path(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1] != "--jobs" else None
    with tempfile.TemporaryDirectory() as tmp:
        models = load(Path(tmp))
        if "--jobs" in sys.argv:
            (ROOT / "bench/gpu/split-jobs.json").write_text(
                json.dumps(split_jobs(models), indent=1) + "\n"
            )
            return
        memory_table(models, results or ROOT / "bench" / "results")
        fit_table(models, results or ROOT / "bench" / "results")


if __name__ == "__main__":
    main()
