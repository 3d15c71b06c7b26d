"""The runner's durable state port: ``RunStateStore`` and the records it returns.

The runner, ``plangate run/execute`` and the queue commands consume this Protocol; the
implementations are ``app.execute.state.StateStore`` (SQLite under ``PLANGATE_DATA_DIR``, the
embedded default) and ``app.execute.state_pg.PostgresStateStore`` (``PLANGATE_DATABASE_URL``:
one database shared by several hosts). Both pass the same behavioural tests. This module does no
I/O and imports no driver.

Contract every implementation keeps:

- every write has committed when the method returns; a multi-row change (``complete_step``,
  ``adopt``, ``reset_run``, ...) commits as one transaction or not at all;
- an attempt is written ``running`` *before* its action runs (``begin_attempt``) and finished
  *after* (``complete_step``/``fail_attempt``), so after a crash an attempt left ``running`` is
  *interrupted*: its effect is unknown;
- runs are keyed by plan digest; a ``cancelled`` run is never overwritten by ``finish_run``;
- ``lock_manager`` returns leased resource locks kept in the same store, so every host (or
  process) sharing the store excludes the others.

Errors: the backend's own (a broken disk, a lost database connection) propagate; the runner
stops and the next invocation resumes from what was committed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from app.execute.locks import LockManager

__all__ = [
    "AttemptRecord",
    "CachedResult",
    "CompletedStep",
    "Phase",
    "RunRecord",
    "RunStateStore",
]

Phase = Literal["step", "compensate"]


@dataclass(frozen=True, slots=True)
class RunRecord:
    digest: str
    run_id: str
    plan_id: str
    status: str
    reason: str
    invocations: int


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    phase: str
    step_id: str
    attempt: int
    status: str
    error_kind: str | None
    error: str | None


@dataclass(frozen=True, slots=True)
class CompletedStep:
    step_id: str
    status: str
    seq: int
    outputs: dict[str, Any]
    usage: dict[str, Any]
    error: str | None


@dataclass(frozen=True, slots=True)
class CachedResult:
    key: str
    action: str
    created_at: float
    ttl: float
    outputs: dict[str, Any]


class RunStateStore(Protocol):
    """Durable run state (see the module docstring for the contract)."""

    @property
    def location(self) -> str:
        """Where the state lives, for people (a path, or a URL without password)."""
        ...

    def close(self) -> None: ...

    def lock_manager(
        self,
        *,
        now: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
        lease: float = 60.0,
        skew: float = 0.0,
    ) -> LockManager:
        """Leased resource locks stored beside the runs (shared by whoever shares the store)."""
        ...

    # runs
    def get_run(self, digest: str) -> RunRecord | None: ...

    def start_run(
        self, digest: str, run_id: str, plan_id: str, plan_path: str, now: float
    ) -> tuple[RunRecord, bool]:
        """Create the run, or resume the existing one for ``digest``. Returns (run, resumed)."""
        ...

    def finish_run(self, digest: str, status: str, reason: str, now: float) -> None: ...

    def cancel_run(self, digest: str, reason: str, now: float) -> RunRecord | None: ...

    def retry_compensations(self, digest: str, reason: str, now: float) -> int: ...

    def reset_run(self, digest: str) -> None: ...

    def record_shape(self, digest: str, plan_id: str, shape: str) -> None: ...

    def paused_predecessor(self, plan_id: str, shape: str, digest: str) -> RunRecord | None: ...

    def adopt(self, old: str, new: str, now: float) -> int: ...

    def begin_saga(self, digest: str, final_status: str, reason: str, now: float) -> None: ...

    def saga(self, digest: str) -> tuple[str, str] | None: ...

    # attempts and steps
    def attempts_so_far(self, digest: str, phase: Phase, step_id: str) -> int: ...

    def begin_attempt(
        self, digest: str, phase: Phase, step_id: str, attempt: int, key: str, now: float
    ) -> None: ...

    def fail_attempt(
        self,
        digest: str,
        phase: Phase,
        step_id: str,
        attempt: int,
        kind: str,
        error: str,
        now: float,
    ) -> None: ...

    def complete_step(
        self,
        digest: str,
        phase: Phase,
        step_id: str,
        attempt: int,
        outputs: dict[str, Any],
        usage: dict[str, Any],
        now: float,
    ) -> int: ...

    def fail_step(
        self, digest: str, phase: Phase, step_id: str, status: str, error: str, now: float
    ) -> None: ...

    def mark_step_done_by_hand(self, digest: str, step_id: str, now: float) -> None: ...

    def mark_interrupted(self, digest: str, phase: Phase, step_id: str, now: float) -> None: ...

    def running_attempts(self, digest: str) -> list[AttemptRecord]: ...

    def completed(self, digest: str, phase: Phase) -> dict[str, CompletedStep]: ...

    def attempts(self, digest: str) -> list[AttemptRecord]: ...

    # step result cache
    def cache_get(self, key: str, now: float) -> CachedResult | None: ...

    def cache_put(
        self, key: str, action: str, outputs: dict[str, Any], ttl: float, now: float
    ) -> None: ...
