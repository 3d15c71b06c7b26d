"""Sagas: undo completed mutating steps in reverse completion order; stop at the first failure.

Pure orchestration: the runner passes ``run_one`` (which runs one compensation with its own
retry policy and records it durably) and ``describe`` (which turns a pending compensation into
an exact manual command). A failed compensation is a first-class outcome: the chain stops
(running later undos on top of a failed one can make things worse) and the result carries a
manual rollback runbook listing what is done, what failed and what is left.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from app.errors import StepFailed
from app.execute.result import CompensationOutcome, Runbook, RunbookEntry
from app.plan.model import Compensation, NoCompensation, Step

__all__ = ["SagaOutcome", "run_saga"]


@dataclass(frozen=True, slots=True)
class SagaOutcome:
    ok: bool
    compensations: list[CompensationOutcome]
    runbook: Runbook | None


async def run_saga(
    completed: Sequence[Step],
    *,
    already_compensated: set[str],
    run_one: Callable[[Step, Compensation], Awaitable[int]],
    describe: Callable[[Step, Compensation], RunbookEntry],
    plan_id: str,
    plan_digest: str,
    run_id: str,
    reason: str,
) -> SagaOutcome:
    """``completed``: mutating steps in completion order. ``run_one`` returns attempts used."""
    outcomes: list[CompensationOutcome] = []
    done_ids = tuple(s.id for s in completed)
    compensated: list[str] = []
    pending = list(reversed(completed))
    for i, step in enumerate(pending):
        spec = step.compensate
        if step.id in already_compensated:
            outcomes.append(CompensationOutcome(step.id, "skipped", note="compensated earlier"))
            compensated.append(step.id)
            continue
        if spec is None or isinstance(spec, NoCompensation):
            note = spec.none if isinstance(spec, NoCompensation) else "no compensation declared"
            outcomes.append(CompensationOutcome(step.id, "no_undo", note=note))
            continue
        try:
            attempts = await run_one(step, spec)
        except StepFailed as exc:
            outcomes.append(CompensationOutcome(step.id, "failed", spec.action, error=exc.message))
            remaining = tuple(
                describe(s, s.compensate)
                for s in pending[i + 1 :]
                if isinstance(s.compensate, Compensation) and s.id not in already_compensated
            )
            failed = describe(step, spec)
            runbook = Runbook(
                plan_id=plan_id,
                plan_digest=plan_digest,
                run_id=run_id,
                reason=f"{reason}; then the compensation of step '{step.id}' failed: {exc.message}",
                done_steps=done_ids,
                compensated=tuple(compensated),
                failed=RunbookEntry(
                    failed.step_id, failed.action, failed.inputs, failed.command, exc.message
                ),
                remaining=remaining,
            )
            return SagaOutcome(False, outcomes, runbook)
        outcomes.append(CompensationOutcome(step.id, "succeeded", spec.action, attempts))
        compensated.append(step.id)
    return SagaOutcome(True, outcomes, None)
