"""Plan rendering for people: an aligned text table and Markdown for pull-request comments."""

from __future__ import annotations

import shlex

from maas.cli.output import table
from maas.compiler import GIB, MIB, DeviceTotal, Plan, PlanDeployment

BAR = 20


def size_text(value: int) -> str:
    return f"{value / GIB:.1f} GiB" if value >= GIB else f"{value / MIB:.0f} MiB"


def bar(used: int, usable: int, width: int = BAR) -> str:
    filled = width if usable <= 0 else min(width, round(width * used / usable))
    return "[" + "#" * filled + "." * (width - filled) + "]"


def device_label(total: DeviceTotal) -> str:
    if total.device == "host":
        return "host memory"
    return f"{total.device.upper()} {total.name.removeprefix('NVIDIA ')}"


def totals_lines(plan: Plan) -> list[str]:
    """One line per GPU and one for host memory: a bar, allocated (reserved) / usable, headroom
    (left); where on-demand groups take turns, what all would hold at once and each group."""
    width = max((len(device_label(t)) for t in plan.totals), default=0)
    lines = []
    for t in plan.totals:
        unknown = f", {len(t.unknown_need)} not estimated" if t.unknown_need else ""
        lines.append(
            f"{device_label(t).ljust(width)}  {bar(t.allocated_bytes, t.usable_bytes)} "
            f"{t.allocated_bytes / GIB:5.1f} / {t.usable_bytes / GIB:.1f} GiB  "
            f"({size_text(t.headroom_bytes)} left{unknown})"
        )
        if t.groups:
            turns = "; ".join(
                f"{group} takes turns in {size_text(size)} ({_members(plan, group)} deployments)"
                for group, size in t.groups.items()
            )
            lines.append(
                f"{''.ljust(width)}  all at once {size_text(t.all_at_once_bytes)}; {turns}"
            )
    return lines


def _members(plan: Plan, group: str) -> int:
    """How many deployments take turns in `group` (the lines above the totals name them)."""
    return sum(1 for d in plan.deployments if d.on_demand and d.on_demand.group == group)


def on_demand_text(d: PlanDeployment) -> str:
    """'idle 600s, group g' for an on-demand deployment, '' for an always-on one."""
    if d.on_demand is None:
        return ""
    group = f", takes turns in {d.on_demand.group}" if d.on_demand.group else ""
    return f"on demand: 0-{d.replicas} replicas, idle stop {d.on_demand.idle_timeout_s}s{group}"


def placement_text(d: PlanDeployment, gpu_names: dict[str, str] | None = None) -> str:
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
        names = gpu_names or {}
        text += " on " + ",".join(names.get(g, g[:12]) for g in p.gpus)
    if p.replica_cpus:  # one replica per NUMA node: each its own CPUs
        text += " cpus " + " | ".join(r.cpuset for r in p.replica_cpus)
    elif p.cpuset:
        text += f" cpus {p.cpuset}"
    return text


def estimate_text(d: PlanDeployment) -> str:
    e = d.estimate
    parts = []
    if e.vram_bytes:
        parts.append("VRAM " + "+".join(size_text(b) for b in e.vram_bytes))
    if e.ram_bytes is not None:
        parts.append(f"RAM {size_text(e.ram_bytes)}")
    if e.decode_tokens_per_s is not None:
        parts.append(f"~{e.decode_tokens_per_s:.0f} tok/s")
    text = ", ".join(parts) or "unknown"
    return f"{text} x {d.replicas}" if d.replicas > 1 and parts else text


def plan_text(plan: Plan, *, wide: bool = False, commands: bool = False) -> str:
    """The plan as a table: by default the columns that fit 100 columns (the GPU named by its
    index); `wide` adds the image, the GPU UUIDs and why; `commands` (or `wide`) adds each
    container's argv below."""
    if not plan.deployments:
        return f"node {plan.node}: no deployments"
    index = {t.uuid: t.device.upper() for t in plan.totals if t.uuid}
    headers = ["deployment", "backend", "placement", "port", "estimate"]
    rows = []
    for d in plan.deployments:
        ports = ",".join(map(str, d.ports)) or str(d.port)
        if wide:
            row = [d.name, d.backend, d.image, placement_text(d), ports, estimate_text(d)]
            rows.append([*row, f"{d.backend_rule}; {d.placement.reason}"])
        else:
            where = placement_text(d, gpu_names=index)
            rows.append([d.name, d.backend, where, _short(ports, 13), estimate_text(d)])
    if wide:
        headers = ["deployment", "backend", "image", "placement", "port", "estimate", "why"]
    lines = [f"node {plan.node}: {len(plan.deployments)} deployment(s)", "", table(headers, rows)]
    demand = [f"{d.name}: {on_demand_text(d)}" for d in plan.deployments if d.on_demand]
    if demand:
        lines += ["", *demand]
    if wide or commands:
        lines.append("")
        lines += [f"{d.name}: {shlex.join(d.command)}" for d in plan.deployments]
    return "\n".join([*lines, "", *totals_lines(plan)])


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


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
    demand = [f"- `{d.name}`: {on_demand_text(d)}" for d in plan.deployments if d.on_demand]
    lines += ["", *demand] if demand else []
    lines += ["", "```", *totals_lines(plan), "```"]
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
