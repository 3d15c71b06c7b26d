"""The policy engine behind the executor's ``RuntimePolicy`` port.

Before each mutating step the runner asks ``check_step``; this adapter re-judges the step with
``app.policy.engine.check_step`` against the policy in force (read from the default branch by
the caller, never from a pull request) and the usage the run actually recorded so far. A denial
names the rule and its ``file:line``; an engine error is a denial (fail closed).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from app.cost import Usage as CostUsage
from app.execute.actions.base import Usage
from app.execute.ports import PolicyVerdict
from app.plan.model import Plan, Step
from app.policy.context import EvalContext, NoSpend, SpendLedger
from app.policy.engine import check_step
from app.policy.loader import PolicySet

__all__ = ["EnginePolicy", "to_cost_usage"]


def to_cost_usage(usage: Usage) -> CostUsage:
    """The executor's recorded usage in the cost engine's exact units."""
    return CostUsage(
        money=Decimal(usage.money),
        tokens=usage.tokens_input + usage.tokens_output,
        runner_minutes=Decimal(str(usage.runner_minutes)),
    )


@dataclass
class EnginePolicy:
    """``RuntimePolicy`` backed by the policy engine. ``now`` is injected (tests control time)."""

    policy: PolicySet
    now: Callable[[], datetime]
    plan_path: str | None = None
    author: str | None = None
    spend: SpendLedger = field(default_factory=NoSpend)
    #: parallelism caps come from policy rules on the plan (``max_parallel`` predicate)
    max_parallel: int | None = None

    def check_step(self, plan: Plan, step: Step, usage: Usage) -> PolicyVerdict:
        ctx = EvalContext(
            now=self.now(),
            author=self.author,
            plan_path=self.plan_path,
            spend=self.spend,
            run_usage=to_cost_usage(usage),
        )
        try:
            decision = check_step(plan, step, self.policy, ctx)
        except Exception as exc:  # fail closed: an engine error never lets a mutation through
            return PolicyVerdict(
                False, f"policy evaluation failed for step '{step.id}': {type(exc).__name__}: {exc}"
            )
        notes = tuple(f"{m.rule} ({m.source}): {m.reason}" for m in decision.warnings)
        if decision.allowed:
            return PolicyVerdict(True, f"allowed by policy {self.policy.digest[:19]}", notes)
        reasons = "; ".join(f"{m.rule} ({m.source}): {m.reason}" for m in decision.denials)
        return PolicyVerdict(False, f"denied by policy: {reasons}", notes)
