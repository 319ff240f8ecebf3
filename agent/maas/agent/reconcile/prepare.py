"""Getting a deployment ready to start: its image present and, when the plan says the agent
downloads it, its model's pinned revision in the cache. Runs in background threads so that a
long pull or download never blocks the reconcile loop; the loop asks `ready()` and shows
`progress` in status.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maas.compiler import MaasError, PlanDeployment
from maas.host.engine import Engine
from maas.host.progress import Progress, PullProgress


class PrepareFailed(MaasError):
    """The image could not be pulled or the model not downloaded for a replica about to start."""


@dataclass
class Job:
    phase: str = "pulling"  # pulling, downloading, done, failed
    progress: str = ""
    error: str | None = None
    retryable: bool = True
    bar: Progress | None = None  # updated by the worker thread while status reads it
    thread: threading.Thread | None = field(default=None, repr=False)


# The node secrets (maas.host.secrets) that hold each hub's token; absent: anonymous.
TOKEN_SECRETS = {"huggingface": "huggingface-token", "modelscope": "modelscope-token"}
TokenSource = Callable[[str], str | None]  # hub source -> token


def node_tokens(secrets_dir: Path) -> TokenSource:
    """Each hub's token from the node's secrets folder, read at each download (a token added
    later is taken without a restart); no secret: anonymous."""
    from maas.host.secrets import read_secret

    def token(source: str) -> str | None:
        name = TOKEN_SECRETS.get(source)
        if name is None or not (secrets_dir / name).exists():
            return None
        return read_secret(secrets_dir, name) or None

    return token


def hubs_offline() -> bool:
    """Offline as each hub's client reads it: HF_HUB_OFFLINE (huggingface_hub constants) or
    MODELSCOPE_OFFLINE."""
    return any(
        os.environ.get(name, "") not in ("", "0", "false")
        for name in ("HF_HUB_OFFLINE", "MODELSCOPE_OFFLINE")
    )


def needs_download(planned: PlanDeployment) -> bool:
    model = planned.model
    if not model.download or model.fetched_by != "agent" or model.folder is None:
        return False
    from maas.host.models.download import holds

    return not holds(Path(model.folder), model.file)


def download_model(
    planned: PlanDeployment,
    progress: Callable[[str], None],
    bar: Progress | None = None,
    *,
    token: TokenSource = lambda source: None,
    offline: bool = False,
) -> None:
    """Fetch a hub model's pinned revision into the folder the plan mounts (see
    maas.host.models.download): resumable, verified, space-checked."""
    model = planned.model
    if not needs_download(planned):
        return
    assert model.repo_id is not None and model.folder is not None
    name = model.commit or model.revision or "the default revision"
    if offline:
        raise MaasError.single(
            "download",
            f"offline, and {model.source} '{model.repo_id}' at {name} is not in the cache",
            retryable=False,
            hints=(f"put the revision in {model.folder} or let the agent go online",),
        )
    from maas.host.models.download import download_revision
    from maas.host.models.hub import hub_for

    hub = hub_for(model.source, token(model.source))
    progress(f"downloading {model.source} {model.repo_id}@{name}")
    listing = hub.listing(model.repo_id, model.commit or model.revision)
    download_revision(
        hub,
        model.repo_id,
        listing.commit,
        listing.select(model.file),
        Path(model.folder),
        whole=model.file is None,
        progress=bar,
    )


class Preparer:
    def __init__(
        self,
        engine: Engine,
        done: Callable[[], None],
        *,
        token: TokenSource = lambda source: None,
        offline: bool = False,
    ) -> None:
        self.engine = engine
        self.done = done  # wakes the reconcile loop when a job ends
        self.token, self.offline = token, offline
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

    def start(self, planned: PlanDeployment) -> Job:
        """The job for this deployment version, started when there is none; unlike `ready`, a
        failed job is left for `ready` to report (with the replica's back-off)."""
        key = (planned.name, planned.spec_hash)
        with self.lock:
            job = self.jobs.get(key)
        if job is None:
            if not needs_download(planned) and self.engine.has_image(planned.image):
                return Job(phase="done")
            job = self.ready(planned)
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
                download_model(planned, progress, job.bar, token=self.token, offline=self.offline)
            job.phase = "done"
        except MaasError as exc:
            job.error = exc.diagnostics[0].message
            job.retryable = exc.retryable
            job.phase = "failed"
        self.done()
