"""Health of replicas: readiness within a startup budget, liveness, and CrashLoopBackOff.

The back-off is a pure state machine over timestamps, the kubelet's rule: the first failure is
restarted at once, the next after 10 s, doubling to 300 s; 10 minutes healthy resets it.

Failures are of two kinds. Transient ones (registry unreachable, engine restarting, a crash) are
retried after the back-off. Permanent ones (a bad image reference, an image the registry does not
have, a model that cannot exist) are not retried until the desired state is submitted again.
A replica whose crashes or failed probes outlast the first back-off (a third failure in a row) is
in a crash loop: waiting for it is pointless, though the agent keeps trying with back-off.

Counters: `restarts` counts crashes and failed probes only; `rollouts` counts recreations for a new
spec; `attempts` counts failures since the replica was last ready.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

BACKOFF_START_S = 10.0
BACKOFF_MAX_S = 300.0
BACKOFF_RESET_S = 600.0
LIVENESS_FAILURES = 3
CRASH_LOOP_FAILURES = 3  # the immediate restart, then the first back-off, then this one
CRASHES = ("crash", "probe")


@dataclass
class ReplicaHealth:
    """What the agent knows about one replica beyond what Docker reports."""

    container_id: str | None = None
    started_at: float | None = None  # when the agent (re)started this container
    ready: bool = False
    ready_since: float | None = None
    failures_in_row: int = 0
    restarts: int = 0  # crashes and failed probes
    rollouts: int = 0  # recreated for a new spec
    attempts: int = 0  # failures since last ready
    cause: str = ""  # of the last failure: crash, probe, pull, create, remove
    permanent: bool = False  # the last failure will not resolve by retrying the same spec
    spec_hash: str | None = None  # the spec of the last attempt
    backoff_s: float = 0.0  # the hold applied to the last failure
    next_delay_s: float = 0.0
    hold_until: float = 0.0
    last_error: str | None = None
    phase: str = "pending"  # pending, pulling, downloading, starting, running, failed, asleep
    progress: str = ""
    bar: Any = None  # the preparation's Progress (maas.host.progress), shared with its thread
    refused: bool = False  # by the policy before creation; re-checked quietly each pass
    draining: bool = False  # reported not ready while it still runs, before a roll-out stops it
    # An overlapping roll-out (reconcile/overlap.py): the old container, which serves (reported
    # ready) while `container_id`, the new one, starts beside it.
    serving: str | None = None

    def started(self, container_id: str, now: float, spec_hash: str | None = None) -> None:
        self.container_id = container_id
        self.spec_hash = spec_hash or self.spec_hash
        self.started_at = now
        self.ready = False
        self.ready_since = None
        self.failures_in_row = 0
        self.phase = "starting"
        self.refused = False
        self.draining = False

    def asleep(self) -> None:
        """Stopped by the agent (an on-demand deployment sleeps; its container is kept): not a
        crash, and no failure counted."""
        self.ready = False
        self.ready_since = None
        self.phase = "asleep"
        self.draining = False

    def probe_result(self, ok: bool, now: float, *, startup_timeout_s: float) -> bool:
        """Record a readiness probe; True when the replica must be restarted."""
        if ok:
            if not self.ready:
                self.ready, self.ready_since = True, now
                self.attempts, self.cause = 0, ""
            self.failures_in_row = 0
            self.phase, self.last_error = "running", None
            if self.ready_since is not None and now - self.ready_since >= BACKOFF_RESET_S:
                self.next_delay_s = 0.0
            return False
        if self.ready:
            self.failures_in_row += 1
            if self.failures_in_row >= LIVENESS_FAILURES:
                self.fail(
                    f"liveness probe failed {self.failures_in_row} times in a row", now, "probe"
                )
                return True
            return False
        if self.started_at is not None and now - self.started_at > startup_timeout_s:
            self.fail(
                f"not ready within the startup budget of {startup_timeout_s:.0f} s", now, "probe"
            )
            return True
        return False

    def fail(self, error: str, now: float, cause: str, *, permanent: bool = False) -> None:
        """A failure: the next start waits for the back-off, or, when permanent, for the desired
        state to be submitted again (`retry`)."""
        self.ready = False
        self.ready_since = None
        self.phase = "failed"
        self.last_error = error
        self.cause = cause
        self.attempts += 1
        if cause in CRASHES:
            self.restarts += 1
        self.permanent = permanent
        self.backoff_s = self.next_delay_s
        self.hold_until = math.inf if permanent else now + self.backoff_s
        self.next_delay_s = (
            BACKOFF_START_S if self.next_delay_s == 0 else min(self.next_delay_s * 2, BACKOFF_MAX_S)
        )

    def retry(self) -> None:
        """The desired state was submitted again: a permanent failure gets one more attempt."""
        if self.permanent:
            self.permanent, self.hold_until, self.phase = False, 0.0, "pending"

    def rolled_out(self, spec_hash: str) -> None:
        """A recreation for a new spec: counted apart, and the old spec's back-off is forgotten."""
        self.rollouts += 1
        self.next_delay_s, self.hold_until, self.attempts, self.cause = 0.0, 0.0, 0, ""
        self.permanent = False
        self.spec_hash = spec_hash

    @property
    def crash_loop(self) -> bool:
        return self.cause in CRASHES and self.attempts >= CRASH_LOOP_FAILURES

    def wait(self, reason: str) -> None:
        """Not started for now (no GPU room): pending, with the reason; no failure counted."""
        self.phase, self.last_error, self.ready = "pending", reason, False

    def refuse(self, error: str) -> None:
        """Refused before creation (policy, secrets): failed, without back-off, until fixed."""
        self.ready = False
        self.ready_since = None
        self.phase = "failed"
        self.last_error = error
        self.progress = ""
        self.refused = True
        self.permanent = True  # waiting cannot help: the host or the policy must change

    def held(self, now: float) -> bool:
        return now < self.hold_until

    def next_retry_at(self, now: float) -> float | None:
        """When the next attempt may come (wall time), None when not held or held for good."""
        if self.phase != "failed" or math.isinf(self.hold_until):
            return None
        return max(self.hold_until, now)
