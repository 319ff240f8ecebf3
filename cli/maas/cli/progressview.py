"""Progress of long work for people: rich bars on a terminal, plain lines otherwise (not a TTY,
NO_COLOR, TERM=dumb; `-o json` prints the figures themselves). The figures come from the agent's
status (`progress_bar`: what, done, total, unit, note)."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from maas.cli.output import use_color

if TYPE_CHECKING:
    from maas.compiler import DeploymentStatus, ProgressBar

VERBS = {"pull": "pulling", "download": "downloading", "startup": "starting"}


def _amount(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value:.0f} s"
    mib = value / (1024 * 1024)
    return f"{mib / 1024:.1f} GiB" if mib >= 1024 else f"{mib:.1f} MiB"


def describe(bar: ProgressBar) -> str:
    """`pulling 12.3 MiB of 27.0 MiB (45%), 3/5 layers`; `starting 12 s of 1800 s budget`."""
    verb = VERBS.get(bar.what, bar.what)
    done, total, unit = bar.done, bar.total, bar.unit
    text = f"{verb} {_amount(done, unit)}"
    if total:
        text += f" of {_amount(total, unit)}"
        text += " budget" if bar.what == "startup" else f" ({min(done / total, 1):.0%})"
    if bar.note:
        text += f", {bar.note}"
    return text


def fancy(stream: TextIO = sys.stderr) -> bool:
    return use_color(stream)


def print_status_bars(deployments: list[DeploymentStatus], stream: TextIO = sys.stdout) -> None:
    """Below `maasctl status`'s table: one bar (or line) per deployment with work going on."""
    busy = [(d.name, d.progress_bar) for d in deployments if d.progress_bar is not None]
    if not busy:
        return
    if not fancy(stream):
        for name, bar in busy:
            print(f"{name}: {describe(bar)}", file=stream)
        return
    from rich.console import Console
    from rich.progress_bar import ProgressBar
    from rich.table import Table

    grid = Table.grid(padding=(0, 1))
    for name, bar in busy:
        total = bar.total or None
        grid.add_row(name, ProgressBar(total=total, completed=bar.done, width=30), describe(bar))
    Console(file=stream).print(grid)


class WaitView:
    """`apply --wait`'s progress: a live rich display, or a plain line when a deployment's work
    changes kind, and at most every `every_s` seconds otherwise."""

    def __init__(self, stream: TextIO = sys.stderr, every_s: float = 5.0) -> None:
        self.stream = stream
        self.every_s = every_s
        self.live: Any = None
        self.tasks: dict[str, Any] = {}
        self.said: dict[str, tuple[str, float]] = {}
        if fancy(stream):
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn

            self.live = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[detail]}"),
                console=Console(file=stream),
                transient=True,
            )
            self.live.start()

    def update(self, deployments: list[DeploymentStatus], now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        for d in deployments:
            bar = d.progress_bar
            if bar is None:
                continue
            name = d.name
            if self.live is not None:
                self._draw(name, bar)
                continue
            kind, last = self.said.get(name, ("", -1e9))
            if bar.what != kind or now - last >= self.every_s:
                print(f"progress: {name} {describe(bar)}", file=self.stream)
                self.said[name] = (bar.what, now)

    def _draw(self, name: str, bar: ProgressBar) -> None:
        total = bar.total or None
        label = f"{name} {VERBS.get(bar.what, bar.what)}"
        if name not in self.tasks:
            self.tasks[name] = self.live.add_task(label, total=total, detail="")
        self.live.update(
            self.tasks[name],
            description=label,
            total=total,
            completed=bar.done,
            detail=describe(bar),
        )

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
