"""Actual usage against the plan's budget at run time: soft limits warn, hard limits stop.

The check happens *before* each step (the issue's "a hard limit acts before the next step"):
usage already spent cannot be unspent, but the next step must not start once a hard limit is
reached. What happens then is the plan's ``budget.on_hard_limit``: ``pause`` (resumable after a
new approval raises the budget) or ``abort`` (compensations run).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from app.execute.actions.base import Usage
from app.plan.model import Budget

__all__ = ["BudgetStatus", "BudgetTracker", "add_usage", "usage_from_dict", "usage_to_dict"]


def add_usage(a: Usage, b: Usage) -> Usage:
    return Usage(
        tokens_input=a.tokens_input + b.tokens_input,
        tokens_output=a.tokens_output + b.tokens_output,
        api_calls=a.api_calls + b.api_calls,
        runner_minutes=a.runner_minutes + b.runner_minutes,
        money=a.money + b.money,
        model=b.model or a.model,
    )


def usage_to_dict(u: Usage) -> dict[str, Any]:
    return {
        "tokens_input": u.tokens_input,
        "tokens_output": u.tokens_output,
        "api_calls": u.api_calls,
        "runner_minutes": u.runner_minutes,
        "money": str(u.money),
        "model": u.model,
    }


def usage_from_dict(d: dict[str, Any]) -> Usage:
    return Usage(
        tokens_input=int(d.get("tokens_input", 0)),
        tokens_output=int(d.get("tokens_output", 0)),
        api_calls=int(d.get("api_calls", 0)),
        runner_minutes=float(d.get("runner_minutes", 0.0)),
        money=Decimal(str(d.get("money", "0"))),
        model=d.get("model"),
    )


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    level: Literal["ok", "soft", "hard"]
    messages: tuple[str, ...] = ()


@dataclass
class BudgetTracker:
    budget: Budget
    used: Usage = field(default_factory=Usage)
    _warned: set[str] = field(default_factory=set)

    def record(self, usage: Usage) -> None:
        self.used = add_usage(self.used, usage)

    def _dimensions(self) -> list[tuple[str, float | Decimal, Any]]:
        u = self.used
        return [
            ("tokens", u.tokens_input + u.tokens_output, self.budget.tokens),
            ("money", u.money, self.budget.money),
            ("runner_minutes", u.runner_minutes, self.budget.runner_minutes),
        ]

    def status(self) -> BudgetStatus:
        hard: list[str] = []
        soft: list[str] = []
        for name, used, limit in self._dimensions():
            if limit is None:
                continue
            if limit.hard is not None and used >= limit.hard:
                hard.append(f"{name}: used {used} reached the hard limit {limit.hard}")
            elif limit.soft is not None and used >= limit.soft:
                soft.append(f"{name}: used {used} passed the soft limit {limit.soft}")
        if hard:
            return BudgetStatus("hard", tuple(hard))
        if soft:
            return BudgetStatus("soft", tuple(soft))
        return BudgetStatus("ok")

    def new_warnings(self) -> list[str]:
        """Soft-limit messages not reported yet (each dimension warns once per run)."""
        status = self.status()
        fresh = [m for m in status.messages if m.split(":")[0] not in self._warned]
        if status.level == "soft":
            self._warned.update(m.split(":")[0] for m in fresh)
            return fresh
        return []
