"""The model cache's owner: which revision folders it holds, when each was last used, and the
collector that removes those no deployment has used for a while.

A revision folder is `<cache>/models/<source>/<repo_id>/<commit>/`, complete with its manifest
(maas.host.models.download); `<folder>.partial/` is one being downloaded. Each pass stamps
the folders its plan references as used now, then collects: a folder that the plan references is
never removed (it was just stamped), and one that no plan referenced for `max_idle_s` is: renamed
away first, so that it never exists half-removed under its own name. A partial folder that no
plan wants is removed after the same idle time (measured from its last write).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from maas.compiler import Plan
from maas.host.models.download import MANIFEST

log = structlog.get_logger("maas.agent.cache")
USES = "cache-uses.json"
TRASH = ".trash"


@dataclass
class Revision:
    source: str
    repo: str
    name: str  # the folder's name: the commit, or a revision's name
    folder: Path
    bytes: int
    complete: bool
    last_used: float | None = None
    used_by: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "repo": self.repo,
            "revision": self.name,
            "folder": str(self.folder),
            "bytes": self.bytes,
            "complete": self.complete,
            "last_used": self.last_used,
            "used_by": self.used_by,
        }


def _size(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += (Path(root) / name).lstat().st_size
            except OSError:
                continue  # removed meanwhile
    return total


class ModelCache:
    def __init__(self, cache_dir: Path, state_dir: Path, max_idle_s: float) -> None:
        self.store = cache_dir / "models"
        self.uses_path = state_dir / USES
        self.max_idle_s = max_idle_s
        self.uses: dict[str, float] = self._load()

    def _load(self) -> dict[str, float]:
        try:
            data = json.loads(self.uses_path.read_text())
            return {str(k): float(v) for k, v in data.items()}
        except (OSError, ValueError, AttributeError, TypeError):
            return {}  # no record (or a damaged one): every folder counts from its own mtime

    def _save(self) -> None:
        tmp = self.uses_path.with_suffix(".tmp")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(self.uses, indent=1, sort_keys=True))
        tmp.replace(self.uses_path)

    def revisions(self) -> list[Revision]:
        """Every revision folder (complete or partial) under the model store, by repository."""
        found = []
        if not self.store.is_dir():
            return []
        sources = [p for p in self.store.iterdir() if p.is_dir() and not p.name.startswith(".")]
        for source_dir in sorted(sources):
            for depth in ("*/*/*", "*/*"):  # ORG/NAME/REV, and NAME/REV
                for folder in sorted(source_dir.glob(depth)):
                    complete = (folder / MANIFEST).is_file()
                    partial = folder.name.endswith(".partial") and folder.is_dir()
                    if not (complete or partial):
                        continue
                    repo = folder.parent.relative_to(source_dir).as_posix()
                    name = folder.name.removesuffix(".partial")
                    found.append(
                        Revision(source_dir.name, repo, name, folder, _size(folder), complete)
                    )
        return found

    def pass_done(self, plan: Plan | None, now: float | None = None) -> list[Path]:
        """Stamp what `plan` uses, then remove what nothing used for `max_idle_s`."""
        now = time.time() if now is None else now
        shutil.rmtree(self.store / TRASH, ignore_errors=True)  # left by a collector cut short
        wanted = self.wanted(plan)
        for folder in wanted:
            self.uses[folder] = now
        removed = []
        for revision in self.revisions():
            folder = str(revision.folder)
            key = folder.removesuffix(".partial")
            if key in wanted:
                continue
            last = self.uses.get(key)
            if last is None:
                last = revision.folder.stat().st_mtime
            if now - last < self.max_idle_s:
                continue
            self._remove(revision.folder)
            self.uses.pop(key, None)
            removed.append(revision.folder)
            log.info("cache revision removed", folder=folder, bytes=revision.bytes)
        self._save()
        return removed

    @staticmethod
    def wanted(plan: Plan | None) -> dict[str, list[str]]:
        """Revision folder -> the deployments whose plan entries reference it."""
        users: dict[str, list[str]] = {}
        for d in plan.deployments if plan else []:
            if d.model.folder is not None:
                users.setdefault(d.model.folder, []).append(d.name)
        return users

    def _remove(self, folder: Path) -> None:
        trash = self.store / TRASH
        trash.mkdir(parents=True, exist_ok=True)
        target = trash / f"{folder.name}.{time.time_ns()}"
        folder.rename(target)  # gone from its name at once; the bytes follow
        shutil.rmtree(target, ignore_errors=True)

    def usage(self, plan: Plan | None) -> list[dict[str, Any]]:
        """Per model (source and repository): its revisions, their bytes, last use and users."""
        users = self.wanted(plan)
        models: dict[tuple[str, str], dict[str, Any]] = {}
        for revision in self.revisions():
            key = str(revision.folder).removesuffix(".partial")
            revision.last_used = self.uses.get(key)
            revision.used_by = sorted(users.get(key, []))
            entry = models.setdefault(
                (revision.source, revision.repo),
                {"source": revision.source, "repo": revision.repo, "bytes": 0, "revisions": []},
            )
            entry["bytes"] += revision.bytes
            entry["revisions"].append(revision.as_dict())
        return [models[k] for k in sorted(models)]
