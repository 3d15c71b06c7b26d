"""Format a ``GateResult`` for people: the ``plangate/approval`` check run and the CLI.

Pure formatting: no decisions are made here (those are in ``app.approvals.gate``), nothing is
sent anywhere (the GitHub adapter posts ``CheckRunOutput``). Text that comes from a pull
request or a policy (paths, requirement ids and descriptions) is escaped, so a crafted file
name cannot inject links or break the table.

Conclusion mapping: ``success`` only when the gate is satisfied; the caller must additionally
hold back ``success`` until the signed attestation is stored (``conclusion(result,
attestation_stored=...)``). Everything else is ``action_required``: a person has to act
(approve, re-approve, dismiss) or the evaluation has to be retried.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Literal

from rich.console import Console
from rich.table import Table

from app.approvals.gate import (
    CountedApproval,
    GateResult,
    IgnoredReview,
    RequirementResult,
    short_sha,
)

__all__ = [
    "CHECK_NAME",
    "CheckRunOutput",
    "check_run_output",
    "conclusion",
    "gate_to_dict",
    "render_markdown",
    "render_text",
    "title",
]

CHECK_NAME = "plangate/approval"
#: GitHub rejects check run ``summary``/``text`` longer than 65535 characters
_MAX_CHARS = 65_535
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+!|~])")
_SAFE_URL = re.compile(r"^https://[^\s()<>\[\]]+$")

Conclusion = Literal["success", "action_required"]


@dataclass(frozen=True, slots=True)
class CheckRunOutput:
    """What the adapter sends as the check run's ``conclusion`` and ``output``."""

    name: str
    conclusion: Conclusion
    title: str
    summary: str
    text: str


def conclusion(result: GateResult, *, attestation_stored: bool = False) -> Conclusion:
    """``success`` only when satisfied *and* the attestation is stored; else ``action_required``."""
    return "success" if result.satisfied and attestation_stored else "action_required"


def title(result: GateResult) -> str:
    """One line for the check run title and the first line of the CLI output."""
    nodes = result.requirements
    done = sum(1 for n in nodes if n.satisfied)
    if result.errors:
        return "Approvals could not be evaluated (retrying)"
    if result.status == "rejected":
        who = ", ".join(f"@{r.login}" for r in result.rejections)
        return f"Changes requested by {who}"
    if result.status == "satisfied":
        if not nodes:
            return "No approval needed"
        return f"Approved: {done} of {len(nodes)} requirements satisfied"
    if result.blockers:
        return "Approval blocked"
    return f"Waiting for approval: {done} of {len(nodes)} requirements satisfied"


def _md(text: str) -> str:
    """Escape Markdown so text from a PR or a policy renders literally (one line, no links)."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(text.split()))


def _link(text: str, url: str) -> str:
    return f"[{_md(text)}]({url})" if _SAFE_URL.match(url) else _md(text)


def _approval_md(a: CountedApproval) -> str:
    where = short_sha(a.commit_id) + ("" if a.on_head else ", carried over")
    return f"@{_md(a.login)} ({_link('review', a.html_url)} on `{where}`)"


def _ignored_md(i: IgnoredReview) -> str:
    return f"{_link('review', i.html_url)}: {_md(i.reason)}"


def _icon(node: RequirementResult) -> str:
    if node.satisfied:
        return "✅"
    return "⏭️" if node.reason == "not needed" else "⏳"


def render_markdown(result: GateResult) -> str:
    """The check run summary: status, requirement table, what did not count, errors."""
    lines = [f"**{_md(result.reason)}**", ""]
    if result.errors:
        lines += ["### Could not evaluate", ""]
        lines += [f"- {_md(e.operation)}: {_md(e.message)} — {_md(e.hint)}" for e in result.errors]
        lines += ["", "The gate stays closed until the evaluation succeeds.", ""]
    if result.blockers:
        lines += [f"- ⛔ {_md(b)}" for b in result.blockers] + [""]
    if result.rejections:
        lines += ["### Changes requested", ""]
        for r in result.rejections:
            reqs = ", ".join(f"`{_md(x)}`" for x in r.requirements)
            lines.append(
                f"- @{_md(r.login)} ({_link('review', r.html_url)} on `{short_sha(r.commit_id)}`)"
                f" could approve {reqs}: they must approve, or the review must be dismissed"
            )
        lines.append("")
    if result.requirements:
        lines += [
            "| | Requirement | Who can approve | Approved by | Still needed |",
            "|---|---|---|---|---|",
        ]
        for node in result.requirements:
            lines.append(_md_row(node, ""))
            for child in node.children:
                lines.append(_md_row(child, "↳ "))
        lines.append("")
    if result.ignored:
        lines += ["### Not counted", ""]
        lines += [f"- {_ignored_md(i)}" for i in result.ignored]
        lines.append("")
    judged = (
        f"Head `{short_sha(result.head_sha)}`, base `{_md(result.base_ref or '?')}` at "
        f"`{short_sha(result.base_sha)}`; requirements come from the base branch's policy."
    )
    lines.append(judged)
    return _truncate("\n".join(lines))


def _md_row(node: RequirementResult, prefix: str) -> str:
    name = f"{prefix}`{_md(node.id)}`"
    if node.description:
        name += f" {_md(node.description)}"
    if node.kind == "any_of":
        name += " (any one of)"
    counted = ", ".join(_approval_md(a) for a in node.counted) or "—"
    still = _md(node.still_needed) if node.still_needed else "—"
    return f"| {_icon(node)} | {name} | {_md(node.who_can)} | {counted} | {still} |"


def _truncate(text: str) -> str:
    if len(text) <= _MAX_CHARS:
        return text
    note = "\n\n… (truncated: run `plangate explain` for the full table)"
    return text[: _MAX_CHARS - len(note)] + note


def check_run_output(result: GateResult, *, attestation_stored: bool = False) -> CheckRunOutput:
    """Everything the adapter needs for the ``plangate/approval`` check run."""
    concl = conclusion(result, attestation_stored=attestation_stored)
    summary = render_markdown(result)
    if result.satisfied and not attestation_stored:
        summary = "Approval attestation not stored yet.\n\n" + summary
    return CheckRunOutput(
        name=CHECK_NAME,
        conclusion=concl,
        title=title(result),
        summary=_truncate(summary),
        text="",
    )


def render_text(result: GateResult, *, width: int = 120) -> str:
    """Plain text (no colour, no markup) for ``plangate explain --approved-by``."""
    buf = io.StringIO()
    console = Console(file=buf, width=width, color_system=None, highlight=False, markup=False)
    console.print(f"{result.status.upper()}: {result.reason}")
    for error in result.errors:
        console.print(f"error: {error.operation}: {error.message} ({error.hint})")
    for blocker in result.blockers:
        console.print(f"blocked: {blocker}")
    for r in result.rejections:
        console.print(f"changes requested by @{r.login} on {short_sha(r.commit_id)}")
    if result.requirements:
        table = Table(show_lines=False, box=None, pad_edge=False, header_style="")
        for column in ("", "requirement", "who can approve", "approved by", "still needed"):
            table.add_column(column, overflow="fold")
        for node in result.requirements:
            table.add_row(*_text_row(node, ""))
            for child in node.children:
                table.add_row(*_text_row(child, "  - "))
        console.print(table)
    for ignored in result.ignored:
        console.print(f"not counted: {ignored.reason}")
    return buf.getvalue()


def _text_row(node: RequirementResult, prefix: str) -> tuple[str, ...]:
    mark = "ok" if node.satisfied else ("n/a" if node.reason == "not needed" else "--")
    name = prefix + node.id + (" (any one of)" if node.kind == "any_of" else "")
    counted = ", ".join(f"@{a.login} ({short_sha(a.commit_id)})" for a in node.counted) or "-"
    return (mark, name, node.who_can, counted, node.still_needed or "-")


def gate_to_dict(result: GateResult) -> dict[str, object]:
    """JSON-friendly form (``plangate explain --format json``, logs, the dashboard)."""

    def node(n: RequirementResult) -> dict[str, object]:
        return {
            "id": n.id,
            "kind": n.kind,
            "satisfied": n.satisfied,
            "needed": n.needed,
            "who_can": n.who_can,
            "candidates": list(n.candidates),
            "counted": [approval(a) for a in n.counted],
            "still_needed": n.still_needed,
            "reason": n.reason,
            "source": n.source,
            "children": [node(c) for c in n.children],
        }

    def approval(a: CountedApproval) -> dict[str, object]:
        return {
            "login": a.login,
            "review_id": a.review_id,
            "commit": a.commit_id,
            "submitted_at": a.submitted_at.isoformat() if a.submitted_at else None,
            "url": a.html_url,
            "requirement": a.requirement,
            "on_head": a.on_head,
        }

    return {
        "status": result.status,
        "satisfied": result.satisfied,
        "reason": result.reason,
        "evaluated_at": result.evaluated_at.isoformat(),
        "author": result.author,
        "head_sha": result.head_sha,
        "base_ref": result.base_ref,
        "base_sha": result.base_sha,
        "requirements": [node(n) for n in result.requirements],
        "ignored": [
            {
                "login": i.login,
                "review_id": i.review_id,
                "commit": i.commit_id,
                "state": i.state,
                "code": i.code,
                "reason": i.reason,
            }
            for i in result.ignored
        ],
        "rejections": [
            {
                "login": r.login,
                "review_id": r.review_id,
                "commit": r.commit_id,
                "requirements": list(r.requirements),
            }
            for r in result.rejections
        ],
        "errors": [
            {"operation": e.operation, "message": e.message, "hint": e.hint} for e in result.errors
        ],
        "blockers": list(result.blockers),
    }
