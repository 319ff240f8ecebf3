"""What changes between two compiled repositories (base and head), per node and deployment.

Symbols follow Terraform's habit: `+` create, `-/+` recreate, `-` remove, `~` change in place.
A deployment that changes node shows as removed from the old node and created on the new one,
with the reason "moved". Performance-relevant differences (layers on GPU, predicted decode speed,
VRAM) are spelled out so a reviewer sees the cost of a change.
"""

from __future__ import annotations

import difflib
import shlex
from dataclasses import dataclass, field
from typing import Literal

from maas.compiler.plan import Plan, PlanDeployment
from maas.compiler.repo import FleetPlan
from maas.compiler.units import GIB

Kind = Literal["create", "recreate", "update", "remove"]
SYMBOLS: dict[Kind, str] = {"create": "+", "recreate": "-/+", "update": "~", "remove": "-"}


@dataclass(frozen=True)
class Change:
    node: str
    name: str
    kind: Kind
    reasons: tuple[str, ...] = ()
    performance: tuple[str, ...] = ()

    @property
    def symbol(self) -> str:
        return SYMBOLS[self.kind]


@dataclass(frozen=True)
class Headroom:
    """How a device's headroom (usable minus allocated) changes on a node."""

    node: str
    device: str  # 'gpu0', ... or 'host'
    name: str
    usable_bytes: int
    before: int | None  # None: the node is new
    after: int | None  # None: the node is gone

    def text(self) -> str:
        label = "host memory" if self.device == "host" else f"{self.device.upper()} {self.name}"
        before = "-" if self.before is None else f"{self.before / GIB:.1f}"
        after = "-" if self.after is None else f"{self.after / GIB:.1f}"
        return f"{label}: headroom {before} -> {after} GiB of {self.usable_bytes / GIB:.1f}"


@dataclass(frozen=True)
class GroupChange:
    """A distributed group's change, one for all its members: the pull request shows it as one
    row with its nodes."""

    name: str
    kind: Kind
    nodes: tuple[str, ...]  # 'node (role, share)', primary first
    reasons: tuple[str, ...] = ()
    performance: tuple[str, ...] = ()

    @property
    def symbol(self) -> str:
        return SYMBOLS[self.kind]


@dataclass
class PlanDiff:
    changes: list[Change] = field(default_factory=list)
    headroom: list[Headroom] = field(default_factory=list)
    groups: list[GroupChange] = field(default_factory=list)

    def headroom_of(self, node: str) -> list[Headroom]:
        return [h for h in self.headroom if h.node == node]

    def count(self, kind: Kind) -> int:
        groups = sum(1 for g in self.groups if g.kind == kind)
        return groups + sum(1 for c in self.changes if c.kind == kind)

    @property
    def empty(self) -> bool:
        return not self.changes and not self.groups

    def summary(self) -> str:
        if self.empty:
            return "No changes."
        parts = [f"{self.count('create')} to create", f"{self.count('recreate')} to recreate"]
        if self.count("update"):
            parts.append(f"{self.count('update')} to change in place")
        parts.append(f"{self.count('remove')} to remove")
        return "Plan: " + ", ".join(parts) + "."


def diff_fleets(base: FleetPlan, head: FleetPlan) -> PlanDiff:
    result = PlanDiff()
    base_nodes = {d.name: n for n, plan in base.plans.items() for d in plan.deployments}
    head_nodes = {d.name: n for n, plan in head.plans.items() for d in plan.deployments}
    for node in sorted(set(base.plans) | set(head.plans)):
        old = {d.name: d for d in base.plans[node].deployments} if node in base.plans else {}
        new = {d.name: d for d in head.plans[node].deployments} if node in head.plans else {}
        for name in sorted(set(old) | set(new)):
            change = _change(
                node,
                name,
                old.get(name),
                new.get(name),
                base_nodes=base_nodes,
                head_nodes=head_nodes,
            )
            if change is not None:
                result.changes.append(change)
        result.headroom += _headroom(node, base.plans.get(node), head.plans.get(node))
    _fold_groups(result, base, head)
    return result


ORDER: tuple[Kind, ...] = ("recreate", "create", "remove", "update")


def _fold_groups(result: PlanDiff, base: FleetPlan, head: FleetPlan) -> None:
    """The members' changes of each group become one GroupChange."""
    for name in sorted(set(base.groups) | set(head.groups)):
        mine = [c for c in result.changes if c.name == name]
        if not mine:
            continue
        result.changes = [c for c in result.changes if c.name != name]
        fleet = head if name in head.groups else base
        nodes = []
        for node in fleet.groups[name]:
            planned = fleet.plans[node].deployment(name)
            member = planned.group.me(node) if planned and planned.group else None
            nodes.append(f"{node} ({member.role}, {member.share:.0%})" if member else node)
        if name not in base.groups:
            kind: Kind = "create"
            reasons: tuple[str, ...] = ("new group (no single node holds it)",)
        elif name not in head.groups:
            kind, reasons = "remove", ("group dissolved",)
        else:
            kind = next(k for k in ORDER if any(c.kind == k for c in mine))
            reasons = tuple(dict.fromkeys(r for c in mine for r in c.reasons))
        performance = next((c.performance for c in mine if c.node == fleet.groups[name][0]), ())
        result.groups.append(GroupChange(name, kind, tuple(nodes), reasons, performance))


def _headroom(node: str, base: Plan | None, head: Plan | None) -> list[Headroom]:
    """The devices of `node` whose headroom the change moves."""
    before = {t.device: t for t in base.totals} if base else {}
    after = {t.device: t for t in head.totals} if head else {}
    found = []
    for device in [*after, *(d for d in before if d not in after)]:
        old, new = before.get(device), after.get(device)
        then = old.headroom_bytes if old else None
        now = new.headroom_bytes if new else None
        if then != now:
            total = new or old
            assert total is not None
            found.append(Headroom(node, device, total.name, total.usable_bytes, then, now))
    return found


def _change(
    node: str,
    name: str,
    old: PlanDeployment | None,
    new: PlanDeployment | None,
    *,
    base_nodes: dict[str, str],
    head_nodes: dict[str, str],
) -> Change | None:
    if old is None and new is not None:
        was = base_nodes.get(name)
        reason = (f"moved from {was}",) if was and was != node else ("new deployment",)
        return Change(node, name, "create", reason, _performance(None, new))
    if new is None and old is not None:
        now = head_nodes.get(name)
        reason = (f"moved to {now}",) if now and now != node else ("deployment removed",)
        return Change(node, name, "remove", reason)
    assert old is not None and new is not None
    reasons = _reasons(old, new)
    in_place = _in_place(old, new)
    if old.spec_hash != new.spec_hash:
        return Change(
            node,
            name,
            "recreate",
            (reasons or ("container definition changed",)) + in_place,
            _performance(old, new),
        )
    if in_place:
        return Change(node, name, "update", in_place, _performance(old, new))
    return None


def _reasons(old: PlanDeployment, new: PlanDeployment) -> tuple[str, ...]:
    reasons = []
    if old.image != new.image:
        reasons.append(f"image changed: {old.image} -> {new.image}")
    if old.entrypoint != new.entrypoint:
        reasons.append("entrypoint changed")
    if old.command != new.command:
        reasons.append(f"command changed: {_argv_change(old.command, new.command)}")
    if old.env != new.env:
        keys = sorted(k for k in set(old.env) | set(new.env) if old.env.get(k) != new.env.get(k))
        reasons.append("env changed: " + ", ".join(keys))
    before = old.placement.model_dump(exclude={"reason"})
    after = new.placement.model_dump(exclude={"reason"})
    if before != after:
        if _placement(old) != _placement(new):
            reasons.append(f"placement changed: {_placement(old)} -> {_placement(new)}")
        else:  # the same mode and layers: name what did change
            fields = [k for k in after if before.get(k) != after[k]]
            what = "; ".join(f"{k} {before.get(k)} -> {after[k]}" for k in fields[:3])
            reasons.append(f"placement changed: {what}")
    if old.model != new.model:
        reasons.append("model changed")
    if old.port != new.port or old.mounts != new.mounts or old.limits != new.limits:
        reasons.append("ports, mounts or limits changed")
    return tuple(reasons)


def _argv_change(old: list[str], new: list[str], limit: int = 120) -> str:
    """What a reviewer needs of an argv change: the arguments replaced, removed and added."""
    parts = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes():
        removed, added = shlex.join(old[i1:i2]), shlex.join(new[j1:j2])
        if op == "replace":
            context = f"{old[i1 - 1]} " if i1 > 0 and old[i1 - 1].startswith("-") else ""
            parts.append(f"{context}{removed} -> {added}")
        elif op == "delete":
            parts.append(f"removed {removed}")
        elif op == "insert":
            parts.append(f"added {added}")
    text = ", ".join(parts)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _in_place(old: PlanDeployment, new: PlanDeployment) -> tuple[str, ...]:
    reasons = []
    if old.replicas != new.replicas:
        reasons.append(f"replicas {old.replicas} -> {new.replicas}")
    if old.health != new.health:
        reasons.append("health check changed")
    if old.labels != new.labels or old.aliases != new.aliases:
        reasons.append("labels or aliases changed")
    if old.generic_proxy != new.generic_proxy:
        reasons.append(f"generic_proxy {old.generic_proxy} -> {new.generic_proxy}")
    if old.on_demand != new.on_demand:
        reasons.append(f"on demand {_on_demand(old)} -> {_on_demand(new)}")
    return tuple(reasons)


def _on_demand(d: PlanDeployment) -> str:
    if d.on_demand is None:
        return "off"
    group = f" in {d.on_demand.group}" if d.on_demand.group else ""
    return f"idle {d.on_demand.idle_timeout_s}s{group}"


def _placement(d: PlanDeployment) -> str:
    p = d.placement
    text: str = p.mode
    if p.gpu_layers is not None and p.layers_total:
        text += f" {p.gpu_layers}/{p.layers_total}"
    return text


def _performance(old: PlanDeployment | None, new: PlanDeployment) -> tuple[str, ...]:
    lines = []
    n = new.placement
    o = old.placement if old else None
    if n.layers_total:
        now = f"{n.gpu_layers if n.gpu_layers is not None else n.layers_total}/{n.layers_total}"
        if o is not None and o.layers_total:
            was = f"{o.gpu_layers if o.gpu_layers is not None else o.layers_total}/{o.layers_total}"
            if was != now:
                lines.append(f"layers on GPU {was} -> {now}")
        elif o is None:
            lines.append(f"layers on GPU {now}")
    speed_new = new.estimate.decode_tokens_per_s
    speed_old = old.estimate.decode_tokens_per_s if old else None
    if speed_new is not None and speed_old != speed_new:
        lines.append(
            f"predicted decode {speed_old:.0f} -> {speed_new:.0f} tok/s"
            if speed_old is not None
            else f"predicted decode {speed_new:.0f} tok/s"
        )
    vram_new, vram_old = sum(new.estimate.vram_bytes), sum(old.estimate.vram_bytes) if old else 0
    if vram_new and vram_new != vram_old:
        lines.append(
            f"VRAM {vram_old / GIB:.1f} -> {vram_new / GIB:.1f} GiB"
            if old
            else f"VRAM {vram_new / GIB:.1f} GiB"
        )
    return tuple(lines)
