"""Render a check report as text, JSON (stable, versioned schema) or GitHub workflow commands.

Pure formatting: no decisions are made here. The JSON schema is documented in
docs/plan-format.md ("check output") and versioned by ``REPORT_VERSION``.
"""

from __future__ import annotations

import io
import json
from typing import Any

from rich.console import Console
from rich.table import Table

from app.check import CheckReport
from app.cost import Usage, fmt_amount, totals_by
from app.policy.decision import Decision, describe_requirement

__all__ = ["REPORT_VERSION", "render", "report_dict"]

REPORT_VERSION = 1


def report_dict(report: CheckReport) -> dict[str, Any]:
    issues = report.all_issues
    return {
        "version": REPORT_VERSION,
        "ok": report.exit_code == 0,
        "exit_code": report.exit_code,
        "summary": {
            "files": len(report.files),
            "plans": len(report.plans),
            "errors": len(issues),
        },
        "plans": [
            {
                "path": lp.path,
                "id": lp.plan.id,
                "title": lp.plan.title,
                "team": lp.plan.team,
                "environment": lp.plan.environment,
                "steps": len(lp.plan.steps),
                "digest": lp.digest,
            }
            for lp in report.plans
        ],
        "errors": [i.to_dict() for i in issues],
        "policy": _policy_dict(report),
        "cost": _cost_dict(report),
    }


def _policy_dict(report: CheckReport) -> dict[str, Any] | None:
    if report.policy is None:
        return None
    return {
        "digest": report.policy.digest,
        "origin": report.policy.origin,
        "base_ref": report.base_ref,
        "denied": report.denied,
        "decisions": [{"path": path, **d.to_dict()} for path, d in report.decisions.items()],
        "changes": (
            None if report.policy_changes is None else [c.to_dict() for c in report.policy_changes]
        ),
    }


def _usage(u: Usage) -> dict[str, Any]:
    return {
        "money": fmt_amount(u.money),
        "tokens": u.tokens,
        "runner_minutes": fmt_amount(u.runner_minutes),
    }


def _cost_dict(report: CheckReport) -> dict[str, Any] | None:
    if report.policy is None:
        return None
    costs = [d.cost for d in report.decisions.values() if d.cost is not None]
    prices = report.policy.document.prices
    return {
        "currency": prices.currency if prices else None,
        "plans": [
            {"path": path, **d.cost.to_dict()}
            for path, d in report.decisions.items()
            if d.cost is not None
        ],
        "by_team": {k: _usage(v) for k, v in totals_by(costs, "team").items()},
        "by_environment": {k: _usage(v) for k, v in totals_by(costs, "environment").items()},
        "diff": (
            None if report.cost_changes is None else [c.to_dict() for c in report.cost_changes]
        ),
    }


def _escape_data(text: str) -> str:
    # https://github.com/actions/toolkit/blob/main/packages/core/src/command.ts (escapeData)
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def render(report: CheckReport, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(report_dict(report), indent=2, sort_keys=False)
    if fmt == "github":
        lines = []
        for issue in report.all_issues:
            props = [f"file={_escape_property(issue.path)}"]
            if issue.line is not None:
                props.append(f"line={issue.line}")
            if issue.col is not None:
                props.append(f"col={issue.col}")
            props.append(f"title={_escape_property('plangate: ' + issue.code)}")
            message = issue.message + (f" ({issue.hint})" if issue.hint else "")
            lines.append(f"::error {','.join(props)}::{_escape_data(message)}")
        for lp in report.plans:
            lines.append(
                f"::notice file={_escape_property(lp.path)}::plan {lp.plan.id} {lp.digest}"
            )
            decision = report.decisions.get(lp.path)
            for m in decision.trace if decision is not None else ():
                if m.effect not in ("deny", "warn"):
                    continue
                level = "error" if m.effect == "deny" else "warning"
                title = _escape_property(f"plangate policy: {m.rule}")
                step = f"step '{m.step}': " if m.step else ""
                lines.append(
                    f"::{level} file={_escape_property(lp.path)},title={title}::"
                    f"{_escape_data(step + m.reason + ' (' + m.source + ')')}"
                )
        return "\n".join(lines)
    return _render_text(report)


def _render_text(report: CheckReport) -> str:
    out: list[str] = []
    for lp in report.plans:
        decision = report.decisions.get(lp.path)
        status = "deny " if decision is not None and not decision.allowed else "ok   "
        out.append(
            f"{status} {lp.path}  {lp.plan.id}  ({len(lp.plan.steps)} steps, "
            f"{lp.plan.environment}, team {lp.plan.team})  {lp.digest}"
        )
        for m in decision.trace if decision is not None else ():
            if m.effect in ("deny", "warn"):
                step = f" step '{m.step}':" if m.step else ""
                out.append(f"  {m.effect:<5} {m.rule} ({m.source}):{step} {m.reason}")
    issues = report.all_issues
    for issue in issues:
        out.append(f"error {issue.render()}")
    if report.decisions:
        out.append(_table(report))
    plural = "s" if len(report.plans) != 1 else ""
    if issues:
        out.append(f"\n{len(issues)} error(s); {len(report.plans)} valid plan{plural}")
    else:
        out.append(f"\n{len(report.plans)} plan{plural} valid")
        if report.decisions:
            denied = len(report.denied)
            out.append(
                f"policy: {len(report.decisions) - denied} allowed, {denied} denied "
                f"(policy {report.policy.origin if report.policy else '?'} "
                f"{report.policy.digest if report.policy else ''})"
            )
    return "\n".join(out)


def _render_rich(*tables: Table) -> str:
    buffer = io.StringIO()
    console = Console(file=buffer, width=140, color_system=None, force_terminal=False)
    for table in tables:
        console.print(table)
    return buffer.getvalue().rstrip("\n")


def approvals_summary(decision: Decision) -> str:
    if decision.approvals is None:
        return ""
    return "; ".join(f"{r.id}: {describe_requirement(r)}" for r in decision.approvals.all_of)


def _table(report: CheckReport) -> str:
    table = Table(title="policy and cost", title_justify="left")
    for col in ("plan", "verdict", "risk", "cost", "budget", "approvals required"):
        table.add_column(col, overflow="fold")
    currency = ""
    if report.policy is not None and report.policy.document.prices is not None:
        currency = report.policy.document.prices.currency
    for path, d in report.decisions.items():
        risk = f"{d.risk.level} ({d.risk.score})" if d.risk else ""
        cost = f"{fmt_amount(d.cost.money)} {currency}" if d.cost else ""
        budget = d.budget.verdict if d.budget else ""
        table.add_row(path, d.verdict, risk, cost, budget, approvals_summary(d))
    tables = [table]
    if report.cost_changes is not None:
        diff = Table(title=f"cost against {report.base_ref}", title_justify="left")
        for col in ("plan file", "status", "base", "head", "delta"):
            diff.add_column(col)
        for c in report.cost_changes:
            row = c.to_dict()
            diff.add_row(c.path, c.status, str(row["base"]), str(row["head"]), str(row["delta"]))
        tables.append(diff)
    if report.policy_changes:
        changes = Table(
            title="policy changes in this pull request (judged by the base policy until merged)",
            title_justify="left",
        )
        for col in ("status", "entry", "where"):
            changes.add_column(col)
        for ch in report.policy_changes:
            changes.add_row(
                ch.status, f"{ch.section}/{ch.name}", ch.head_source or ch.base_source or ""
            )
        tables.append(changes)
    return _render_rich(*tables)
