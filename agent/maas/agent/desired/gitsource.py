"""Pull mode: desired state from a git repository instead of `maasctl apply`.

`GitSource.poll()` fetches the branch with the git CLI into the agent's state directory, and when
the branch moved, verifies the commit's signature (optional), compiles the whole repository
(`compile_repo`: the fleet's view, which assigns replicas to nodes) and returns this node's share
as desired state: the sources of the deployments assigned to it, their replica counts, the
commit and the rules the repository's policy states. The agent stores and compiles that exactly
as it does a push (`Reconciler.submit`: live probe, the node's own policy, cache and ports, which
the repository's policy can only narrow). A revision that fails validation, verification or the
node's compile is refused: the last good state stays in force and the error is kept for
`maasctl status`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import structlog

from maas.agent.desired.store import Desired
from maas.compiler import (
    Diagnostic,
    FleetPlan,
    MaasError,
    compile_repo,
    load_settings,
    load_sources,
    replicas_per_node,
)
from maas.host.gitrepo import git, read_revision
from maas.host.models.metadata import fetch_repo_models

log = structlog.get_logger("maas.agent")


@dataclass
class SourceState:
    """What pull mode reports: the applied commit, and the last refused one with its reason."""

    applied_commit: str | None = None
    refused_commit: str | None = None
    error: list[Diagnostic] = field(default_factory=list)
    fetch_error: list[Diagnostic] = field(default_factory=list)  # the repository is unreachable
    fetched_at: float | None = None  # the last fetch that worked
    reported: str | None = None  # the refused commit already logged


@dataclass
class GitSource:
    url: str
    node: str
    workdir: Path
    branch: str = "main"
    verify_signatures: bool = False
    state: SourceState = field(default_factory=SourceState)
    _fleet: FleetPlan | None = None

    def poll(self) -> tuple[Desired, FleetPlan] | None:
        """This node's desired state (and the fleet it came from) when the branch moved to a
        commit the repository accepts; None when there is nothing to do. The caller submits it,
        then calls `applied` or `refused`.

        Raises MaasError (retryable) only when the repository cannot be fetched at all; that
        error is also kept in `state.fetch_error` until a fetch works again.
        """
        commit = self._fetch()
        if commit in (self.state.applied_commit, self.state.refused_commit):
            return None
        try:
            return self._share(commit)
        except MaasError as exc:
            self.refused(commit, exc)
        except Exception as exc:  # a commit must never end pull mode
            # A bug met by this commit: refused like a bad one (not retried until the branch
            # moves), and reported; later commits are still tried.
            log.error("commit_crashed", commit=commit, exc_info=exc)
            problem = Diagnostic(
                "internal",
                f"internal error while reading this commit: {type(exc).__name__}: {exc}",
                hints=("the agent's journal has the traceback; please report it",),
            )
            self.refused(commit, MaasError([problem]))
        return None

    def _share(self, commit: str) -> tuple[Desired, FleetPlan]:
        if self.verify_signatures:
            git(self.workdir, "verify-commit", commit)
        sources = read_revision(self.workdir, commit)
        root = f"{commit[:12]}:"
        fleet = compile_repo(
            sources,
            previous=self._fleet,
            root=root,
            models=fetch_repo_models(sources, offline=False),
        )
        settings = load_settings(sources)
        assigned = replicas_per_node(fleet.assignment).get(self.node, {})
        members = {n: fleet.plans[self.node].deployment(n) for n, at in fleet.groups.items()}
        groups = {
            n: d for n, d in members.items() if d is not None and self.node in fleet.groups[n]
        }
        assigned = {k: v for k, v in assigned.items() if k not in fleet.groups} | {
            n: 1 for n in groups
        }
        deployments = load_sources(
            {root + k: v for k, v in sources.items() if k.startswith("deployments/")},
            kinds=("Deployment",),
        ).deployments
        files = {d.doc.file for d in deployments if d.model.metadata.name in assigned}
        stated = settings.policy.model_fields_set if "policy" in settings.model_fields_set else None
        desired = Desired(
            sources={f: sources[f.removeprefix(root)] for f in sorted(files)},
            assigned=dict(sorted(assigned.items())),
            policy=None if stated is None else settings.policy.model_dump(include=stated),
            source_commit=commit,
            groups=groups,
        )
        return desired, fleet

    def applied(self, commit: str, fleet: FleetPlan) -> None:
        self._fleet = fleet
        self.state = SourceState(
            applied_commit=commit, fetched_at=self.state.fetched_at, reported=self.state.reported
        )

    def refused(self, commit: str, exc: MaasError) -> None:
        self.state.refused_commit = commit
        self.state.error = list(exc.diagnostics)

    def _fetch(self) -> str:
        if not (self.workdir / "HEAD").exists():
            self.workdir.mkdir(parents=True, exist_ok=True)
            git(self.workdir, "init", "--bare", "--quiet")
        try:
            git(
                self.workdir,
                "fetch",
                "--quiet",
                "--force",
                "--no-tags",
                self.url,
                f"+refs/heads/{self.branch}:refs/heads/{self.branch}",
            )
        except MaasError as exc:
            self.state.fetch_error = [
                replace(
                    d,
                    code="git-unreachable",
                    message=f"cannot fetch {self.url} ({self.branch}): {d.message}",
                    position=None,
                    hints=("the last good commit stays in force; retried every poll",),
                )
                for d in exc.diagnostics
            ]
            raise MaasError(self.state.fetch_error, retryable=True) from exc
        self.state.fetch_error = []
        self.state.fetched_at = time.time()
        return git(self.workdir, "rev-parse", f"refs/heads/{self.branch}").decode().strip()
