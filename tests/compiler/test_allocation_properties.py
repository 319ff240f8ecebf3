"""Property tests of the node's allocation: for any valid specs and any node, the plan never puts
more on a GPU or in host memory than it has, and planning one more deployment never changes the
placement of those already running."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from gguf import GGMLQuantizationType
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maas.compiler import CompileOptions, MaasError, Plan, compile_plan, load_sources
from maas.compiler.allocation import PROCESS_CONTEXT_BYTES
from maas.compiler.metadata import ModelMetadata
from maas.compiler.metadata.safetensors import from_config
from support import gguf_factory

GIB = 1 << 30
SETTINGS = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
# model kind -> (backend, file or None)
KINDS = {
    "gguf-8b": ("llama-box", "m.gguf"),
    "gguf-70b": ("llama-box", "m.gguf"),
    "gguf-moe": ("llama-box", "m.gguf"),
    "vllm-8b": ("vllm", None),
    "custom": ("custom", None),
}


@cache
def models(tmp: Path) -> dict[str, ModelMetadata]:
    out = {}
    for kind, shape in (
        ("gguf-8b", gguf_factory.LLAMA3_8B),
        ("gguf-70b", gguf_factory.LLAMA3_70B),
        ("gguf-moe", gguf_factory.MIXTRAL_8X7B),
    ):
        folder = tmp / kind
        folder.mkdir(parents=True, exist_ok=True)
        (path,) = gguf_factory.write_header_only(
            folder / "m.gguf", shape, GGMLQuantizationType.Q4_0
        )
        out[kind] = gguf_factory.header_metadata(path)
    config = json.dumps(gguf_factory.LLAMA31_8B_CONFIG).encode()
    out["vllm-8b"] = from_config(config, weight_bytes=16 * GIB, name="c")
    return out


gpu = st.tuples(st.integers(8, 96), st.floats(0.3, 1.0))  # total GiB, share free
nodes = st.tuples(st.lists(gpu, max_size=3), st.integers(4, 256))  # GPUs, host GiB
deployment = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(sorted(KINDS)),
        "replicas": st.integers(0, 3),
        "offload": st.booleans(),
        "gpus": st.sampled_from(["auto", "none", 1, [0]]),
        "context": st.sampled_from([None, 4096, 32768]),
        "priority": st.sampled_from([0, 0, 0, 5]),
        "reserve": st.sampled_from([None, 2, 6]),
    }
)


def node_text(gpus: list[tuple[int, float]], host_gib: int) -> str:
    rows = [
        f"    - {{index: {i}, uuid: GPU-{i}, name: G{i}, memory_total_bytes: {t * GIB}, "
        f"memory_free_bytes: {int(t * GIB * f)}, memory_bandwidth_bytes_per_s: 1000000000000}}"
        for i, (t, f) in enumerate(gpus)
    ]
    return (
        "apiVersion: maas/v1\nkind: Node\nmetadata: {name: n}\nspec:\n"
        "  cpu: {cores: 8, threads: 16}\n"
        f"  memory: {{total_bytes: {host_gib * GIB}}}\n"
        + ("  gpus:\n" + "\n".join(rows) + "\n" if rows else "")
    )


def spec_text(name: str, d: dict[str, object]) -> str:
    backend, file = KINDS[str(d["kind"])]
    lines = [
        "apiVersion: maas/v1", "kind: Deployment", f"metadata: {{name: {name}}}", "spec:",
        "  source: huggingface", f"  repo_id: org/{name}", f"  backend: {backend}",
        f"  replicas: {d['replicas']}", f"  allow_cpu_offload: {str(d['offload']).lower()}",
        f"  gpus: {json.dumps(d['gpus'])}", f"  priority: {d['priority']}",
    ]  # fmt: skip
    if file:
        lines.append(f"  file: {file}")
    if backend == "custom":
        lines.append("  image: example/server:1")
        if d["reserve"]:
            lines.append(f"  resources: {{gpu_memory_bytes: {int(d['reserve']) * GIB}}}")  # type: ignore[call-overload]
    if d["context"]:
        lines.append(f"  context_length: {d['context']}")
    return "\n".join(lines) + "\n"


def compile_all(
    specs: list[dict[str, object]], node: str, tmp: Path, previous: Plan | None = None
) -> Plan | None:
    sources = {"node.yaml": node}
    wanted = {}
    for i, d in enumerate(specs):
        name = f"d{i}"
        sources[f"{name}.yaml"] = spec_text(name, d)
        if d["kind"] != "custom":
            wanted[name] = models(tmp)[str(d["kind"])]
    documents = load_sources(sources)
    assert not documents.diagnostics, [x.render() for x in documents.diagnostics]
    try:
        return compile_plan(
            documents.deployments,
            documents.nodes[0].model,
            options=CompileOptions(),
            previous=previous,
            models=wanted,
        )
    except MaasError as exc:
        assert any(x.severity == "error" for x in exc.diagnostics)
        return None


def assert_fits(plan: Plan, node_gpus: list[tuple[int, float]], host_gib: int) -> None:
    """Recomputed from the deployments (not from the plan's own totals), then the totals agree."""
    margin = CompileOptions().gpu_margin_bytes
    used: dict[str, int] = {}
    processes: dict[str, int] = {}
    host = 0
    for d in plan.deployments:
        for uuid, vram in zip(d.placement.gpus, d.estimate.vram_bytes, strict=False):
            used[uuid] = used.get(uuid, 0) + vram * d.replicas
            if d.backend == "llama-box":  # a CUDA context each, outside the estimate
                processes[uuid] = processes.get(uuid, 0) + d.replicas
        host += (d.estimate.ram_bytes or 0) * d.replicas
    for uuid, count in processes.items():  # the margin holds the first context
        used[uuid] += PROCESS_CONTEXT_BYTES * max(0, count - 1)
    for i, (total, free) in enumerate(node_gpus):
        assert used.get(f"GPU-{i}", 0) <= max(0, int(total * GIB * free) - margin)
    assert host <= host_gib * GIB
    for t in plan.totals:
        expected = host if t.device == "host" else used.get(str(t.uuid), 0)
        assert t.allocated_bytes == expected
    # vLLM's own default share is never exceeded; together they are bound by the bytes above
    assert all((d.placement.gpu_memory_utilization or 0) <= 0.9 for d in plan.deployments)


@SETTINGS
@given(nodes, st.lists(deployment, min_size=1, max_size=6))
def test_no_device_is_ever_overcommitted(
    tmp_path_factory: object,
    node: tuple[list[tuple[int, float]], int],
    specs: list[dict[str, object]],
) -> None:
    tmp = Path(str(tmp_path_factory.getbasetemp()))  # type: ignore[attr-defined]
    plan = compile_all(specs, node_text(*node), tmp)
    if plan is not None:
        assert_fits(plan, *node)


@SETTINGS
@given(nodes, st.lists(deployment, min_size=1, max_size=5), deployment)
def test_one_more_deployment_never_moves_running_ones(
    tmp_path_factory: object,
    node: tuple[list[tuple[int, float]], int],
    specs: list[dict[str, object]],
    extra: dict[str, object],
) -> None:
    tmp = Path(str(tmp_path_factory.getbasetemp()))  # type: ignore[attr-defined]
    text = node_text(*node)
    before = compile_all(specs, text, tmp)
    if before is None:
        return
    extra = {**extra, "priority": 0}  # a higher priority may displace, by design
    after = compile_all([*specs, extra], text, tmp, previous=before)
    if after is None:
        return
    assert_fits(after, *node)
    # A deployment scaled to zero runs nothing and holds nothing: where it would go is worked out
    # again against what is left (a vLLM beside it may have grown into its room meanwhile).
    for d in (d for d in before.deployments if d.replicas):
        again = after.deployment(d.name)
        assert again is not None
        assert again.placement == d.placement, d.name
        assert again.spec_hash == d.spec_hash
