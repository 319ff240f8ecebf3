"""Health of replicas: readiness within a startup budget, liveness, and CrashLoopBackOff.

The back-off is a pure state machine over timestamps, the kubelet's rule: the first failure is
restarted at once, the next after 10 s, doubling to 300 s; 10 minutes healthy resets it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

BACKOFF_START_S = 10.0
BACKOFF_MAX_S = 300.0
BACKOFF_RESET_S = 600.0
LIVENESS_FAILURES = 3


@dataclass
class ReplicaHealth:
    """What the agent knows about one replica beyond what Docker reports."""

    container_id: str | None = None
    started_at: float | None = None  # when the agent (re)started this container
    ready: bool = False
    ready_since: float | None = None
    failures_in_row: int = 0
    restarts: int = 0
    backoff_s: float = 0.0  # the hold applied to the last failure
    next_delay_s: float = 0.0
    hold_until: float = 0.0
    last_error: str | None = None
    phase: str = "pending"  # pending, pulling, downloading, starting, running, failed
    progress: str = ""
    refused: bool = False  # by the policy before creation; re-checked quietly each pass
    history: list[str] = field(default_factory=list)

    def started(self, container_id: str, now: float) -> None:
        self.container_id = container_id
        self.started_at = now
        self.ready = False
        self.ready_since = None
        self.failures_in_row = 0
        self.phase = "starting"
        self.refused = False

    def probe_result(self, ok: bool, now: float, *, startup_timeout_s: float) -> bool:
        """Record a readiness probe; True when the replica must be restarted."""
        if ok:
            if not self.ready:
                self.ready, self.ready_since = True, now
            self.failures_in_row = 0
            self.phase, self.last_error = "running", None
            if self.ready_since is not None and now - self.ready_since >= BACKOFF_RESET_S:
                self.next_delay_s = 0.0
            return False
        if self.ready:
            self.failures_in_row += 1
            if self.failures_in_row >= LIVENESS_FAILURES:
                self.fail(f"liveness probe failed {self.failures_in_row} times in a row", now)
                return True
            return False
        if self.started_at is not None and now - self.started_at > startup_timeout_s:
            self.fail(f"not ready within the startup budget of {startup_timeout_s:.0f} s", now)
            return True
        return False

    def fail(self, error: str, now: float) -> None:
        """A crash or failed probe: the next start waits for the back-off."""
        self.ready = False
        self.ready_since = None
        self.phase = "failed"
        self.last_error = error
        self.backoff_s = self.next_delay_s
        self.hold_until = now + self.backoff_s
        self.next_delay_s = (
            BACKOFF_START_S if self.next_delay_s == 0 else min(self.next_delay_s * 2, BACKOFF_MAX_S)
        )

    def refuse(self, error: str) -> None:
        """Refused before creation (policy, secrets): failed, without back-off, until fixed."""
        self.ready = False
        self.ready_since = None
        self.phase = "failed"
        self.last_error = error
        self.progress = ""
        self.refused = True

    def held(self, now: float) -> bool:
        return now < self.hold_until
