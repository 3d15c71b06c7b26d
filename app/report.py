"""Render a check report as text, JSON (stable, versioned schema) or GitHub workflow commands.

Pure formatting: no decisions are made here. The JSON schema is documented in
docs/plan-format.md ("check output") and versioned by ``REPORT_VERSION``.
"""

from __future__ import annotations

import json
from typing import Any

from app.check import CheckReport

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
        return "\n".join(lines)
    return _render_text(report)


def _render_text(report: CheckReport) -> str:
    out: list[str] = []
    for lp in report.plans:
        out.append(
            f"ok    {lp.path}  {lp.plan.id}  ({len(lp.plan.steps)} steps, "
            f"{lp.plan.environment}, team {lp.plan.team})  {lp.digest}"
        )
    issues = report.all_issues
    for issue in issues:
        out.append(f"error {issue.render()}")
    plural = "s" if len(report.plans) != 1 else ""
    if issues:
        out.append(f"\n{len(issues)} error(s); {len(report.plans)} valid plan{plural}")
    else:
        out.append(f"\n{len(report.plans)} plan{plural} valid")
    return "\n".join(out)
