"""Decisions are values: a result tree with a reason per node, rendered by the CLI and app.

A ``Decision`` never denies without saying which rule denied: ``allowed`` is computed from the
trace (no ``deny`` entry and no blocking budget check, which itself adds a ``deny`` entry), so a
denial without a named rule cannot be constructed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from app.cost import BudgetVerdict, PlanCost
from app.policy.requirements import AnyOf, ApprovalRequirements, Requirement

__all__ = ["Decision", "Effect", "Risk", "RiskFactor", "RuleMatch"]

Effect = Literal["deny", "warn", "allow", "require", "exempt", "risk", "exclude"]


@dataclass(frozen=True, slots=True)
class RuleMatch:
    """One rule that matched: what it did, where it is written, and why (for people)."""

    rule: str
    kind: str
    effect: Effect
    source: str
    reason: str
    step: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "rule": self.rule,
            "kind": self.kind,
            "effect": self.effect,
            "source": self.source,
            "reason": self.reason,
            "step": self.step,
        }


@dataclass(frozen=True, slots=True)
class RiskFactor:
    name: str
    points: int
    detail: str


@dataclass(frozen=True, slots=True)
class Risk:
    score: int
    level: Literal["low", "medium", "high", "critical"]
    factors: tuple[RiskFactor, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {
            "score": self.score,
            "level": self.level,
            "factors": [
                {"name": f.name, "points": f.points, "detail": f.detail} for f in self.factors
            ],
        }


@dataclass(frozen=True)
class Decision:
    """The result of judging one plan (or one step, or one queue action) against a policy."""

    subject: str
    policy_digest: str
    trace: tuple[RuleMatch, ...] = ()
    risk: Risk | None = None
    approvals: ApprovalRequirements | None = None
    budget: BudgetVerdict | None = None
    cost: PlanCost | None = None
    step: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def denials(self) -> tuple[RuleMatch, ...]:
        return tuple(m for m in self.trace if m.effect == "deny")

    @property
    def warnings(self) -> tuple[RuleMatch, ...]:
        return tuple(m for m in self.trace if m.effect == "warn")

    @property
    def allowed(self) -> bool:
        return not self.denials

    @property
    def verdict(self) -> Literal["allow", "deny"]:
        return "allow" if self.allowed else "deny"

    def to_dict(self) -> dict[str, object]:
        return {
            "subject": self.subject,
            "step": self.step,
            "verdict": self.verdict,
            "policy_digest": self.policy_digest,
            "denials": [m.to_dict() for m in self.denials],
            "trace": [m.to_dict() for m in self.trace],
            "risk": self.risk.to_dict() if self.risk else None,
            "approvals": (
                self.approvals.model_dump(mode="json") if self.approvals is not None else None
            ),
            "budget": self.budget.to_dict() if self.budget is not None else None,
            "cost": self.cost.to_dict() if self.cost is not None else None,
        }


def describe_requirement(req: Requirement | AnyOf) -> str:
    """``2 approvals from teams platform, sre (from 2 different teams)`` and the like."""
    if isinstance(req, AnyOf):
        return "any one of: " + " | ".join(describe_requirement(r) for r in req.any_of)
    who: list[str] = []
    if req.users:
        who.append("users " + ", ".join(req.users))
    if req.teams:
        who.append("teams " + ", ".join(req.teams))
    text = f"{req.count} approval{'s' if req.count != 1 else ''} from "
    text += " or ".join(who) if who else f"anyone with {req.min_permission} permission"
    if req.distinct_teams > 1:
        text += f" (from {req.distinct_teams} different teams: dual authorization)"
    return text
