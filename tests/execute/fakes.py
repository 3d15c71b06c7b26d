"""Fakes for executor tests: scripted actions, a fake clock, and a runner factory.

Plans in these tests use built-in action names (``shell``, ``http``, ``noop``, ``probe``) so the
real loader validates them; the runner gets these fakes as the implementations instead.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from app.actions.registry import ActionRegistry
from app.errors import StepFailed
from app.execute.actions.base import Action, ActionContext, ActionResult, Usage
from app.execute.ports import (
    AllowAllPolicy,
    ApprovalGate,
    ListEventSink,
    RecordingIncidents,
    RuntimePolicy,
    StaticApprovalGate,
)
from app.execute.runner import Runner, RunOptions
from app.execute.state import StateStore
from app.execute.store import RunStateStore
from app.plan.loader import LoadedPlan, load_plan_bytes


@dataclass
class FakeClock:
    t: float = 1_000_000.0

    def __call__(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += seconds
        await asyncio.sleep(0)


@dataclass
class Call:
    step: str
    attempt: int
    key: str
    inputs: dict[str, Any]


@dataclass
class RecordingAction:
    """Records every call. ``script[step]`` lists per-attempt errors (None: succeed);
    ``outputs[step]`` is returned on success; ``hang`` steps wait until cancelled."""

    name: str
    script: dict[str, list[StepFailed | None]] = field(default_factory=dict)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    usage: dict[str, Usage] = field(default_factory=dict)
    hang: set[str] = field(default_factory=set)
    key: str | None = None
    calls: list[Call] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)

    async def run(self, inputs: BaseModel, ctx: ActionContext) -> ActionResult:
        self.calls.append(
            Call(ctx.step_id, ctx.attempt, ctx.idempotency_key, inputs.model_dump(mode="json"))
        )
        await asyncio.sleep(0)
        if ctx.step_id in self.hang:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                self.cancelled.append(ctx.step_id)
                raise
        plan = self.script.get(ctx.step_id, [])
        n = sum(1 for c in self.calls if c.step == ctx.step_id)
        if n <= len(plan) and plan[n - 1] is not None:
            raise plan[n - 1]  # type: ignore[misc]
        return ActionResult(
            outputs=self.outputs.get(ctx.step_id, {"done": ctx.step_id}),
            usage=self.usage.get(ctx.step_id, Usage()),
        )

    def breaker_key(self, inputs: BaseModel) -> str:
        return self.key or self.name

    def steps(self) -> list[str]:
        return [c.step for c in self.calls]


@dataclass
class FailingAction:
    """Always fails with ``kind``/``retryable``; ``outputs`` ride on the error (probe evidence)."""

    name: str
    kind: str = "boom"
    retryable: bool = True
    outputs: Mapping[str, Any] | None = None
    calls: list[str] = field(default_factory=list)

    async def run(self, inputs: BaseModel, ctx: ActionContext) -> ActionResult:
        self.calls.append(ctx.step_id)
        err = StepFailed(
            f"step '{ctx.step_id}': {self.kind}",
            step=ctx.step_id,
            kind=self.kind,
            retryable=self.retryable,
        )
        err.outputs = dict(self.outputs or {})  # type: ignore[attr-defined]
        raise err

    def breaker_key(self, inputs: BaseModel) -> str:
        return self.name


def fail(kind: str = "boom", *, retryable: bool = True, step: str = "x") -> StepFailed:
    return StepFailed(f"{kind} happened", step=step, kind=kind, retryable=retryable)


HEADER = """apiVersion: plangate.dev/v1
kind: Plan
id: {id}
title: test plan
team: platform
environment: local
"""


def plan_from(
    body: str, *, plan_id: str = "test-plan", path: str = "plans/test.yaml"
) -> LoadedPlan:
    return load_plan_bytes(path, (HEADER.format(id=plan_id) + body).encode())


def shell_step(
    sid: str,
    needs: Sequence[str] = (),
    *,
    compensate: bool = True,
    extra: str = "",
    retry: str = "{max_attempts: 3, initial_interval: 1s}",
) -> str:
    needs_line = f"    needs: [{', '.join(needs)}]\n" if needs else ""
    comp = (
        f"    compensate:\n      action: shell\n      with: {{run: [undo, {sid}]}}\n"
        f"      retry: {{max_attempts: 2, initial_interval: 1s}}\n"
        if compensate
        else "    compensate: {none: cannot be undone in tests}\n"
    )
    return (
        f"  - id: {sid}\n    action: shell\n    with: {{run: [do, {sid}]}}\n"
        f"    retry: {retry}\n{needs_line}{comp}{extra}"
    )


@dataclass
class Harness:
    runner: Runner
    events: ListEventSink
    incidents: RecordingIncidents
    state: RunStateStore
    clock: FakeClock
    gate: Any


def make_runner(
    data_dir: Path,
    implementations: Mapping[str, Action],
    *,
    gate: ApprovalGate | None = None,
    policy: RuntimePolicy | None = None,
    options: RunOptions | None = None,
    clock: FakeClock | None = None,
    run_id: str = "run-1",
    open_state: Callable[[Path], RunStateStore] = StateStore.open,
) -> Harness:
    """``open_state``: the state backend (the ``open_state`` fixture runs a test on both)."""
    clock = clock or FakeClock()
    state = open_state(data_dir)
    events = ListEventSink()
    incidents = RecordingIncidents()
    gate = gate or StaticApprovalGate()
    locks = state.lock_manager(now=clock, sleep=clock.sleep, lease=60.0)

    async def no_heartbeat(_: float) -> None:
        await asyncio.Event().wait()  # never renews in unit tests (the fake clock is still)

    runner = Runner(
        implementations=implementations,
        registry=ActionRegistry.builtins(),
        state=state,
        locks=locks,
        gate=gate,
        policy=policy or AllowAllPolicy(),
        events=events,
        incidents=incidents,
        now=clock,
        sleep=clock.sleep,
        rng=random.Random(7),
        new_run_id=lambda: run_id,
        options=options,
        heartbeat_sleep=no_heartbeat,
    )
    return Harness(runner, events, incidents, state, clock, gate)


def impls(*actions: Any) -> dict[str, Any]:
    """Name -> fake; every built-in not given is a RecordingAction of that name."""
    names = [s.name for s in ActionRegistry.builtins()]
    table: dict[str, Any] = {n: RecordingAction(n) for n in names}
    for a in actions:
        table[a.name] = a
    return table
