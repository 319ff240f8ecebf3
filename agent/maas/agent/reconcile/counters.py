"""Replica counters that outlive the agent: `counters.json` in the state folder.

Restarts (crashes and failed probes) and roll-outs (recreations for a new spec) per replica,
written atomically when they change. A file that cannot be read starts the counters from zero
with a warning: they are figures for people, never a reason to refuse to act.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import structlog

from maas.agent.desired.store import write_atomic

log = structlog.get_logger("maas.agent")
Replica = tuple[str, int]


class Counted(Protocol):
    restarts: int
    rollouts: int


class Counters:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "counters.json"
        self.saved: dict[str, list[int]] = self._load()

    def _load(self) -> dict[str, list[int]]:
        try:
            data: Any = json.loads(self.path.read_bytes())
            return {
                str(k): [int(v["restarts"]), int(v["rollouts"])]
                for k, v in data["replicas"].items()
            }
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning(
                "counters unreadable; starting from zero", file=str(self.path), error=str(exc)
            )
            return {}

    @staticmethod
    def _key(replica: Replica) -> str:
        return f"{replica[0]}/{replica[1]}"

    def get(self, replica: Replica) -> tuple[int, int]:
        restarts, rollouts = self.saved.get(self._key(replica), (0, 0))
        return restarts, rollouts

    def save(self, health: Mapping[Replica, Counted]) -> None:
        current = {
            self._key(k): [h.restarts, h.rollouts]
            for k, h in sorted(health.items())
            if h.restarts or h.rollouts
        }
        if current == self.saved:
            return
        document = {
            "replicas": {k: {"restarts": r, "rollouts": o} for k, (r, o) in current.items()}
        }
        try:
            write_atomic(self.path, json.dumps(document, indent=1).encode())
        except OSError as exc:
            log.warning("cannot write counters", file=str(self.path), error=exc.strerror)
            return
        self.saved = current
