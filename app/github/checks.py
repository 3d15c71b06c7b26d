"""Check-run output, rendered purely from results: titles, Markdown summaries, annotations.

GitHub's limits (https://docs.github.com/en/rest/checks/runs): at most 50 annotations per
request (more are sent as further updates, which GitHub appends), and ``summary``/``text`` of at
most 65,535 characters each (we cut below that, on a line boundary, and point at the full report).
Nothing here does I/O; ``check_run_requests`` returns the request bodies to send.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from app.check import FileResult
from app.errors import Issue

__all__ = [
    "ANNOTATIONS_PER_REQUEST",
    "CHECK_NAMES",
    "MAX_TEXT",
    "Annotation",
    "CheckOutcome",
    "check_run_requests",
    "failed_outcome",
    "no_plans_outcome",
    "render_validate",
    "truncate",
]

CHECK_NAMES = ("plangate/validate", "plangate/policy", "plangate/cost", "plangate/approval")
ANNOTATIONS_PER_REQUEST = 50
#: GitHub rejects more than 65,535 characters; keep a margin for the truncation notice
MAX_TEXT = 65_000

Conclusion = Literal[
    "success", "failure", "neutral", "skipped", "action_required", "cancelled", "timed_out"
]
Level = Literal["notice", "warning", "failure"]


@dataclass(frozen=True, slots=True)
class Annotation:
    path: str
    start_line: int
    message: str
    level: Level = "failure"
    title: str | None = None
    end_line: int | None = None

    def to_api(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "path": self.path,
            "start_line": self.start_line,
            "end_line": self.end_line or self.start_line,
            "annotation_level": self.level,
            "message": truncate(self.message, 4000),
        }
        if self.title:
            body["title"] = self.title[:255]
        return body

    @classmethod
    def from_issue(cls, issue: Issue, *, level: Level = "failure") -> Annotation:
        return cls(
            path=issue.path,
            start_line=issue.line or 1,
            message=issue.message + (f"\n\nHint: {issue.hint}" if issue.hint else ""),
            level=level,
            title=issue.code,
        )


@dataclass(frozen=True, slots=True)
class CheckOutcome:
    """What one check run should say. ``title`` states the verdict in words."""

    name: str
    conclusion: Conclusion
    title: str
    summary: str
    text: str = ""
    annotations: tuple[Annotation, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.title:
            raise ValueError("a check outcome needs a title that states the verdict")


def truncate(text: str, limit: int = MAX_TEXT, *, pointer: str | None = None) -> str:
    """``text`` cut to at most ``limit`` characters, on a line boundary, with a notice."""
    if len(text) <= limit:
        return text
    notice = "\n\n… truncated."
    if pointer:
        notice += f" Full report: {pointer}"
    cut = text[: max(0, limit - len(notice))]
    if "\n" in cut:
        cut = cut[: cut.rfind("\n")]
    return (cut + notice)[:limit]


def check_run_requests(
    outcome: CheckOutcome,
    *,
    head_sha: str,
    details_url: str | None = None,
    external_id: str | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(body for create/update, [bodies for further updates])`` for one completed check run.

    The first body carries the first 50 annotations; each further body carries the next 50
    (GitHub appends annotations on update). Valid for both ``checks/create`` and ``checks/update``
    except ``head_sha``, which ``update`` ignores and we drop there.
    """
    pointer = details_url or "run `plangate check` on the branch"
    output: dict[str, Any] = {
        "title": outcome.title[:255],
        "summary": truncate(outcome.summary, pointer=pointer),
    }
    if outcome.text:
        output["text"] = truncate(outcome.text, pointer=pointer)
    batches = [
        [a.to_api() for a in outcome.annotations[i : i + ANNOTATIONS_PER_REQUEST]]
        for i in range(0, len(outcome.annotations), ANNOTATIONS_PER_REQUEST)
    ]
    first: dict[str, Any] = {
        "name": outcome.name,
        "head_sha": head_sha,
        "status": "completed",
        "conclusion": outcome.conclusion,
        "output": {**output, **({"annotations": batches[0]} if batches else {})},
    }
    if details_url:
        first["details_url"] = details_url
    if external_id:
        first["external_id"] = external_id[:255]
    more = [
        {"output": {"title": output["title"], "summary": output["summary"], "annotations": b}}
        for b in batches[1:]
    ]
    return first, more


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_validate(files: Sequence[FileResult], *, removed: Iterable[str] = ()) -> CheckOutcome:
    """``plangate/validate``: one row per plan file with its digest, or its errors annotated."""
    invalid = [f for f in files if f.issues]
    removed = list(removed)
    rows = ["| plan | id | steps | digest | result |", "|---|---|---|---|---|"]
    for f in files:
        if f.plan is not None and not f.issues:
            plan = f.plan.plan
            rows.append(
                f"| `{_md_escape(f.path)}` | `{_md_escape(plan.id)}` | {len(plan.steps)} "
                f"| `{f.plan.digest}` | valid |"
            )
        else:
            rows.append(f"| `{_md_escape(f.path)}` | | | | {len(f.issues)} error(s) |")
    for path in removed:
        rows.append(f"| `{_md_escape(path)}` | | | | removed |")
    annotations = tuple(Annotation.from_issue(i) for f in invalid for i in f.issues)
    if invalid:
        n = sum(len(f.issues) for f in invalid)
        title = f"{n} error(s) in {len(invalid)} of {len(files)} plan file(s)"
        details = "\n".join(f"- `{i.location()}`: {i.message}" for f in invalid for i in f.issues)
        summary = "\n".join(rows) + "\n\n### Errors\n\n" + details
        return CheckOutcome("plangate/validate", "failure", title, summary, annotations=annotations)
    title = f"{len(files)} plan file(s) valid"
    return CheckOutcome("plangate/validate", "success", title, "\n".join(rows))


def no_plans_outcome(name: str) -> CheckOutcome:
    """A pull request that changes no plan: nothing to check (neutral passes required checks)."""
    return CheckOutcome(
        name,
        "neutral",
        "No plan files changed",
        "This pull request does not add or change files under `plans/`; nothing to check.",
    )


def failed_outcome(name: str, title: str, detail: str) -> CheckOutcome:
    """Fail closed: an evaluation that could not run is a failing check, never a passing one."""
    return CheckOutcome(name, "failure", title, detail)
