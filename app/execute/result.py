"""What a run produced: per-step outcomes, compensations, and the manual rollback runbook.

These are plain values: the runner builds them, the CLI (and later the check run) only renders
them. A failed compensation is a first-class outcome (``compensation_failed``) whose runbook names
every step that is done, every undo still owed, and the exact command or inputs to perform it.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "CompensationOutcome",
    "RunResult",
    "RunStatus",
    "Runbook",
    "RunbookEntry",
    "StepOutcome",
    "StepStatus",
    "manual_command",
]

#: how a run ended
RunStatus = Literal[
    "succeeded",  # every step succeeded
    "compensated",  # a step failed for good; every owed compensation ran
    "aborted",  # canary, budget or policy abort; every owed compensation ran
    "compensation_failed",  # an undo failed: the chain stopped, see the runbook
    "paused",  # budget hard limit with on_hard_limit: pause, or an open circuit breaker
    "needs_attention",  # an interrupted non-idempotent step: a human decides
    "refused",  # no verified approval (or locks busy): nothing mutating ran
    "cancelled",  # cancelled through `plangate cancel` (queue ownership): final until --restart
    "dry_run",
]

StepStatus = Literal[
    "succeeded",
    "skipped",  # already completed by an earlier invocation of the same plan digest
    "failed",
    "blocked",  # not started: paused (breaker/budget) or held back by a failure
    "not_run",
    "interrupted",  # an earlier attempt started and never finished
]


@dataclass(slots=True)
class StepOutcome:
    step_id: str
    status: StepStatus = "not_run"
    attempts: int = 0
    error: str | None = None
    error_kind: str | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    started_at: float | None = None
    finished_at: float | None = None
    retries: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step_id,
            "status": self.status,
            "attempts": self.attempts,
            "error": self.error,
            "error_kind": self.error_kind,
        }


@dataclass(frozen=True, slots=True)
class CompensationOutcome:
    step_id: str
    status: Literal["succeeded", "failed", "no_undo", "skipped"]
    action: str | None = None
    attempts: int = 0
    error: str | None = None
    #: for ``no_undo``: the plan's reason why the step cannot be undone
    note: str | None = None


@dataclass(frozen=True, slots=True)
class RunbookEntry:
    """One compensation a human still has to perform (or verify), with exact inputs."""

    step_id: str
    action: str
    inputs: dict[str, Any]
    command: str
    note: str | None = None


def manual_command(action: str, inputs: dict[str, Any]) -> str:
    """The exact command a human runs to perform ``action`` with ``inputs`` by hand.

    ``shell`` becomes its argv quoted for a POSIX shell; ``http`` a ``curl`` line (secret
    headers are named, never filled in); anything else the action name with JSON inputs.
    """
    if action == "shell" and isinstance(inputs.get("run"), list):
        prefix = " ".join(
            f"{k}={shlex.quote(str(v))}" for k, v in (inputs.get("env") or {}).items()
        )
        argv = shlex.join(str(a) for a in inputs["run"])
        cwd = inputs.get("cwd")
        line = f"{prefix} {argv}".strip()
        return f"(cd {shlex.quote(cwd)} && {line})" if cwd else line
    if action == "http" and isinstance(inputs.get("url"), str):
        parts = ["curl", "-X", str(inputs.get("method", "GET"))]
        for name, value in (inputs.get("headers") or {}).items():
            parts += ["-H", f"{name}: {value}"]
        for name, secret in (inputs.get("secret_headers") or {}).items():
            parts += ["-H", f"{name}: ${secret}"]
        if inputs.get("json") is not None:
            parts += ["-H", "Content-Type: application/json", "--data", json.dumps(inputs["json"])]
        elif inputs.get("body") is not None:
            parts += ["--data", str(inputs["body"])]
        parts.append(inputs["url"])
        return shlex.join(parts)
    return f"{action} {json.dumps(inputs, sort_keys=True, default=str)}"


@dataclass(frozen=True, slots=True)
class Runbook:
    """The manual rollback path surfaced when the saga cannot finish by itself."""

    plan_id: str
    plan_digest: str
    run_id: str
    reason: str
    done_steps: tuple[str, ...]
    compensated: tuple[str, ...]
    failed: RunbookEntry | None
    remaining: tuple[RunbookEntry, ...]

    def render(self) -> str:
        lines = [
            f"# Manual rollback: plan {self.plan_id} (run {self.run_id})",
            "",
            f"Plan digest: {self.plan_digest}",
            f"Why: {self.reason}",
            "",
            "Steps that completed (their effects are live unless compensated below): "
            + (", ".join(self.done_steps) or "none"),
            "Already compensated: " + (", ".join(self.compensated) or "none"),
            "",
        ]
        entries = ([self.failed] if self.failed else []) + list(self.remaining)
        if entries:
            lines.append("Undo these by hand, in this order (most recent first):")
            for n, entry in enumerate(entries, 1):
                label = " (this compensation failed)" if entry is self.failed else ""
                lines.append(f"{n}. step '{entry.step_id}' via {entry.action}{label}:")
                lines.append(f"   $ {entry.command}")
                if entry.note:
                    lines.append(f"   note: {entry.note}")
        else:
            lines.append("Nothing left to undo.")
        lines += [
            "",
            "Then record what you did in the incident and see docs/runbooks.md "
            "('A compensation failed').",
        ]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        def entry(e: RunbookEntry) -> dict[str, Any]:
            return {"step": e.step_id, "action": e.action, "inputs": e.inputs, "command": e.command}

        return {
            "reason": self.reason,
            "done_steps": list(self.done_steps),
            "compensated": list(self.compensated),
            "failed": entry(self.failed) if self.failed else None,
            "remaining": [entry(e) for e in self.remaining],
        }


@dataclass(slots=True)
class RunResult:
    plan_id: str
    plan_digest: str
    run_id: str
    status: RunStatus
    reason: str = ""
    steps: dict[str, StepOutcome] = field(default_factory=dict)
    compensations: list[CompensationOutcome] = field(default_factory=list)
    runbook: Runbook | None = None
    incident: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    resumed: bool = False

    @property
    def ok(self) -> bool:
        return self.status in ("succeeded", "dry_run")

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan_id,
            "digest": self.plan_digest,
            "run_id": self.run_id,
            "status": self.status,
            "reason": self.reason,
            "resumed": self.resumed,
            "steps": [s.to_dict() for s in self.steps.values()],
            "compensations": [
                {"step": c.step_id, "status": c.status, "error": c.error, "note": c.note}
                for c in self.compensations
            ],
            "runbook": self.runbook.to_dict() if self.runbook else None,
            "incident": self.incident,
            "usage": self.usage,
            "warnings": self.warnings,
        }
