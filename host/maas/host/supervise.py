"""Long-running tasks that never die silently: each pass is guarded, each task is restarted.

A task (the reconcile loop, pull mode, probes, the gateway's key reload, ...) runs its passes inside
`Supervisor.guard(name)`: an exception in one pass is logged with its traceback, counted, kept for
status and metrics, and the task goes on with its next pass. A task that ends anyway (returns, or
raises outside a pass) is started again after a short delay by `Supervisor.spawn`. `healthy()` is
what feeds the systemd watchdog: every task is running, and none has been inside one pass for
longer than its stall limit (a pass stuck in a call that never returns).

Used by maas-agent and maas-gateway alike; nothing here knows what the tasks do.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

RESTART_DELAY_S = 1.0
RESTART_DELAY_MAX_S = 30.0


@dataclass
class TaskState:
    name: str
    stall_s: float | None = None  # a pass longer than this counts as stuck
    alive: bool = False
    restarts: int = 0
    failures: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    busy_since: float | None = None
    supervised: bool = False  # run by spawn() or thread(); else only its passes are guarded

    def report(self) -> dict[str, Any]:
        return {
            "alive": self.alive,
            "restarts": self.restarts,
            "failures": self.failures,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
        }


class Supervisor:
    def __init__(self, log: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self.log = log  # a structlog logger
        self.clock = clock
        self.tasks: dict[str, TaskState] = {}
        self._lock = threading.Lock()  # guards are entered from threads too (events, passes)

    def register(self, name: str, stall_s: float | None = None) -> TaskState:
        with self._lock:
            state = self.tasks.get(name)
            if state is None:
                state = self.tasks[name] = TaskState(name, stall_s)
            return state

    @contextlib.contextmanager
    def guard(self, name: str) -> Iterator[None]:
        """One pass of task `name`: any exception is recorded and swallowed (never a
        BaseException such as cancellation or KeyboardInterrupt)."""
        state = self.register(name)
        state.busy_since = self.clock()
        try:
            yield
        except Exception as exc:  # one bad pass must not end the task
            self.failed(name, exc)
        finally:
            state.busy_since = None

    def failed(self, name: str, exc: BaseException) -> None:
        state = self.register(name)
        with self._lock:
            state.failures += 1
            state.last_error = _describe(exc)
            state.last_error_at = time.time()
        self.log.error("task_failed", task=name, error=state.last_error, exc_info=exc)

    def spawn(
        self,
        name: str,
        body: Callable[[], Awaitable[None]],
        *,
        stall_s: float | None = None,
        stopping: asyncio.Event,
    ) -> asyncio.Task[None]:
        """Run `body()` as task `name`, started again (with a growing delay) whenever it ends
        before `stopping` is set."""
        state = self.register(name, stall_s)
        state.stall_s, state.supervised = stall_s, True

        async def keep() -> None:
            delay = RESTART_DELAY_S
            while not stopping.is_set():
                state.alive = True
                started = self.clock()
                try:
                    await body()
                    if stopping.is_set():
                        return
                    self.log.error("task_ended", task=name)
                    state.last_error, state.last_error_at = "the task ended", time.time()
                except Exception as exc:
                    self.failed(name, exc)
                finally:
                    state.alive = False
                    state.busy_since = None
                if self.clock() - started > 10 * RESTART_DELAY_MAX_S:
                    delay = RESTART_DELAY_S  # it ran a long while: not a crash loop
                state.restarts += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), timeout=delay)
                delay = min(delay * 2, RESTART_DELAY_MAX_S)

        return asyncio.create_task(keep(), name=name)

    def thread(
        self, name: str, body: Callable[[], None], stopping: threading.Event | Any
    ) -> threading.Thread:
        """Run `body()` in a daemon thread (for blocking streams), started again when it ends
        before `stopping` (anything with is_set()) is set."""
        state = self.register(name)
        state.supervised = True

        def keep() -> None:
            delay = RESTART_DELAY_S
            while not stopping.is_set():
                state.alive = True
                try:
                    body()
                    if stopping.is_set():
                        return
                except Exception as exc:
                    self.failed(name, exc)
                finally:
                    state.alive = False
                state.restarts += 1
                time.sleep(delay)
                delay = min(delay * 2, RESTART_DELAY_MAX_S)

        runner = threading.Thread(target=keep, daemon=True, name=name)
        runner.start()
        return runner

    def healthy(self) -> bool:
        """Every task runs, and none is stuck inside one pass (what feeds the watchdog)."""
        now = self.clock()
        return all(
            (state.alive or not state.supervised)
            and not (
                state.stall_s is not None
                and state.busy_since is not None
                and now - state.busy_since > state.stall_s
            )
            for state in list(self.tasks.values())
        )

    def report(self) -> dict[str, dict[str, Any]]:
        return {name: state.report() for name, state in sorted(self.tasks.items())}


def _describe(exc: BaseException) -> str:
    """The exception's type and where it was raised, for status: not its text, which may hold
    data that must not be stored (a byte of a secret); the journal has the whole traceback."""
    where = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    at = f" at {where[0].filename.rsplit('/', 1)[-1]}:{where[0].lineno}" if where else ""
    return f"{type(exc).__name__}{at}"
