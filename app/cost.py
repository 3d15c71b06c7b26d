"""Cost: what a plan will cost, whether it fits its budgets, and how it changed against base.

Why a module of its own: the same arithmetic runs on the pull request (``plangate check``, the
app's ``plangate/cost`` check run) and in the executor before each step, so it must be pure and
exact. Every amount is a ``Decimal`` built from strings (``Decimal(str(x))``), never from binary
floats, so ``0.1 + 0.2`` is ``0.3`` here and a total never depends on summation order.

This module knows prices (``PriceTable``, parsed from policy) and plans; it never reads files,
clocks or the network. Team spending so far is passed in as a ``Usage`` value by the caller (the
policy engine asks its ``SpendLedger``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.plan.model import Budget, Money, Plan, Step

__all__ = [
    "BudgetCheck",
    "BudgetVerdict",
    "CostChange",
    "Limit",
    "ModelPrice",
    "PlanCost",
    "PriceTable",
    "StepCost",
    "TeamBudget",
    "Usage",
    "budget_checks",
    "diff_costs",
    "estimate_plan",
    "estimate_step",
    "fmt_amount",
    "totals_by",
]

ZERO = Decimal(0)
_THOUSAND = Decimal(1000)
Verdict = Literal["ok", "warn", "block"]
Metric = Literal["money", "tokens", "runner_minutes"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ModelPrice(_Model):
    """Price of one LLM model, per 1,000 tokens (input and output are priced separately)."""

    input_per_1k: Money = Field(description="price of 1,000 input (prompt) tokens")
    output_per_1k: Money = Field(description="price of 1,000 output (completion) tokens")


class PriceTable(_Model):
    """Prices used to turn a step's ``estimate`` into money. All amounts in ``currency``."""

    currency: str = Field("USD", min_length=3, max_length=3)
    models: dict[str, ModelPrice] = Field(default_factory=dict)
    api_call: Money = Field(ZERO, description="price of one external API call")
    runner_minute: Money = Field(ZERO, description="price of one CI runner minute")
    actions: dict[str, Money] = Field(
        default_factory=dict, description="fixed price per use of an action, e.g. agent: 0.01"
    )


class Limit(_Model):
    """A soft limit warns; a hard limit blocks. Either may be omitted."""

    soft: Money | None = None
    hard: Money | None = None


class TeamBudget(_Model):
    """What a team may spend per calendar period (UTC), across all its plans."""

    period: Literal["day", "week", "month"] = "month"
    money: Limit | None = None
    tokens: Limit | None = None
    runner_minutes: Limit | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    """Amounts spent or expected: money, tokens, runner minutes (all exact)."""

    money: Decimal = ZERO
    tokens: int = 0
    runner_minutes: Decimal = ZERO

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.money + other.money,
            self.tokens + other.tokens,
            self.runner_minutes + other.runner_minutes,
        )

    def get(self, metric: Metric) -> Decimal:
        return Decimal(getattr(self, metric))


@dataclass(frozen=True, slots=True)
class StepCost:
    """One step's estimate, priced. ``unpriced`` names what the price table does not know."""

    step: str
    action: str
    tokens_input: int = 0
    tokens_output: int = 0
    api_calls: int = 0
    runner_minutes: Decimal = ZERO
    money: Decimal = ZERO
    parts: tuple[tuple[str, Decimal], ...] = ()
    unpriced: tuple[str, ...] = ()

    @property
    def tokens(self) -> int:
        return self.tokens_input + self.tokens_output


@dataclass(frozen=True, slots=True)
class PlanCost:
    plan_id: str
    team: str
    environment: str
    currency: str
    steps: tuple[StepCost, ...] = ()

    @property
    def money(self) -> Decimal:
        return sum((s.money for s in self.steps), ZERO)

    @property
    def tokens(self) -> int:
        return sum(s.tokens for s in self.steps)

    @property
    def runner_minutes(self) -> Decimal:
        return sum((s.runner_minutes for s in self.steps), ZERO)

    @property
    def api_calls(self) -> int:
        return sum(s.api_calls for s in self.steps)

    @property
    def usage(self) -> Usage:
        return Usage(self.money, self.tokens, self.runner_minutes)

    @property
    def unpriced(self) -> tuple[str, ...]:
        return tuple(u for s in self.steps for u in s.unpriced)

    def to_dict(self) -> dict[str, object]:
        return {
            "plan": self.plan_id,
            "team": self.team,
            "environment": self.environment,
            "currency": self.currency,
            "money": fmt_amount(self.money),
            "tokens": self.tokens,
            "runner_minutes": fmt_amount(self.runner_minutes),
            "api_calls": self.api_calls,
            "unpriced": list(self.unpriced),
            "steps": [
                {
                    "step": s.step,
                    "action": s.action,
                    "money": fmt_amount(s.money),
                    "tokens": s.tokens,
                    "runner_minutes": fmt_amount(s.runner_minutes),
                    "api_calls": s.api_calls,
                    "parts": {k: fmt_amount(v) for k, v in s.parts},
                }
                for s in self.steps
            ],
        }


def fmt_amount(value: Decimal) -> str:
    """Exact, plain notation, no exponent and no trailing zeros: ``Decimal('1.50')`` → ``1.5``."""
    if value == 0:
        return "0"
    return format(value.normalize(), "f")


def _dec(value: float | int | Decimal) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


def estimate_step(step: Step, prices: PriceTable) -> StepCost:
    """Price one step: tokens x model price per 1k, API calls, runner minutes, fixed prices."""
    est = step.estimate
    parts: list[tuple[str, Decimal]] = []
    unpriced: list[str] = []
    tin = tout = 0
    if est.tokens is not None:
        tin, tout = est.tokens.input, est.tokens.output
        price = prices.models.get(est.tokens.model)
        if price is None:
            unpriced.append(
                f"step '{step.id}': model '{est.tokens.model}' is not in the price table"
            )
        else:
            parts.append(("tokens.input", Decimal(tin) * price.input_per_1k / _THOUSAND))
            parts.append(("tokens.output", Decimal(tout) * price.output_per_1k / _THOUSAND))
    if est.api_calls:
        parts.append(("api_calls", Decimal(est.api_calls) * prices.api_call))
    minutes = _dec(est.runner_minutes)
    if minutes:
        parts.append(("runner_minutes", minutes * prices.runner_minute))
    if est.fixed is not None:
        parts.append(("fixed", est.fixed))
    if step.action in prices.actions:
        parts.append((f"action:{step.action}", prices.actions[step.action]))
    return StepCost(
        step=step.id,
        action=step.action,
        tokens_input=tin,
        tokens_output=tout,
        api_calls=est.api_calls,
        runner_minutes=minutes,
        money=sum((amount for _, amount in parts), ZERO),
        parts=tuple(parts),
        unpriced=tuple(unpriced),
    )


def estimate_plan(plan: Plan, prices: PriceTable) -> PlanCost:
    """Every step priced; totals are properties of the result."""
    return PlanCost(
        plan_id=plan.id,
        team=plan.team,
        environment=plan.environment,
        currency=prices.currency,
        steps=tuple(estimate_step(step, prices) for step in plan.steps),
    )


def totals_by(costs: Iterable[PlanCost], key: Literal["team", "environment"]) -> dict[str, Usage]:
    """Per-team or per-environment totals, sorted by name."""
    out: dict[str, Usage] = {}
    for cost in costs:
        name = getattr(cost, key)
        out[name] = out.get(name, Usage()) + cost.usage
    return dict(sorted(out.items()))


# -- budgets -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BudgetCheck:
    """One limit compared with one amount. ``scope`` is ``plan`` or ``team:<name>``."""

    scope: str
    metric: Metric
    amount: Decimal
    soft: Decimal | None
    hard: Decimal | None
    verdict: Verdict
    spent: Decimal = ZERO
    source: str = ""

    @property
    def reason(self) -> str:
        spent = f" ({fmt_amount(self.spent)} already spent this period)" if self.spent else ""
        total = fmt_amount(self.amount)
        if self.verdict == "block":
            return f"{self.scope} {self.metric}: {total}{spent} exceeds hard limit {self.hard}"
        if self.verdict == "warn":
            return f"{self.scope} {self.metric}: {total}{spent} exceeds soft limit {self.soft}"
        return f"{self.scope} {self.metric}: {total}{spent} within limits"

    def to_dict(self) -> dict[str, object]:
        return {
            "scope": self.scope,
            "metric": self.metric,
            "amount": fmt_amount(self.amount),
            "spent": fmt_amount(self.spent),
            "soft": None if self.soft is None else fmt_amount(self.soft),
            "hard": None if self.hard is None else fmt_amount(self.hard),
            "verdict": self.verdict,
            "source": self.source,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class BudgetVerdict:
    """The worst verdict over all checks: ``block`` > ``warn`` > ``ok``."""

    checks: tuple[BudgetCheck, ...] = field(default_factory=tuple)

    @property
    def verdict(self) -> Verdict:
        verdicts = {c.verdict for c in self.checks}
        return "block" if "block" in verdicts else "warn" if "warn" in verdicts else "ok"

    def to_dict(self) -> dict[str, object]:
        return {"verdict": self.verdict, "checks": [c.to_dict() for c in self.checks]}


def _judge(amount: Decimal, soft: Decimal | None, hard: Decimal | None) -> Verdict:
    if hard is not None and amount > hard:
        return "block"
    if soft is not None and amount > soft:
        return "warn"
    return "ok"


def budget_checks(
    usage: Usage,
    *,
    plan_budget: Budget | None = None,
    team: str | None = None,
    team_budget: TeamBudget | None = None,
    team_spent: Usage | None = None,
    team_source: str = "",
) -> BudgetVerdict:
    """Compare expected ``usage`` with the plan's budget and the team's period budget.

    The team check adds what the team has already spent in the current period. A limit that is
    not set is not checked; a plan with no budget at all is bounded only by its team budget.
    """
    checks: list[BudgetCheck] = []
    if plan_budget is not None:
        limits: list[tuple[Metric, object]] = [
            ("money", plan_budget.money),
            ("tokens", plan_budget.tokens),
            ("runner_minutes", plan_budget.runner_minutes),
        ]
        for metric, limit in limits:
            if limit is None:
                continue
            soft = None if limit.soft is None else _dec(limit.soft)  # type: ignore[attr-defined]
            hard = None if limit.hard is None else _dec(limit.hard)  # type: ignore[attr-defined]
            amount = usage.get(metric)
            checks.append(
                BudgetCheck("plan", metric, amount, soft, hard, _judge(amount, soft, hard))
            )
    if team_budget is not None and team is not None:
        spent = team_spent or Usage()
        for metric in ("money", "tokens", "runner_minutes"):
            limit = getattr(team_budget, metric)
            if limit is None:
                continue
            total = usage.get(metric) + spent.get(metric)  # type: ignore[arg-type]
            checks.append(
                BudgetCheck(
                    f"team:{team}",
                    metric,  # type: ignore[arg-type]
                    total,
                    limit.soft,
                    limit.hard,
                    _judge(total, limit.soft, limit.hard),
                    spent=spent.get(metric),  # type: ignore[arg-type]
                    source=team_source,
                )
            )
    return BudgetVerdict(tuple(checks))


# -- base/head diff ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CostChange:
    """How one plan's cost changed between the base branch and the head."""

    path: str
    plan_id: str
    status: Literal["new", "changed", "removed", "unchanged"]
    base: Decimal
    head: Decimal

    @property
    def delta(self) -> Decimal:
        return self.head - self.base

    def to_dict(self) -> dict[str, object]:
        delta = self.delta
        return {
            "path": self.path,
            "plan": self.plan_id,
            "status": self.status,
            "base": fmt_amount(self.base),
            "head": fmt_amount(self.head),
            "delta": ("+" if delta > 0 else "") + fmt_amount(delta),
        }


def diff_costs(base: Mapping[str, PlanCost], head: Mapping[str, PlanCost]) -> list[CostChange]:
    """Compare plan costs by repository path: new, changed (any figure moved), removed."""
    changes: list[CostChange] = []
    for path in sorted(set(base) | set(head)):
        b, h = base.get(path), head.get(path)
        if b is None and h is not None:
            changes.append(CostChange(path, h.plan_id, "new", ZERO, h.money))
        elif h is None and b is not None:
            changes.append(CostChange(path, b.plan_id, "removed", b.money, ZERO))
        elif b is not None and h is not None:
            same = b.usage == h.usage and b.api_calls == h.api_calls
            status: Literal["changed", "unchanged"] = "unchanged" if same else "changed"
            changes.append(CostChange(path, h.plan_id, status, b.money, h.money))
    return changes
