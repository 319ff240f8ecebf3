"""What `apply --wait`, `delete --wait` and `status` make of the agent's replica states: which
failures will not resolve by waiting, and how a failure reads (attempts, next retry)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from maas.compiler import DeploymentStatus, ReplicaStatus


def retry_note(replica: ReplicaStatus, now: float | None = None) -> str:
    """`attempt 3, next retry in 20 s`, or why none comes."""
    if replica.permanent:
        return "permanent: not retried until applied again"
    parts = []
    if replica.attempts:
        parts.append(f"attempt {replica.attempts}")
    if replica.crash_loop:
        parts.append("crash loop")
    at = replica.next_retry_at
    if at is not None:
        wait = max(0.0, at - (time.time() if now is None else now))
        parts.append(f"next retry in {wait:.0f} s" if wait >= 1 else "retrying now")
    return ", ".join(parts)


def failure_line(deployment: DeploymentStatus, now: float | None = None) -> str:
    """The deployment's last error with its replica's attempts and next retry."""
    failing = [r for r in deployment.replica_states if r.last_error]
    if not failing:
        return deployment.last_error or ""
    replica = failing[0]
    note = retry_note(replica, now)
    return f"{replica.last_error}" + (f" ({note})" if note else "")


def attempt_line(deployment: DeploymentStatus) -> str:
    """The first failing replica's error and attempt count, without the countdown (a line that
    changes only when something happens)."""
    for replica in deployment.replica_states:
        if replica.last_error:
            return f"attempt {replica.attempts}: {replica.last_error}"
    return deployment.last_error or ""


def hopeless(deployment: DeploymentStatus, spec_hash: str, now: float | None = None) -> str | None:
    """Why waiting for this deployment (at `spec_hash`) is pointless, or None.

    A replica of this spec that failed permanently (a bad image reference, an image or model the
    registry or hub does not have), or one in a crash loop past its first back-off."""
    for replica in deployment.replica_states:
        if replica.spec_hash != spec_hash or replica.phase != "failed":
            continue
        if replica.permanent or replica.crash_loop:
            return (
                f"{deployment.name} replica {replica.replica}: {replica.last_error} "
                f"({retry_note(replica, now)})"
            )
    return None
