"""Our layer placement versus `llama-fit-params` for GPU budgets of 8 to 47 GiB.

Reads bench/results/gpu-fit-raw.json (llama.cpp's own fit on the H100, `-fitt` set so that it may
use B GiB), places the same header-only models with maas.compiler.placement.llama_fit on a GPU with
B GiB free and no margin, and prints both as markdown.
Usage: python -m bench.gpu.compare_fit [--holdout]
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from pathlib import Path

from bench.gpu.compare_memory import SUFFIX, load_models

from maas.compiler.models import Gpu
from maas.compiler.placement.llama_fit import place_llama

ROOT = Path(__file__).resolve().parents[2]
GIB = 1 << 30


def theirs(fit: dict[str, object], n_layer: int) -> tuple[int, int]:
    """(ngl, routed-expert layers on the CPU) from llama-fit-params' answer."""
    ngl = fit["ngl"] if fit["ngl"] is not None else n_layer + 1
    blocks = set()
    for pattern in fit["ot"]:  # type: ignore[union-attr]
        # whole experts moved, or the whole FFN of a layer (llama.cpp's ATTN fraction); a layer
        # with only some FFN tensors on the CPU (its UP/GATE fractions) is not counted
        if "exps" in pattern or "ffn_(gate|up|gate_up|down)" in pattern:
            blocks.update(int(i) for i in re.findall(r"blk\\\.(\d+)", pattern))
    return int(ngl), len([b for b in blocks if b < n_layer])  # type: ignore[call-overload]


def ours(meta: object, budget_gib: int) -> tuple[int, int]:
    gpu = Gpu(
        index=0,
        uuid="GPU-0",
        name="H100",
        memory_total_bytes=80 * GIB,
        memory_free_bytes=budget_gib * GIB,
    )
    full, offloaded = place_llama(meta, [gpu], n_ctx=8192, margin=0, allow_cpu=True)  # type: ignore[arg-type]
    choice = full or offloaded
    assert choice is not None
    return choice.layout.n_gpu_layers, len(choice.layout.experts_on_cpu)


def main() -> int:
    raw = json.loads((ROOT / f"bench/results/gpu-fit{SUFFIX}-raw.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        models = load_models(Path(tmp))
    print(
        "| model | budget GiB | llama.cpp -ngl | ours | llama.cpp expert layers on CPU | ours |"
        " within 1 | not more |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    within = never_more = total = 0
    for fit in raw["fit"]:
        meta = models[fit["model"]]
        t_ngl, t_exp = theirs(fit, meta.block_count)
        o_ngl, o_exp = ours(meta, fit["budget_gib"])
        ok = abs(t_ngl - o_ngl) <= 1 and abs(t_exp - o_exp) <= 1
        # "more" means more on the GPU: more layers, or fewer expert layers on the CPU
        not_more = o_ngl <= t_ngl and (o_ngl < t_ngl or o_exp >= t_exp)
        total += 1
        within += ok
        never_more += not_more
        print(
            f"| {fit['model']} | {fit['budget_gib']} | {t_ngl} | {o_ngl} | {t_exp} | {o_exp} |"
            f" {'yes' if ok else 'NO'} | {'yes' if not_more else 'NO'} |"
        )
    print(
        f"\nwithin one layer: {within}/{total} ({within / total:.0%}); "
        f"never more on the GPU than llama.cpp: {never_more}/{total}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
