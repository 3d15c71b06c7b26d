"""Rendering audit events for people (rich tables) and machines (JSON values). No I/O.

The CLI prints these; the dashboard reuses ``run_summary``. Payloads are shown compactly and
cut, never interpreted: the stored event is the record, this is only a view of it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rich.table import Table

from app.audit.events import AuditEvent, VerifyResult

__all__ = ["RunSummary", "events_table", "run_summary", "timeline_table", "verify_json"]

_MAX_PAYLOAD = 60


def _short_payload(payload: dict[str, Any]) -> str:
    if not payload:
        return ""
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return text if len(text) <= _MAX_PAYLOAD else text[: _MAX_PAYLOAD - 1] + "…"


def _time(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S")


def events_table(events: Sequence[AuditEvent], *, title: str | None = None) -> Table:
    table = Table(title=title, show_lines=False, header_style="bold")
    for name in ("seq", "time (UTC)", "event", "actor", "run", "plan", "step", "env", "payload"):
        table.add_column(name, overflow="fold", justify="right" if name == "seq" else "left")
    for e in events:
        table.add_row(
            str(e.seq),
            _time(e.timestamp),
            e.type,
            str(e.actor),
            e.correlation_id,
            e.plan_id or "",
            e.step or "",
            e.environment or "",
            _short_payload(e.payload),
        )
    return table


@dataclass(frozen=True, slots=True)
class RunSummary:
    """One plan run as seen in the audit trail."""

    correlation_id: str
    plan_id: str | None
    plan_digest: str | None
    team: str | None
    environment: str | None
    started: datetime
    last: datetime
    status: str
    events: int
    failed_steps: tuple[str, ...]

    @property
    def duration_seconds(self) -> float:
        return (self.last - self.started).total_seconds()

    def to_dict(self) -> dict[str, Any]:
        return {
            "correlation_id": self.correlation_id,
            "plan_id": self.plan_id,
            "plan_digest": self.plan_digest,
            "team": self.team,
            "environment": self.environment,
            "started": self.started.isoformat().replace("+00:00", "Z"),
            "last": self.last.isoformat().replace("+00:00", "Z"),
            "duration_seconds": self.duration_seconds,
            "status": self.status,
            "events": self.events,
            "failed_steps": list(self.failed_steps),
        }


def run_summary(events: Sequence[AuditEvent]) -> RunSummary:
    """Summarise the events of one run (non-empty, chain order)."""
    first = events[0]
    status = "running"
    failed: list[str] = []
    for e in events:
        if e.type == "run.finished":
            status = str(e.payload.get("status", "finished"))
        elif e.type == "canary.aborted" and status == "running":
            status = "aborted"
        if e.type in ("step.failed", "compensation.failed") and e.step and e.step not in failed:
            failed.append(e.step)
    plan = next((e for e in events if e.plan_id), first)
    return RunSummary(
        correlation_id=first.correlation_id,
        plan_id=plan.plan_id,
        plan_digest=plan.plan_digest,
        team=plan.team,
        environment=plan.environment,
        started=first.timestamp,
        last=events[-1].timestamp,
        status=status,
        events=len(events),
        failed_steps=tuple(failed),
    )


def timeline_table(events: Sequence[AuditEvent]) -> Table:
    start = events[0].timestamp
    table = Table(header_style="bold")
    for name in ("seq", "+time", "event", "step", "actor", "payload"):
        table.add_column(
            name, overflow="fold", justify="right" if name in ("seq", "+time") else "left"
        )
    for e in events:
        offset = (e.timestamp - start).total_seconds()
        table.add_row(
            str(e.seq),
            f"+{offset:.1f}s",
            e.type,
            e.step or "",
            str(e.actor),
            _short_payload(e.payload),
        )
    return table


def verify_json(result: VerifyResult, *, tip: str | None, commits: int) -> dict[str, Any]:
    brk = result.first_break
    return {
        "ok": result.ok,
        "events": result.count,
        "commits": commits,
        "tip": tip,
        "head": {"seq": result.head.seq, "hash": result.head.hash},
        "first_break": None
        if brk is None
        else {"seq": brk.seq, "where": brk.where, "reason": brk.reason},
    }
