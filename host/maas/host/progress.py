"""Progress of long work, as figures a person can read: image pulls (layers and bytes, from the
engine's pull events), model downloads (bytes of total, counted as they arrive by
maas.host.models.download) and startup (seconds of the startup budget). The figures are
shared objects that the worker thread updates and `maasctl status` reads as they are."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

# Pull event statuses (moby/moby distribution/pull_v2.go, progress messages) that end a layer.
_LAYER_DONE = ("Pull complete", "Already exists")


@dataclass
class Progress:
    """One piece of work: `done` of `total` `unit`s (bytes or seconds), and a short note."""

    what: str  # pull, download, startup
    done: float = 0.0
    total: float | None = None
    unit: str = "B"
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "what": self.what,
            "done": self.done,
            "total": self.total,
            "unit": self.unit,
            "note": self.note,
        }


@dataclass
class PullProgress:
    """Folds the engine's pull events (one JSON object per event, per layer `id`) into bytes
    and layers: bytes are summed over layers that report a size; a finished layer counts whole."""

    progress: Progress = field(default_factory=lambda: Progress("pull"))
    layers: dict[str, tuple[int, int, bool]] = field(default_factory=dict)

    def event(self, event: Mapping[str, Any]) -> None:
        layer, status = event.get("id"), str(event.get("status", ""))
        if not layer or status.startswith(("Pulling from", "Digest:", "Status:")):
            return
        current, total, done = self.layers.get(str(layer), (0, 0, False))
        detail = event.get("progressDetail") or {}
        if status == "Downloading" and detail.get("total"):
            current, total = int(detail.get("current", 0)), int(detail["total"])
        if status in _LAYER_DONE:
            current, done = total, True
        self.layers[str(layer)] = (current, total, done)
        finished = sum(1 for _, _, d in self.layers.values() if d)
        self.progress.done = float(sum(c for c, _, _ in self.layers.values()))
        sized = sum(t for _, t, _ in self.layers.values())
        self.progress.total = float(sized) if sized else None
        self.progress.note = f"{finished}/{len(self.layers)} layers"


def reporter(progress: Progress) -> Callable[[Mapping[str, Any]], None]:
    fold = PullProgress(progress)
    return fold.event
