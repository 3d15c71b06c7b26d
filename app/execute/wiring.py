"""The real-world wiring of a ``Runner``: shared by ``plangate run`` and ``plangate execute``.

Only this edge module and the CLI pick real clocks, ``asyncio.sleep``, a system random source and
fresh run ids; the runner itself gets them as arguments (so tests take no time). A SIGTERM (a
cancelled CI job, systemd stop) cancels a run like Ctrl-C: running steps are cancelled (their
attempts stay "running", so the next invocation triages them), locks are released and events
flushed on the way out, and the caller gets a ``PlangateError`` saying how to resume.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

from app.actions.registry import default_registry
from app.errors import PlangateError
from app.execute.actions.base import Action
from app.execute.locks import LockManager
from app.execute.ports import (
    ApprovalGate,
    EventSink,
    IncidentReporter,
    ResourceLocks,
    RuntimePolicy,
)
from app.execute.result import RunResult
from app.execute.runner import Runner, RunOptions
from app.execute.store import RunStateStore
from app.plan.loader import LoadedPlan
from app.settings import Settings

__all__ = ["LOCAL_LOCK_LEASE_SECONDS", "local_locks", "production_runner", "run_until_signalled"]

#: ``plangate run``'s lease when ``PLANGATE_LOCK_LEASE_SECONDS`` is unset. Shorter than the
#: executor's 300 s: renewing a lock in the state store is one local SQL update (the executor's
#: git-ref locks cost GitHub API calls per renewal), and a ``plangate run`` killed on a laptop
#: should free its resources within a minute, not five.
LOCAL_LOCK_LEASE_SECONDS = 60.0


def local_locks(state: RunStateStore, settings: Settings, *, shared: bool) -> LockManager:
    """The resource locks of ``plangate run`` in its state store, with the lease and clock-skew
    allowance of ``PLANGATE_LOCK_LEASE_SECONDS`` / ``PLANGATE_LOCK_SKEW_SECONDS`` (validated by
    ``Settings.from_env``: a bad value is an ``InputError`` naming the variable).

    Unset, the lease is ``LOCAL_LOCK_LEASE_SECONDS`` and the skew 0 for a SQLite file (one host:
    the expiry is written and read with the same clock) or the settings' default (30 s) for a
    store ``shared`` by hosts (PostgreSQL: each holder writes its expiry with its own clock).
    """
    explicit = settings.model_fields_set
    lease = (
        settings.lock_lease_seconds
        if "lock_lease_seconds" in explicit
        else LOCAL_LOCK_LEASE_SECONDS
    )
    skew = settings.lock_skew_seconds if "lock_skew_seconds" in explicit or shared else 0.0
    return state.lock_manager(now=time.time, sleep=asyncio.sleep, lease=lease, skew=skew)


def production_runner(
    *,
    implementations: Mapping[str, Action],
    state: RunStateStore,
    gate: ApprovalGate,
    policy: RuntimePolicy,
    events: EventSink,
    incidents: IncidentReporter,
    secrets: Mapping[str, str],
    options: RunOptions | None = None,
    locks: ResourceLocks | None = None,
    work_dir: Path | None = None,
    cancel_requested: Callable[[str], str | None] | None = None,
) -> Runner:
    """A ``Runner`` on the wall clock, with leased locks in the same state store (SQLite file or
    PostgreSQL database; ``local_locks``) unless ``locks`` is given."""
    if locks is None:
        settings = Settings.from_env()
        locks = local_locks(state, settings, shared=settings.database_url is not None)
    return Runner(
        implementations=implementations,
        registry=default_registry(),
        state=state,
        locks=locks,
        gate=gate,
        policy=policy,
        events=events,
        incidents=incidents,
        now=time.time,
        sleep=asyncio.sleep,
        rng=random.SystemRandom(),
        new_run_id=lambda: uuid.uuid4().hex[:16],
        options=options,
        secrets=secrets,
        work_dir=work_dir or Path.cwd(),
        cancel_requested=cancel_requested,
    )


def run_until_signalled(runner: Runner, loaded: LoadedPlan, *, resume_hint: str) -> RunResult:
    """Run to the end, or until SIGTERM; then raise ``PlangateError`` with ``resume_hint``."""

    async def main() -> RunResult:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await runner.run(loaded)

    try:
        return asyncio.run(main())
    except asyncio.CancelledError as exc:
        raise PlangateError(
            f"{loaded.path}: run stopped by SIGTERM; locks were released", hint=resume_hint
        ) from exc
