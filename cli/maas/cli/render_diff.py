"""Rendering a PlanDiff: terminal text, Markdown for pull-request comments, JSON for machines."""

from __future__ import annotations

import json
from itertools import groupby

from maas.compiler import Change, PlanDiff

FOLD_AFTER = 8


def _by_node(diff: PlanDiff) -> list[tuple[str, list[Change]]]:
    """Each node with changes, or whose headroom moves (a deployment moved elsewhere)."""
    grouped = {node: list(c) for node, c in groupby(diff.changes, key=lambda c: c.node)}
    for h in diff.headroom:
        grouped.setdefault(h.node, [])
    return sorted(grouped.items())


def diff_text(diff: PlanDiff, *, color: bool = False) -> str:
    colors = {"+": "\033[32m", "-": "\033[31m", "-/+": "\033[33m", "~": "\033[33m"}
    lines: list[str] = []
    width = max((len(c.name) for c in diff.changes), default=0)
    for node, changes in _by_node(diff):
        lines.append(f"node {node}")
        for change in changes:
            symbol = change.symbol.rjust(3)
            if color:
                symbol = f"{colors[change.symbol]}{symbol}\033[0m"
            lines.append(f"  {symbol} {change.name.ljust(width)}  {'; '.join(change.reasons)}")
            lines.extend(f"      {item}" for item in change.performance)
        lines.extend(f"  {h.text()}" for h in diff.headroom_of(node))
        lines.append("")
    for group in diff.groups:
        lines.append(f"group {group.name}: {', '.join(group.nodes)}")
        lines.append(f"  {group.symbol.rjust(3)} {group.name}  {'; '.join(group.reasons)}")
        lines.extend(f"      {item}" for item in group.performance)
        lines.append("")
    lines.append(diff.summary())
    return "\n".join(lines)


def diff_markdown(diff: PlanDiff, *, base: str, head: str) -> str:
    lines = [f"### MaaS-Base plan: `{base[:12]}` → `{head[:12]}`", "", f"**{diff.summary()}**"]
    if diff.groups:
        lines += [
            "",
            "#### distributed groups",
            "",
            "| | group | nodes | why | performance |",
            "| --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| `{g.symbol}` | `{g.name}` | {'<br>'.join(g.nodes)} | {'; '.join(g.reasons)} "
            f"| {'<br>'.join(g.performance)} |"
            for g in diff.groups
        ]
    for node, changes in _by_node(diff):
        rows = ["| | deployment | why | performance |", "| --- | --- | --- | --- |"]
        rows += [
            f"| `{c.symbol}` | `{c.name}` | {'; '.join(c.reasons)} | {'<br>'.join(c.performance)} |"
            for c in changes
        ]
        rows += ["", *(f"- {h.text()}" for h in diff.headroom_of(node))]
        title = f"node `{node}`: {len(changes)} change(s)"
        if len(changes) > FOLD_AFTER:
            lines += ["", f"<details><summary>{title}</summary>", "", *rows, "", "</details>"]
        else:
            lines += ["", f"#### {title}", "", *rows]
    return "\n".join(lines) + "\n"


def diff_json(diff: PlanDiff, *, base: str, head: str, assignment: dict[str, list[str]]) -> str:
    value = {
        "format_version": 1,
        "base": base,
        "head": head,
        "summary": {k: diff.count(k) for k in ("create", "recreate", "update", "remove")},
        "changes": [
            {
                "node": c.node,
                "deployment": c.name,
                "action": c.kind,
                "symbol": c.symbol,
                "reasons": list(c.reasons),
                "performance": list(c.performance),
            }
            for c in diff.changes
        ],
        "headroom": [
            {
                "node": h.node,
                "device": h.device,
                "usable_bytes": h.usable_bytes,
                "before_bytes": h.before,
                "after_bytes": h.after,
            }
            for h in diff.headroom
        ],
        "groups": [
            {
                "deployment": g.name,
                "action": g.kind,
                "symbol": g.symbol,
                "nodes": list(g.nodes),
                "reasons": list(g.reasons),
                "performance": list(g.performance),
            }
            for g in diff.groups
        ],
        "assignment": assignment,
    }
    return json.dumps(value, indent=2) + "\n"
