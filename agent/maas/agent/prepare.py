"""Getting a deployment ready to start: its image present and, for built-in backends, its model
in the cache. Runs in background threads so that a long pull or download never blocks the
reconcile loop; the loop asks `ready()` and shows `progress` in status.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maas.agent.engine import Engine
from maas.agent.progress import Progress, PullProgress, download_bar
from maas.compiler.diagnostics import MaasError
from maas.compiler.plan import PlanDeployment


@dataclass
class Job:
    phase: str = "pulling"  # pulling, downloading, done, failed
    progress: str = ""
    error: str | None = None
    retryable: bool = True
    bar: Progress | None = None  # updated by the worker thread while status reads it
    thread: threading.Thread | None = field(default=None, repr=False)


def needs_download(planned: PlanDeployment) -> bool:
    model = planned.model
    return model.download and planned.backend != "custom" and not Path(model.path).exists()


def download_model(
    planned: PlanDeployment, progress: Callable[[str], None], bar: Progress | None = None
) -> None:
    """Fetch a hub model into the cache path the plan mounts (huggingface_hub)."""
    model = planned.model
    if not needs_download(planned):
        return
    if model.source != "huggingface" or model.repo_id is None:
        raise MaasError.single(
            "download",
            f"downloading from {model.source} is not supported; "
            "put the model in the cache or use local_path",
        )
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    target = Path(model.path)
    local_dir = target if not target.suffix else target.parent
    progress(f"downloading {model.repo_id}")
    try:
        snapshot_download(
            repo_id=model.repo_id,
            revision=model.revision,
            local_dir=local_dir,
            allow_patterns=[model.file] if model.file else None,
            tqdm_class=download_bar(bar) if bar is not None else None,
        )
    except GatedRepoError as exc:  # before its base class
        raise MaasError.single(
            "download",
            f"cannot download {model.repo_id}: access denied ({exc})",
            hints=("accept the model's licence on the hub and give the agent a token",),
        ) from exc
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as exc:
        # The hub answered that it does not exist (404): trying again will not change that.
        raise MaasError.single(
            "download", f"cannot download {model.repo_id}: {exc}", retryable=False
        ) from exc
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise MaasError.single(
            "download", f"cannot download {model.repo_id}: {exc}", retryable=True
        ) from exc


class Preparer:
    def __init__(self, engine: Engine, done: Callable[[], None]) -> None:
        self.engine = engine
        self.done = done  # wakes the reconcile loop when a job ends
        self.jobs: dict[tuple[str, str], Job] = {}
        self.lock = threading.Lock()

    def ready(self, planned: PlanDeployment) -> Job:
        """The job for this deployment version; started on first ask, 'done' when ready."""
        key = (planned.name, planned.spec_hash)
        with self.lock:
            job = self.jobs.get(key)
        if job is None and not needs_download(planned) and self.engine.has_image(planned.image):
            job = Job(phase="done")  # nothing to wait for (checked outside the lock: in parallel)
        with self.lock:
            job = self.jobs.setdefault(key, job) if job is not None else self.jobs.get(key)
            if job is not None and job.phase == "failed":
                # Reported once, so the replica backs off; the next ask (after it) tries again.
                del self.jobs[key]
                return job
            if job is None:
                job = Job()
                job.thread = threading.Thread(
                    target=self._run,
                    args=(planned, job),
                    daemon=True,
                    name=f"prepare-{planned.name}",
                )
                self.jobs[key] = job
                job.thread.start()
            return job

    def forget(self, name: str) -> None:
        with self.lock:
            for key in [k for k in self.jobs if k[0] == name]:
                del self.jobs[key]

    def _run(self, planned: PlanDeployment, job: Job) -> None:
        def progress(text: str) -> None:
            job.progress = text[:200]

        try:
            if not self.engine.has_image(planned.image):
                job.phase, job.bar = "pulling", Progress("pull")
                fold = PullProgress(job.bar)

                def pulled(event: dict[str, Any]) -> None:
                    fold.event(event)
                    progress(" ".join(str(event.get(k, "")) for k in ("status", "progress")))

                self.engine.pull(planned.image, pulled)
            if needs_download(planned):
                job.phase, job.bar = "downloading", Progress("download")
                self.done()  # the loop shows the new phase now, not at its next pass
                download_model(planned, progress, job.bar)
            job.phase = "done"
        except MaasError as exc:
            job.error = exc.diagnostics[0].message
            job.retryable = exc.retryable
            job.phase = "failed"
        self.done()
