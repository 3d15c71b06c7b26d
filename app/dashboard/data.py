"""What the dashboard shows, computed from audit events (no I/O, no clock: ``now`` is passed).

The audit trail already records everything the dashboard needs: proposals and approvals
(pending plans), runs and steps (recent runs, failing steps), breakers, canaries and per-step
cost. Two things live elsewhere and come in through small Protocols: dead-lettered webhook
deliveries (the server's inbox) and, optionally, a live list of pending plans from GitHub.

Payload conventions read here (documented in docs/audit.md):
``run.finished`` → ``{"status": "succeeded"|"failed"|"aborted"|...}``;
``approval.recorded`` → ``{"status": "pending"|"approved"|"rejected", "have": n, "need": m}``;
``step.succeeded``/``step.failed`` → ``{"cost_usd": "0.42"}`` (actual cost of the step);
``breaker.opened``/``breaker.closed`` and canary events → ``{"service": ...}`` /
``{"metric": ..., "value": ..., "threshold": ...}``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Protocol

from app.audit.events import AuditEvent
from app.audit.render import RunSummary, run_summary

__all__ = [
    "BreakerView",
    "CanaryView",
    "CostPoint",
    "DashboardData",
    "DeadLetter",
    "DeadLetterSource",
    "FailingStep",
    "PendingPlan",
    "PendingPlanSource",
    "build_dashboard",
]


@dataclass(frozen=True, slots=True)
class PendingPlan:
    plan_id: str
    plan_digest: str | None
    team: str | None
    environment: str | None
    proposed_at: datetime
    proposed_by: str
    approval_status: str  # pending | approved | rejected | unknown
    approvals_have: int | None = None
    approvals_need: int | None = None
    pull_request: str | None = None  # e.g. "octo/ops#42"
    head_sha: str | None = None
    #: ``(check name, conclusion)`` of the pull request's latest evaluation, if known
    checks: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class DeadLetter:
    delivery_id: str
    event: str
    attempts: int
    last_error: str
    at: datetime


class DeadLetterSource(Protocol):
    """Dead-lettered deliveries, newest first (the server's inbox implements this)."""

    def dead_lettered(self, limit: int) -> Sequence[DeadLetter]: ...


class PendingPlanSource(Protocol):
    """Plans waiting for approval or merge, if a live source (GitHub) is wired in."""

    def pending_plans(self) -> Sequence[PendingPlan]: ...


@dataclass(frozen=True, slots=True)
class FailingStep:
    plan_id: str | None
    step: str
    failures: int
    last_failure: datetime
    last_error: str
    last_run: str


@dataclass(frozen=True, slots=True)
class BreakerView:
    service: str
    since: datetime
    run: str


@dataclass(frozen=True, slots=True)
class CanaryView:
    run: str
    plan_id: str | None
    environment: str | None
    outcome: str  # passed | aborted
    at: datetime
    detail: str


@dataclass(frozen=True, slots=True)
class CostPoint:
    day: date
    key: str  # the plan, team or environment
    usd: Decimal


@dataclass(frozen=True, slots=True)
class DashboardData:
    now: datetime
    pending: list[PendingPlan]
    runs: list[RunSummary]
    failing_steps: list[FailingStep]
    open_breakers: list[BreakerView]
    canaries: list[CanaryView]
    dead_letters: list[DeadLetter] | None  # None: no source connected
    cost_by: dict[str, list[CostPoint]] = field(default_factory=dict)  # plan / team / environment


def _money(value: object) -> Decimal:
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return Decimal(0)


def _pending_from_events(events: Sequence[AuditEvent]) -> list[PendingPlan]:
    proposed: dict[tuple[str, str | None], AuditEvent] = {}
    approvals: dict[tuple[str, str | None], AuditEvent] = {}
    started: set[tuple[str, str | None]] = set()
    for e in events:
        if not e.plan_id:
            continue
        key = (e.plan_id, e.plan_digest)
        if e.type == "plan.proposed":
            proposed[key] = e
        elif e.type == "approval.recorded":
            approvals[key] = e
        elif e.type == "run.started":
            started.add(key)
    out = []
    for key, e in proposed.items():
        if key in started:
            continue
        approval = approvals.get(key)
        p = approval.payload if approval else {}
        have, need = p.get("have"), p.get("need")
        out.append(
            PendingPlan(
                plan_id=e.plan_id or "?",
                plan_digest=e.plan_digest,
                team=e.team,
                environment=e.environment,
                proposed_at=e.timestamp,
                proposed_by=e.actor.id,
                approval_status=str(p.get("status", "pending")) if approval else "pending",
                approvals_have=have if isinstance(have, int) else None,
                approvals_need=need if isinstance(need, int) else None,
                pull_request=str(e.payload["pull_request"])
                if "pull_request" in e.payload
                else None,
            )
        )
    out.sort(key=lambda p: p.proposed_at, reverse=True)
    return out


def build_dashboard(
    events: Iterable[AuditEvent],
    *,
    now: datetime,
    days: int = 14,
    max_runs: int = 15,
    dead_letters: DeadLetterSource | None = None,
    pending_source: PendingPlanSource | None = None,
) -> DashboardData:
    """Everything on the main page, from the events of the last ``days`` days (chain order)."""
    events = list(events)
    by_run: dict[str, list[AuditEvent]] = defaultdict(list)
    failures: dict[tuple[str | None, str], list[AuditEvent]] = defaultdict(list)
    breakers: dict[str, AuditEvent] = {}
    canaries: list[CanaryView] = []
    cost: dict[str, dict[tuple[date, str], Decimal]] = {
        "plan": defaultdict(Decimal),
        "team": defaultdict(Decimal),
        "environment": defaultdict(Decimal),
    }
    for e in events:
        by_run[e.correlation_id].append(e)
        if e.type in ("step.failed", "compensation.failed") and e.step:
            failures[(e.plan_id, e.step)].append(e)
        elif e.type in ("breaker.opened", "breaker.closed"):
            service = str(e.payload.get("service", e.step or "?"))
            breakers[service] = e
        elif e.type in ("canary.passed", "canary.aborted"):
            detail = ", ".join(f"{k}={v}" for k, v in sorted(e.payload.items()))
            canaries.append(
                CanaryView(
                    run=e.correlation_id,
                    plan_id=e.plan_id,
                    environment=e.environment,
                    outcome=e.type.split(".", 1)[1],
                    at=e.timestamp,
                    detail=detail,
                )
            )
        if e.type in ("step.succeeded", "step.failed") and "cost_usd" in e.payload:
            usd = _money(e.payload["cost_usd"])
            day = e.timestamp.date()
            cost["plan"][(day, e.plan_id or "?")] += usd
            cost["team"][(day, e.team or "?")] += usd
            cost["environment"][(day, e.environment or "?")] += usd

    runs = [
        run_summary(evs) for evs in by_run.values() if any(e.type == "run.started" for e in evs)
    ]
    runs.sort(key=lambda r: r.started, reverse=True)
    failing = [
        FailingStep(
            plan_id=plan,
            step=step,
            failures=len(evs),
            last_failure=evs[-1].timestamp,
            last_error=str(evs[-1].payload.get("error", "")),
            last_run=evs[-1].correlation_id,
        )
        for (plan, step), evs in failures.items()
    ]
    failing.sort(key=lambda f: f.last_failure, reverse=True)
    open_breakers = [
        BreakerView(service=s, since=e.timestamp, run=e.correlation_id)
        for s, e in sorted(breakers.items())
        if e.type == "breaker.opened"
    ]
    canaries.sort(key=lambda c: c.at, reverse=True)
    start = (now - timedelta(days=days)).date()
    cost_by = {
        dim: sorted(
            (CostPoint(day, key, usd) for (day, key), usd in points.items() if day >= start),
            key=lambda p: (p.day, p.key),
        )
        for dim, points in cost.items()
    }
    pending = (
        list(pending_source.pending_plans()) if pending_source else _pending_from_events(events)
    )
    return DashboardData(
        now=now,
        pending=pending,
        runs=runs[:max_runs],
        failing_steps=failing[:20],
        open_breakers=open_breakers,
        canaries=canaries[:20],
        dead_letters=list(dead_letters.dead_lettered(20)) if dead_letters else None,
        cost_by=cost_by,
    )
