"""Benchmark: compiling one node's plan with 100 deployments, all shared out in one allocation.

The node has 8 GPUs of 80 GB and 2 TiB of host memory; the deployments mix llama.cpp GGUFs
(8B and 70B shapes, header-only files written at real shapes, some with CPU offload), vLLM models
and custom backends, with 1-2 replicas. Prints the median wall time of `compile_plan` (metadata
already read, as the agent holds it) against the goal (0.2 s), and beside it the same deployments
compiled one at a time, each alone on the node (what every deployment cost before the node was
planned as a whole).

    python bench/compile_node.py [--runs 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from gguf import GGMLQuantizationType

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from maas.compiler import CompileOptions, MaasError, compile_plan, load_sources  # noqa: E402
from maas.compiler.metadata import ModelMetadata  # noqa: E402
from maas.compiler.metadata.safetensors import from_config  # noqa: E402
from support import gguf_factory  # noqa: E402

GOAL_S = 0.2
GIB = 1 << 30
N = 100
# one vLLM in ten: each holds a large fraction of a GPU
KINDS = ("gguf-8b", "gguf-70b", "custom", "gguf-8b", "vllm", "gguf-8b", "gguf-70b", "custom",
         "gguf-8b", "custom")  # fmt: skip


def node() -> str:
    gpus = "".join(
        f"    - {{index: {g}, uuid: GPU-{g}, name: NVIDIA H100 80GB HBM3, "
        f"memory_total_bytes: {80 * GIB}, memory_free_bytes: {79 * GIB}}}\n"
        for g in range(8)
    )
    return (
        "apiVersion: maas/v1\nkind: Node\nmetadata: {name: big}\nspec:\n"
        "  cpu: {cores: 64, threads: 128}\n"
        f"  memory: {{total_bytes: {2048 * GIB}}}\n  gpus:\n{gpus}"
    )


def deployment(i: int) -> str:
    kind = KINDS[i % len(KINDS)]
    extra = {
        "gguf-8b": "  file: m.gguf\n  allow_cpu_offload: true\n",
        "gguf-70b": "  file: m.gguf\n  allow_cpu_offload: true\n",
        "vllm": "  backend: vllm\n  context_length: 4096\n  priority: 10\n",
        "custom": "  backend: custom\n  image: example/server:1\n  gpus: none\n"
        "  resources: {memory_bytes: 2147483648}\n",
    }[kind]
    return (
        f"apiVersion: maas/v1\nkind: Deployment\nmetadata: {{name: m-{i:03d}}}\nspec:\n"
        f"  source: huggingface\n  repo_id: org/m-{i:03d}\n  replicas: {1 + i % 2}\n{extra}"
    )


def metadata(tmp: Path) -> dict[str, ModelMetadata]:
    out: dict[str, ModelMetadata] = {}
    for kind, shape in (("gguf-8b", gguf_factory.LLAMA3_8B), ("gguf-70b", gguf_factory.LLAMA3_70B)):
        (path,) = gguf_factory.write_header_only(
            tmp / f"{kind}.gguf", shape, GGMLQuantizationType.Q4_0
        )
        out[kind] = gguf_factory.header_metadata(path)
    config = json.dumps(gguf_factory.LLAMA31_8B_CONFIG).encode()
    out["vllm"] = from_config(config, weight_bytes=16 * GIB, name="c")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    sources = {"node.yaml": node()} | {f"m-{i:03d}.yaml": deployment(i) for i in range(N)}
    documents = load_sources(sources)
    assert not documents.diagnostics
    the_node = documents.nodes[0].model
    with tempfile.TemporaryDirectory() as tmp:
        shapes = metadata(Path(tmp))
    kinds = [KINDS[i % len(KINDS)] for i in range(N)]
    models = {f"m-{i:03d}": shapes[k] for i, k in enumerate(kinds) if k in shapes}
    options = CompileOptions()
    whole, alone = [], []
    plan = None
    for _ in range(args.runs):
        start = time.perf_counter()
        try:
            plan = compile_plan(documents.deployments, the_node, options=options, models=models)
        except MaasError as exc:  # a crowded node may refuse some: still a full allocation
            plan = None
            refused = sum(d.severity == "error" for d in exc.diagnostics)
        whole.append(time.perf_counter() - start)
        start = time.perf_counter()
        for loaded in documents.deployments:
            compile_plan([loaded], the_node, options=options, models=models)
        alone.append(time.perf_counter() - start)
    median = statistics.median(whole)
    print(f"one node, 8 x 80 GB GPUs, {N} deployments (gguf 8B/70B, vLLM, custom; 1-2 replicas)")
    if plan is not None:
        gpus = ", ".join(
            f"{t.device} {t.allocated_bytes / GIB:.0f}/{t.usable_bytes / GIB:.0f} GiB"
            for t in plan.totals
        )
        print(f"plan: {len(plan.deployments)} deployments placed; {gpus}")
    else:
        print(f"plan: refused ({refused} deployments do not fit)")
    print(
        f"compile_plan, whole node: median {median:.3f} s (min {min(whole):.3f}) over {args.runs}"
    )
    print(f"each deployment alone:     median {statistics.median(alone):.3f} s")
    print(f"goal <= {GOAL_S:.1f} s: {'met' if median <= GOAL_S else 'MISSED'}")


if __name__ == "__main__":
    main()
