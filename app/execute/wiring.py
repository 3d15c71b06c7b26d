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

__all__ = ["production_runner", "run_until_signalled"]


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
    PostgreSQL database) unless ``locks`` is given."""
    return Runner(
        implementations=implementations,
        registry=default_registry(),
        state=state,
        locks=locks or state.lock_manager(now=time.time, sleep=asyncio.sleep, lease=60.0),
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
