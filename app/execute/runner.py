"""The runner: drives a plan's steps through actions, durably, and cleans up after failure.

Order of a run (each point is a test in tests/execute/):

1. every action the plan uses has an implementation (else nothing starts);
2. the plan's ``resources`` are locked (leased, heartbeat), or the run is refused / waits;
3. interrupted attempts of an earlier invocation are classified: idempotent steps are retried,
   anything else ends the run ``needs_attention`` before anything runs;
4. the approval gate verifies the attestation for this digest if anything left to run
   mutates (compensations included); without it nothing runs at all;
5. steps run as soon as their needs are done, at most ``max_parallel`` at once, ties in plan
   order; before each step the budget is checked, before each mutating step the runtime policy;
   attempts are recorded before and after they run; retries follow the step's policy;
   circuit breakers guard each service boundary;
6. on a definitive failure (or a canary / budget / policy abort) no new step starts, running
   ones finish, and the saga compensates completed mutating steps in reverse order;
7. locks are released and events flushed on every exit path.

The runner emits events (``EventSink``) for the audit trail and the progress display; it never
prints. The world (clock, sleep, rng, run ids) is injected.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from app.actions.registry import ActionRegistry
from app.errors import AttestationError, InputError, StepFailed
from app.execute.actions.base import Action, ActionContext, ActionResult
from app.execute.breaker import BreakerOpen, BreakerRegistry
from app.execute.budget import BudgetTracker, usage_from_dict, usage_to_dict
from app.execute.locks import LockBusy
from app.execute.ports import (
    ApprovalGate,
    EventSink,
    Incident,
    IncidentReporter,
    ResourceLocks,
    RuntimePolicy,
)
from app.execute.refs import resolve
from app.execute.result import (
    CompensationOutcome,
    RunbookEntry,
    RunResult,
    StepOutcome,
    manual_command,
)
from app.execute.retry import run_with_retries
from app.execute.saga import run_saga
from app.execute.scheduler import ReadyQueue, effective_needs
from app.execute.state import Phase, StateStore
from app.plan.digest import canonical_json, sha256_hex
from app.plan.loader import LoadedPlan
from app.plan.model import Compensation, Plan, Step

__all__ = ["RunOptions", "Runner"]

#: run states after which a re-run of the same digest does nothing (a human starts over)
FINAL = {
    "succeeded",
    "compensated",
    "aborted",
    "compensation_failed",
    "superseded",
    "cancelled",  # by ``plangate cancel`` (queue ownership); --restart starts over
}
DEFAULT_MAX_PARALLEL = 4


@dataclass(frozen=True, slots=True)
class RunOptions:
    max_parallel: int | None = None
    lock_wait: bool = False
    lock_wait_timeout: float = 600.0
    lock_poll: float = 1.0
    breaker_failure_threshold: int = 5
    breaker_reset_timeout: float = 30.0
    #: steps a human checked after an interruption: "done" (effect in place) or "retry"
    resolve_interrupted: Mapping[str, str] = field(default_factory=dict)


def budget_shape(plan: Plan) -> str:
    """Digest of the plan without its budget: "the same plan, only the budget changed"."""
    body = plan.model_dump(mode="json", by_alias=True, exclude={"budget"})
    return "sha256:" + sha256_hex(canonical_json(body))


class _Stop(Exception):
    """Internal: why no new step may start."""

    def __init__(self, kind: str, reason: str, step: str | None = None, evidence: Any = None):
        super().__init__(reason)
        self.kind = kind  # failed | canary | budget_abort | budget_pause | pause | policy
        self.reason = reason
        self.step = step
        self.evidence = evidence


class Runner:
    """Runs one plan at a time. Dependencies keyword-only; see ``app.cli.run`` for wiring."""

    def __init__(
        self,
        *,
        implementations: Mapping[str, Action],
        registry: ActionRegistry,
        state: StateStore,
        locks: ResourceLocks,
        gate: ApprovalGate,
        policy: RuntimePolicy,
        events: EventSink,
        incidents: IncidentReporter,
        now: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
        rng: random.Random,
        new_run_id: Callable[[], str],
        options: RunOptions | None = None,
        secrets: Mapping[str, str] | None = None,
        work_dir: Path | None = None,
        heartbeat_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        cancel_requested: Callable[[str], str | None] | None = None,
    ) -> None:
        self.implementations = implementations
        self.registry = registry
        self.state = state
        self.locks = locks
        self.gate = gate
        self.policy = policy
        self.events = events
        self.incidents = incidents
        self.now = now
        self.sleep = sleep
        self.rng = rng
        self.new_run_id = new_run_id
        self.options = options or RunOptions()
        self.secrets = dict(secrets or {})
        self.work_dir = work_dir
        self.heartbeat_sleep = heartbeat_sleep
        #: digest -> reason when a cancel was requested outside the state store (the GitHub
        #: App's record on the attestation branch); the state store's own ``cancelled`` status
        #: (``plangate cancel``) is always checked too
        self.cancel_requested = cancel_requested
        self._lock_lost = asyncio.Event()
        #: one breaker per service boundary, shared by every run of this runner
        self.breakers = BreakerRegistry(
            clock=now,
            failure_threshold=self.options.breaker_failure_threshold,
            reset_timeout=self.options.breaker_reset_timeout,
            on_change=lambda key, old, new: self.events.emit(
                "breaker.state", breaker=key, old=old, new=new
            ),
        )

    # -- entry point -----------------------------------------------------------------------

    def max_parallel(self, plan: Plan) -> int:
        caps = [
            c
            for c in (self.options.max_parallel, plan.max_parallel, self.policy.max_parallel)
            if c is not None
        ]
        return max(1, min(caps)) if caps else DEFAULT_MAX_PARALLEL

    async def run(self, loaded: LoadedPlan) -> RunResult:
        plan, digest = loaded.plan, loaded.digest
        self._check_implementations(loaded)
        self._check_cache(loaded)
        existing = self.state.get_run(digest)
        undo = existing is not None and self._owes_undo(existing, plan, digest)
        if existing is not None and existing.status in FINAL and not undo:
            return self._final_result(
                plan, digest, existing.run_id, existing.status, existing.reason
            )
        shape = budget_shape(plan)
        adopt = None
        if existing is None:  # a paused run whose plan only got a raised budget continues
            adopt = self.state.paused_predecessor(plan.id, shape, digest)
        if existing is not None:
            run_id = existing.run_id
        else:
            run_id = adopt.run_id if adopt is not None else self.new_run_id()
        emit = self.events.emit
        emit("run.requested", plan=plan.id, digest=digest, run_id=run_id)
        try:
            await self.locks.acquire(
                plan.resources,
                run_id,
                plan.id,
                wait=self.options.lock_wait,
                wait_timeout=self.options.lock_wait_timeout,
                poll=self.options.lock_poll,
                on_wait=lambda holders: emit(
                    "lock.waiting", run_id=run_id, held_by=[h.holder for h in holders]
                ),
            )
        except LockBusy as exc:
            emit("lock.busy", run_id=run_id, plan=plan.id, reason=exc.message)
            self.events.flush()
            return RunResult(plan.id, digest, run_id, "refused", exc.message)
        self._lock_lost = asyncio.Event()
        heartbeat = asyncio.create_task(self._heartbeat(run_id, bool(plan.resources)))
        try:
            if plan.resources:
                emit("lock.acquired", run_id=run_id, resources=list(plan.resources))
            if adopt is not None:
                carried = self.state.adopt(adopt.digest, digest, self.now())
                emit("run.adopted", run_id=run_id, previous_digest=adopt.digest, steps=carried)
            self.state.record_shape(digest, plan.id, shape)
            if undo:
                assert existing is not None
                return await self._undo_cancelled(loaded, run_id, existing.reason)
            result = await self._run_locked(loaded, run_id)
            result.resumed = result.resumed or adopt is not None
            return result
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            self.locks.release(run_id)
            if plan.resources:
                emit("lock.released", run_id=run_id, resources=list(plan.resources))
            self.events.flush()

    async def _heartbeat(self, run_id: str, holds_locks: bool) -> None:
        """Renew the lease; if it was lost (we stalled past it and someone took a resource),
        no new step may start: the run pauses rather than touch a resource it no longer holds.
        """
        while True:
            await self.heartbeat_sleep(self.locks.lease / 3)
            # a backend whose renewal is network I/O (git refs on GitHub) renews off the loop,
            # so a slow renewal never delays the steps running meanwhile (nor their timeouts)
            renew_async = getattr(self.locks, "renew_async", None)
            held = await renew_async(run_id) if renew_async else self.locks.renew(run_id)
            if held == 0 and holds_locks:
                self._lock_lost.set()
                self.events.emit("lock.lost", run_id=run_id)
                return

    def _owes_undo(self, existing: Any, plan: Plan, digest: str) -> bool:
        """A run cancelled while no runner held it (paused, failed before its saga) still has
        changes in place: its completed mutating steps, never compensated (no saga began)."""
        if existing.status != "cancelled" or self.state.saga(digest) is not None:
            return False
        index = plan.step_index()
        return any(
            rec.status == "succeeded" and sid in index and index[sid].mutates
            for sid, rec in self.state.completed(digest, "step").items()
        )

    async def _undo_cancelled(self, loaded: LoadedPlan, run_id: str, reason: str) -> RunResult:
        """Compensate what a cancelled run changed (reverse order, runbook on failure); nothing
        goes forward. The state keeps ``cancelled`` (``finish_run`` never overwrites it)."""
        plan, digest, emit = loaded.plan, loaded.digest, self.events.emit
        ctx = _RunContext(plan, digest, run_id, self.max_parallel(plan))
        ctx.result.resumed = True
        emit("run.started", plan=plan.id, digest=digest, run_id=run_id, resumed=True)
        attention = self._classify_interrupted(ctx)
        if attention:
            return self._finish(ctx, "needs_attention", "; ".join(attention))
        for sid, done in self.state.completed(digest, "step").items():
            if done.status == "succeeded":
                ctx.outputs[sid] = done.outputs
                ctx.budget.record(usage_from_dict(done.usage))
                ctx.result.steps[sid] = StepOutcome(sid, "skipped")
        try:  # compensations change the world too: only under a verified approval
            emit("approval.verified", run_id=run_id, summary=self.gate.verify(plan, digest))
        except Exception as exc:  # fail closed; the runbook path is the human's
            emit("approval.refused", run_id=run_id, check="error", reason=str(exc))
            return self._finish(
                ctx, "refused", f"{reason}; its changes were NOT undone (no approval): {exc}"
            )
        return await self._compensate(ctx, "aborted", f"{reason}; undoing what the run changed")

    def _cancelled(self, digest: str) -> str | None:
        """The cancellation's reason if the run was cancelled since it started, else None.

        An outside request is written into the state store (``cancel_run``) so the run ends
        ``cancelled`` exactly as after ``plangate cancel``. A failing outside check does not
        stop the run (a GitHub blip must not abort a saga); it is reported as an event."""
        if self.cancel_requested is not None:
            try:
                reason = self.cancel_requested(digest)
            except Exception as exc:
                self.events.emit("cancel.check_failed", error=f"{type(exc).__name__}: {exc}")
                reason = None
            if reason:
                self.state.cancel_run(digest, reason, self.now())
                return reason
        run = self.state.get_run(digest)
        if run is not None and run.status == "cancelled":
            return run.reason or "cancelled"
        return None

    def _check_implementations(self, loaded: LoadedPlan) -> None:
        missing: list[str] = []
        for step in loaded.plan.steps:
            names = [step.action]
            if isinstance(step.compensate, Compensation):
                names.append(step.compensate.action)
            for name in names:
                if name not in self.implementations or self.registry.get(name) is None:
                    missing.append(f"step '{step.id}': action '{name}' has no implementation")
        if missing:
            raise InputError(
                f"{loaded.path}: cannot run: " + "; ".join(missing),
                hint="install the plugin that provides the action, or change the plan",
            )

    def _check_cache(self, loaded: LoadedPlan) -> None:
        """``cache`` is refused on mutating steps before anything runs: reusing a result would
        silently skip a change to the outside world (and a compensation would undo nothing).
        Canary analysis steps are refused too: they must measure the live canary."""
        analysis = set(loaded.plan.canary.analysis) if loaded.plan.canary else set()
        bad = [
            f"step '{s.id}' mutates and declares 'cache'"
            for s in loaded.plan.steps
            if s.cache is not None and s.mutates
        ] + [
            f"step '{s.id}' is canary analysis and declares 'cache' (a stale result must not "
            "decide promote or abort)"
            for s in loaded.plan.steps
            if s.cache is not None and not s.mutates and s.id in analysis
        ]
        if bad:
            raise InputError(
                f"{loaded.path}: cannot run: " + "; ".join(bad),
                hint="only non-mutating, non-analysis steps may be cached: remove 'cache' from "
                "these steps "
                "(see docs/executor.md, 'Step result cache')",
            )

    def _final_result(
        self, plan: Plan, digest: str, run_id: str, status: Any, reason: str
    ) -> RunResult:
        result = RunResult(plan.id, digest, run_id, status, reason, resumed=True)
        completed = self.state.completed(digest, "step")
        for step in plan.steps:
            done = completed.get(step.id)
            result.steps[step.id] = StepOutcome(
                step.id, "skipped" if done and done.status == "succeeded" else "not_run"
            )
        result.warnings.append(
            f"run {run_id} of this plan digest already ended '{status}'; nothing ran. To run "
            "it again on purpose, use --restart (see docs/executor.md)"
        )
        return result

    # -- the run under lock ----------------------------------------------------------------

    async def _run_locked(self, loaded: LoadedPlan, run_id: str) -> RunResult:
        plan, digest = loaded.plan, loaded.digest
        now, emit = self.now, self.events.emit
        _, resumed = self.state.start_run(digest, run_id, plan.id, loaded.path, now())
        ctx = _RunContext(plan, digest, run_id, self.max_parallel(plan))
        result = ctx.result
        result.resumed = resumed
        emit(
            "run.started",
            plan=plan.id,
            digest=digest,
            run_id=run_id,
            resumed=resumed,
            steps=len(plan.steps),
            max_parallel=ctx.max_parallel,
        )

        attention = self._classify_interrupted(ctx)
        if attention:
            reason = "; ".join(attention)
            return self._finish(ctx, "needs_attention", reason)

        completed = self.state.completed(digest, "step")
        for sid, done in completed.items():
            if done.status == "succeeded":
                ctx.outputs[sid] = done.outputs
                ctx.budget.record(usage_from_dict(done.usage))
                if ctx.index[sid].mutates:
                    ctx.completed_mutating.append(sid)

        pending_mutation = any(s.mutates and s.id not in ctx.outputs for s in plan.steps) or bool(
            ctx.completed_mutating
        )
        if pending_mutation:
            try:
                summary = self.gate.verify(plan, digest)
            except AttestationError as exc:
                emit("approval.refused", run_id=run_id, check=exc.check, reason=exc.message)
                for step in plan.steps:
                    result.steps[step.id] = StepOutcome(step.id, "not_run")
                return self._finish(
                    ctx, "refused", f"no verified approval, nothing ran: {exc.message}"
                )
            except Exception as exc:  # fail closed: a broken verifier is a refusal
                emit("approval.refused", run_id=run_id, check="error", reason=str(exc))
                return self._finish(
                    ctx, "refused", f"approval verification failed ({type(exc).__name__}): {exc}"
                )
            emit("approval.verified", run_id=run_id, summary=summary)

        saga = self.state.saga(digest)
        if saga is not None:  # a saga began earlier: finish it, never go forward again
            final, reason = saga
            emit("saga.resumed", run_id=run_id, reason=reason)
            return await self._compensate(ctx, final, reason)

        failed = [(sid, rec) for sid, rec in completed.items() if rec.status == "failed"]
        if failed:  # died between a definitive failure and the saga's start: compensate now
            sid, rec = failed[0]
            kind = "aborted" if sid in ctx.analysis else "compensated"
            return await self._compensate(ctx, kind, f"step '{sid}' failed: {rec.error}")

        stop = await self._schedule(ctx, completed)
        if stop is None:
            if ctx.paused:
                reason = "; ".join(ctx.paused)
                return self._finish(ctx, "paused", reason + "; re-run the same plan to resume")
            emit("run.promoted" if plan.canary else "run.completed", run_id=run_id)
            return self._finish(ctx, "succeeded", "all steps succeeded")
        if stop.kind in ("budget_pause", "pause"):
            return self._finish(ctx, "paused", stop.reason)
        if stop.kind == "canary":
            incident = Incident(
                plan_id=plan.id,
                plan_digest=digest,
                run_id=run_id,
                title=f"Canary aborted: plan {plan.id}",
                summary=stop.reason,
                failed_metrics={stop.step or "?": stop.evidence or {}},
            )
            try:
                where = self.incidents.open_incident(incident)
            except Exception as exc:  # the abort happened; reporting trouble is noted, not fatal
                where = f"incident could not be opened: {type(exc).__name__}: {exc}"
            result.incident = where
            emit("canary.aborted", run_id=run_id, step=stop.step, reason=stop.reason)
            emit("incident.opened", run_id=run_id, where=where)
        final = "compensated" if stop.kind == "failed" else "aborted"
        return await self._compensate(ctx, final, stop.reason)

    def _classify_interrupted(self, ctx: _RunContext) -> list[str]:
        attention: list[str] = []
        now = self.now()
        for attempt in self.state.running_attempts(ctx.digest):
            step = ctx.index.get(attempt.step_id)
            if step is None:
                continue
            choice = self.options.resolve_interrupted.get(attempt.step_id)
            if attempt.phase == "step":
                if choice == "done":
                    self.state.mark_step_done_by_hand(ctx.digest, step.id, now)
                    self.events.emit("step.marked_done", run_id=ctx.run_id, step=step.id)
                    continue
                if step.idempotent or choice == "retry":
                    self.state.mark_interrupted(ctx.digest, "step", step.id, now)
                    self.events.emit(
                        "step.interrupted",
                        run_id=ctx.run_id,
                        step=step.id,
                        attempt=attempt.attempt,
                        action="retry",
                    )
                    continue
            else:
                comp = step.compensate
                spec = self.registry.get(comp.action) if isinstance(comp, Compensation) else None
                if (spec is not None and spec.idempotent) or choice == "retry":
                    self.state.mark_interrupted(ctx.digest, "compensate", step.id, now)
                    continue
            ctx.result.steps[step.id] = StepOutcome(step.id, "interrupted", attempt.attempt)
            what = "step" if attempt.phase == "step" else "compensation of step"
            attention.append(
                f"{what} '{step.id}' (attempt {attempt.attempt}) was interrupted and is not "
                "idempotent: check whether it took effect, then re-run with "
                f"--mark-done {step.id} (it did) or --retry-step {step.id} (it did not)"
            )
            self.events.emit("step.needs_attention", run_id=ctx.run_id, step=step.id)
        return attention

    def _finish(self, ctx: _RunContext, status: Any, reason: str) -> RunResult:
        result = ctx.result
        result.status = status
        result.reason = reason
        result.usage = usage_to_dict(ctx.budget.used)
        for step in ctx.plan.steps:
            result.steps.setdefault(step.id, StepOutcome(step.id, "not_run"))
        self.state.finish_run(ctx.digest, status, reason, self.now())
        self.events.emit(
            "run.finished",
            run_id=ctx.run_id,
            plan=ctx.plan.id,
            status=status,
            reason=reason,
            usage=result.usage,
        )
        return result

    # -- scheduling --------------------------------------------------------------------------

    async def _schedule(self, ctx: _RunContext, completed: Mapping[str, Any]) -> _Stop | None:
        plan = ctx.plan
        queue = ReadyQueue([s.id for s in plan.steps], effective_needs(plan))
        running: dict[asyncio.Task[None], str] = {}
        stop: _Stop | None = None
        emit = self.events.emit
        try:
            while True:
                while stop is None and len(running) < ctx.max_parallel:
                    sid = queue.pop()
                    if sid is None:
                        break
                    done = completed.get(sid)
                    if done is not None and done.status == "succeeded":
                        ctx.result.steps[sid] = StepOutcome(sid, "skipped")
                        emit(
                            "step.skipped",
                            run_id=ctx.run_id,
                            step=sid,
                            reason="completed by an earlier invocation",
                        )
                        queue.done(sid)
                        continue
                    stop = self._before_step(ctx, ctx.index[sid])
                    if stop is not None:
                        ctx.result.steps[sid] = StepOutcome(sid, "blocked", error=stop.reason)
                        break
                    task = asyncio.create_task(self._run_step(ctx, ctx.index[sid]))
                    running[task] = sid
                if not running:
                    break
                finished, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in sorted(finished, key=lambda t: ctx.order[running[t]]):
                    sid = running.pop(task)
                    exc = task.exception()
                    if exc is None:
                        queue.done(sid)
                    elif isinstance(exc, BreakerOpen):
                        held = queue.block(sid)
                        outcome = ctx.result.steps[sid]
                        outcome.status, outcome.error = "blocked", exc.message
                        for held_id in held - {sid}:
                            ctx.result.steps[held_id] = StepOutcome(
                                held_id, "blocked", error=f"waits for '{sid}' (breaker open)"
                            )
                        ctx.paused.append(
                            f"breaker '{exc.key}' is open: step '{sid}' and "
                            f"{len(held) - 1} dependent step(s) paused"
                        )
                        emit(
                            "step.paused",
                            run_id=ctx.run_id,
                            step=sid,
                            breaker=exc.key,
                            dependents=sorted(held - {sid}),
                        )
                    elif isinstance(exc, StepFailed):
                        queue.block(sid)
                        if stop is None:
                            kind = "canary" if sid in ctx.analysis else "failed"
                            label = "canary analysis" if kind == "canary" else "step"
                            stop = _Stop(
                                kind,
                                f"{label} '{sid}' failed: {exc.message}",
                                sid,
                                dict(getattr(exc, "outputs", {}) or {}),
                            )
                    else:
                        raise exc
        except BaseException:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            raise
        return stop

    def _before_step(self, ctx: _RunContext, step: Step) -> _Stop | None:
        """Cancellation, lease, budget before every step; runtime policy before every
        mutating step."""
        emit = self.events.emit
        cancelled = self._cancelled(ctx.digest)
        if cancelled is not None:
            # a queue cancel: start nothing more; what already ran is undone by the saga
            return _Stop("cancel", f"cancelled before step '{step.id}': {cancelled}", step.id)
        if self._lock_lost.is_set():
            return _Stop(
                "pause",
                f"the lease on the plan's resources was lost before step '{step.id}' (the run "
                "stalled longer than the lease); re-run to resume",
                step.id,
            )
        for warning in ctx.budget.new_warnings():
            ctx.result.warnings.append(f"budget soft limit: {warning}")
            emit("budget.soft_limit", run_id=ctx.run_id, message=warning)
        status = ctx.budget.status()
        if status.level == "hard":
            mode = ctx.plan.budget.on_hard_limit
            reason = "budget hard limit reached before step '{}': {}".format(
                step.id, "; ".join(status.messages)
            )
            emit("budget.hard_limit", run_id=ctx.run_id, step=step.id, action=mode, message=reason)
            if mode == "pause":
                return _Stop(
                    "budget_pause",
                    reason + "; the run is paused: raise the budget (a new approval) and re-run",
                    step.id,
                )
            return _Stop(
                "budget_abort", reason + "; aborting (budget.on_hard_limit: abort)", step.id
            )
        if step.mutates:
            try:
                verdict = self.policy.check_step(ctx.plan, step, ctx.budget.used)
            except Exception as exc:  # fail closed
                reason = f"runtime policy check failed ({type(exc).__name__}: {exc})"
                emit("policy.denied", run_id=ctx.run_id, step=step.id, reason=reason)
                return _Stop("policy", f"step '{step.id}': {reason}", step.id)
            if not verdict.allowed:
                emit("policy.denied", run_id=ctx.run_id, step=step.id, reason=verdict.reason)
                return _Stop(
                    "policy", f"runtime policy denied step '{step.id}': {verdict.reason}", step.id
                )
            emit("policy.allowed", run_id=ctx.run_id, step=step.id, reason=verdict.reason)
        return None

    # -- one step ----------------------------------------------------------------------------

    def _inputs(
        self, ctx: _RunContext, step_id: str, action: str, raw: dict[str, Any]
    ) -> BaseModel:
        spec = self.registry.get(action)
        assert spec is not None  # checked by _check_implementations
        values = resolve(raw, outputs=ctx.outputs, context=ctx.context, step=step_id)
        try:
            return spec.inputs.model_validate(values)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "with"
            raise StepFailed(
                f"step '{step_id}': resolved inputs are invalid at '{where}': {first['msg']}",
                step=step_id,
                kind="inputs.invalid",
                retryable=False,
            ) from exc

    async def _run_step(self, ctx: _RunContext, step: Step) -> None:
        outcome = StepOutcome(step.id, "not_run", started_at=self.now())
        ctx.result.steps[step.id] = outcome
        self.events.emit("step.started", run_id=ctx.run_id, step=step.id, action=step.action)
        try:
            inputs = self._inputs(ctx, step.id, step.action, step.with_)
            cache_key = None
            if step.cache is not None and not step.mutates:  # mutating: refused in run()
                cache_key = cache_key_for(step.action, inputs)
                if self._serve_cached(ctx, step, cache_key, outcome):
                    return
            impl = self.implementations[step.action]
            breaker = self.breakers.get(impl.breaker_key(inputs))
            number, result = await self._attempts(
                ctx, "step", step.id, impl, inputs, step, outcome, breaker=breaker
            )
        except StepFailed as exc:
            outcome.finished_at = self.now()
            if isinstance(exc, BreakerOpen):
                raise
            outcome.status, outcome.error, outcome.error_kind = "failed", exc.message, exc.kind
            self.state.fail_step(ctx.digest, "step", step.id, "failed", exc.message, self.now())
            self.events.emit(
                "step.failed",
                run_id=ctx.run_id,
                step=step.id,
                kind=exc.kind,
                error=exc.message,
                attempts=outcome.attempts,
            )
            raise
        outputs = dict(result.outputs)
        self.state.complete_step(
            ctx.digest, "step", step.id, number, outputs, usage_to_dict(result.usage), self.now()
        )
        if cache_key is not None and step.cache is not None:
            self.state.cache_put(cache_key, step.action, outputs, step.cache.ttl, self.now())
        ctx.outputs[step.id] = outputs
        ctx.budget.record(result.usage)
        if step.mutates:
            ctx.completed_mutating.append(step.id)
        outcome.status, outcome.outputs, outcome.finished_at = "succeeded", outputs, self.now()
        self.events.emit(
            "step.succeeded",
            run_id=ctx.run_id,
            step=step.id,
            attempts=outcome.attempts,
            usage=usage_to_dict(result.usage),
        )

    def _serve_cached(self, ctx: _RunContext, step: Step, key: str, outcome: StepOutcome) -> bool:
        """Reuse a fresh cached result: the step succeeds without calling its action."""
        now = self.now()
        hit = self.state.cache_get(key, now)
        if hit is None:
            return False
        outputs = dict(hit.outputs)
        self.state.complete_step(ctx.digest, "step", step.id, 0, outputs, {}, now)
        ctx.outputs[step.id] = outputs
        outcome.status, outcome.outputs, outcome.finished_at = "succeeded", outputs, now
        self.events.emit(
            "step.cached",
            run_id=ctx.run_id,
            step=step.id,
            action=step.action,
            cache_key=key,
            age=round(now - hit.created_at, 3),
            ttl=hit.ttl,
        )
        self.events.emit(
            "step.succeeded", run_id=ctx.run_id, step=step.id, attempts=0, usage={}, cached=True
        )
        return True

    async def _attempts(
        self,
        ctx: _RunContext,
        phase: Phase,
        step_id: str,
        impl: Action,
        inputs: BaseModel,
        step: Step | Compensation,
        outcome: StepOutcome | None,
        *,
        breaker: Any = None,
    ) -> tuple[int, ActionResult]:
        """Run attempts with retries; each one recorded before and after. Returns (n, result)."""
        state, digest, emit = self.state, ctx.digest, self.events.emit
        base = state.attempts_so_far(digest, phase, step_id)
        timeout = step.timeout

        async def attempt(n: int) -> tuple[int, ActionResult]:
            number = base + n
            if breaker is not None:
                breaker.before_call(step_id)
            # one key per logical operation, stable across attempts and invocations, so the
            # remote can drop a repeated attempt (Idempotency-Key semantics); ``attempt`` is
            # passed separately
            key = f"{digest}:{step_id}" + ("" if phase == "step" else ":compensate")
            state.begin_attempt(digest, phase, step_id, number, key, self.now())
            if outcome is not None:
                outcome.attempts = n
            emit(
                "attempt.started",
                run_id=ctx.run_id,
                step=step_id,
                phase=phase,
                attempt=number,
                idempotency_key=key,
            )
            action_ctx = ActionContext(
                plan_id=ctx.plan.id,
                plan_digest=digest,
                step_id=step_id,
                attempt=number,
                idempotency_key=key,
                correlation_id=ctx.run_id,
                timeout=timeout,
                secrets=self.secrets,
                work_dir=self.work_dir,
            )
            error: StepFailed
            try:
                async with asyncio.timeout(timeout if timeout > 0 else None):
                    result = await impl.run(inputs, action_ctx)
            except TimeoutError:
                error = StepFailed(
                    f"step '{step_id}': attempt {number} did not finish within {timeout:g}s "
                    "and was cancelled",
                    step=step_id,
                    kind="timeout",
                    retryable=True,
                )
            except StepFailed as exc:
                error = exc
            except Exception as exc:  # an action bug: recorded, never retried
                error = StepFailed(
                    f"step '{step_id}': action '{impl.name}' crashed: {type(exc).__name__}: {exc}",
                    step=step_id,
                    kind="action.crashed",
                    retryable=False,
                )
            else:
                if breaker is not None:
                    breaker.success()
                return number, result
            if breaker is not None:
                breaker.failure(error)
            state.fail_attempt(
                digest, phase, step_id, number, error.kind, error.message, self.now()
            )
            emit(
                "attempt.failed",
                run_id=ctx.run_id,
                step=step_id,
                phase=phase,
                attempt=number,
                kind=error.kind,
                error=error.message,
            )
            raise error

        def on_retry(failed: int, exc: StepFailed, delay: float) -> None:
            if outcome is not None:
                outcome.retries += 1
            emit(
                "step.retry",
                run_id=ctx.run_id,
                step=step_id,
                phase=phase,
                after_attempt=base + failed,
                delay=round(delay, 3),
                kind=exc.kind,
            )

        return await run_with_retries(
            attempt, step.retry, sleep=self.sleep, rng=self.rng, on_retry=on_retry
        )

    # -- saga --------------------------------------------------------------------------------

    async def _compensate(self, ctx: _RunContext, final: Any, reason: str) -> RunResult:
        digest, emit = ctx.digest, self.events.emit
        self.state.begin_saga(digest, final, reason, self.now())
        self.state.finish_run(digest, "compensating", reason, self.now())
        order = self.state.completed(digest, "step")
        completed_steps = [
            ctx.index[sid]
            for sid, rec in order.items()
            if rec.status == "succeeded" and ctx.index[sid].mutates
        ]
        already = {
            sid
            for sid, rec in self.state.completed(digest, "compensate").items()
            if rec.status == "succeeded"
        }
        emit(
            "saga.started",
            run_id=ctx.run_id,
            reason=reason,
            steps=[s.id for s in reversed(completed_steps)],
        )

        async def run_one(step: Step, comp: Compensation) -> int:
            emit("compensation.started", run_id=ctx.run_id, step=step.id, action=comp.action)
            try:
                inputs = self._inputs(ctx, step.id, comp.action, comp.with_)
                impl = self.implementations[comp.action]
                # no breaker: an undo must be tried even when the boundary has been failing
                number, result = await self._attempts(
                    ctx, "compensate", step.id, impl, inputs, comp, None
                )
            except StepFailed as exc:
                self.state.fail_step(
                    digest, "compensate", step.id, "failed", exc.message, self.now()
                )
                emit("compensation.failed", run_id=ctx.run_id, step=step.id, error=exc.message)
                raise
            self.state.complete_step(
                digest,
                "compensate",
                step.id,
                number,
                dict(result.outputs),
                usage_to_dict(result.usage),
                self.now(),
            )
            ctx.budget.record(result.usage)
            emit("compensation.succeeded", run_id=ctx.run_id, step=step.id)
            return number

        def describe(step: Step, comp: Compensation) -> RunbookEntry:
            try:
                values = resolve(comp.with_, outputs=ctx.outputs, context=ctx.context, step=step.id)
            except StepFailed as exc:
                values = dict(comp.with_)
                note: str | None = f"inputs could not be resolved: {exc.message}"
            else:
                note = None
            return RunbookEntry(
                step.id, comp.action, values, manual_command(comp.action, values), note
            )

        saga = await run_saga(
            completed_steps,
            already_compensated=already,
            run_one=run_one,
            describe=describe,
            plan_id=ctx.plan.id,
            plan_digest=digest,
            run_id=ctx.run_id,
            reason=reason,
        )
        ctx.result.compensations = _fix_attempts(saga.compensations, self.state, digest)
        if saga.ok:
            return self._finish(ctx, final, reason)
        ctx.result.runbook = saga.runbook
        emit(
            "runbook.created",
            run_id=ctx.run_id,
            runbook=saga.runbook.to_dict() if saga.runbook else None,
        )
        return self._finish(
            ctx,
            "compensation_failed",
            saga.runbook.reason if saga.runbook else reason,
        )


def cache_key_for(action: str, inputs: BaseModel) -> str:
    """``sha256:<hex>`` of (action, resolved and validated inputs) as RFC 8785 JSON."""
    body = {"action": action, "inputs": inputs.model_dump(mode="json", by_alias=True)}
    return "sha256:" + sha256_hex(canonical_json(body))


def _fix_attempts(
    outcomes: list[CompensationOutcome], state: StateStore, digest: str
) -> list[CompensationOutcome]:
    """Attempt counts as recorded durably (across invocations)."""
    fixed = []
    for o in outcomes:
        if o.status in ("succeeded", "failed"):
            n = state.attempts_so_far(digest, "compensate", o.step_id)
            o = CompensationOutcome(o.step_id, o.status, o.action, n, o.error, o.note)
        fixed.append(o)
    return fixed


class _RunContext:
    """Mutable per-run bookkeeping (one instance per ``Runner.run``)."""

    def __init__(self, plan: Plan, digest: str, run_id: str, max_parallel: int) -> None:
        self.plan = plan
        self.digest = digest
        self.run_id = run_id
        self.max_parallel = max_parallel
        self.index = plan.step_index()
        self.order = {s.id: i for i, s in enumerate(plan.steps)}
        self.analysis = set(plan.canary.analysis) if plan.canary else set()
        self.outputs: dict[str, dict[str, Any]] = {}
        self.completed_mutating: list[str] = []
        self.budget = BudgetTracker(plan.budget)
        self.paused: list[str] = []
        self.result = RunResult(plan.id, digest, run_id, "succeeded")
        self.context: dict[str, Any] = {
            "plan.id": plan.id,
            "plan.digest": digest,
            "plan.environment": plan.environment,
            "plan.team": plan.team,
            "run.id": run_id,
        }
