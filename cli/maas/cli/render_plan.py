"""Plan rendering for people: an aligned text table and Markdown for pull-request comments."""

from __future__ import annotations

from maas.cli.output import table
from maas.compiler import Plan, PlanDeployment

GIB = 1024**3


def placement_text(d: PlanDeployment) -> str:
    p = d.placement
    text: str = p.mode
    if p.mode == "hybrid" and p.gpu_layers is not None and p.layers_total:
        text += f" {p.gpu_layers}/{p.layers_total} layers"
    elif p.mode == "gpu" and p.layers_total:
        text += f" {p.layers_total}/{p.layers_total} layers"
    if p.expert_offload:
        text += f", {len(p.expert_offload)} expert overrides"
    if p.tensor_parallel_size and p.tensor_parallel_size > 1:
        text += f", tp={p.tensor_parallel_size}"
    if p.gpus:
        text += " on " + ",".join(g[:12] for g in p.gpus)
    if p.cpuset:
        text += f" cpus {p.cpuset}"
    return text


def estimate_text(d: PlanDeployment) -> str:
    e = d.estimate
    parts = []
    if e.vram_bytes:
        parts.append("VRAM " + "+".join(f"{b / GIB:.1f}" for b in e.vram_bytes) + " GiB")
    if e.ram_bytes is not None:
        parts.append(f"RAM {e.ram_bytes / GIB:.1f} GiB")
    if e.decode_tokens_per_s is not None:
        parts.append(f"~{e.decode_tokens_per_s:.0f} tok/s")
    return ", ".join(parts) or "unknown"


def plan_text(plan: Plan) -> str:
    if not plan.deployments:
        return f"node {plan.node}: no deployments"
    rows = [
        [
            d.name,
            d.backend,
            d.image,
            placement_text(d),
            ",".join(map(str, d.ports)) or str(d.port),
            estimate_text(d),
            f"{d.backend_rule}; {d.placement.reason}",
        ]
        for d in plan.deployments
    ]
    head = f"node {plan.node}: {len(plan.deployments)} deployment(s)\n\n"
    return head + table(
        ["deployment", "backend", "image", "placement", "port", "estimate", "why"], rows
    )


def plan_markdown(plan: Plan) -> str:
    lines = [
        f"### Plan for node `{plan.node}`",
        "",
        "| deployment | backend | image | placement | port | estimate |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for d in plan.deployments:
        lines.append(
            f"| `{d.name}` | {d.backend} ({d.backend_rule}) | `{d.image}` | "
            f"{placement_text(d)} | {d.port} | {estimate_text(d)} |"
        )
    for d in plan.deployments:
        lines += [
            "",
            f"<details><summary><code>{d.name}</code> command</summary>",
            "",
            "```",
            " ".join(d.command),
            "```",
            "",
            "</details>",
        ]
    return "\n".join(lines) + "\n"
