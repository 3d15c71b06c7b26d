"""One error hierarchy for Plangate.

Every error a user can cause is a ``PlangateError`` whose ``diagnostics()`` says what happened
and what to do next. Only ``app.cli`` maps errors to exit codes; core code raises, never exits.
A policy or budget *denial* is a returned decision value, not an exception.

    PlangateError
    ├── InputError                 bad user input (exit 2)
    │   ├── PlanError              a plan file is invalid (carries every Issue found)
    │   └── PolicyLoadError        a policy file is missing or invalid (fail closed)
    ├── AttestationError           an approval attestation is missing, invalid or untrusted
    ├── GitHubError                talking to GitHub failed
    │   ├── RateLimited            primary or secondary rate limit, with retry_after
    │   └── GitHubUnavailable      5xx / network failure
    ├── StepFailed                 a plan step failed (``retryable`` decides retries)
    └── CompensationFailed         an undo failed: a first-class, surfaced failure
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "AttestationError",
    "CompensationFailed",
    "GitHubError",
    "GitHubUnavailable",
    "InputError",
    "Issue",
    "PlanError",
    "PlangateError",
    "PolicyLoadError",
    "RateLimited",
    "StepFailed",
]


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem found in an input file, located as precisely as we can.

    ``code`` is a stable machine-readable identifier (documented in docs/plan-format.md);
    ``message`` is for people and already names the step and field where there is one.
    """

    path: str
    message: str
    code: str
    line: int | None = None
    col: int | None = None
    step: str | None = None
    field: str | None = None
    hint: str | None = None

    def location(self) -> str:
        """``path:line:col`` (as much of it as is known)."""
        loc = self.path
        if self.line is not None:
            loc += f":{self.line}"
            if self.col is not None:
                loc += f":{self.col}"
        return loc

    def render(self) -> str:
        text = f"{self.location()}: {self.message}"
        if self.hint:
            text += f" ({self.hint})"
        return text

    def to_dict(self) -> dict[str, object]:
        return {
            "path": self.path,
            "line": self.line,
            "col": self.col,
            "step": self.step,
            "field": self.field,
            "code": self.code,
            "message": self.message,
            "hint": self.hint,
        }


class PlangateError(Exception):
    """Base of every error Plangate raises on purpose."""

    #: what the user should do next; subclasses override or pass ``hint=``
    default_hint: str = "see the message above"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint or self.default_hint

    def diagnostics(self) -> str:
        """What happened and what to do next, for people."""
        return f"{self.message}\n\nWhat to do: {self.hint}"


class InputError(PlangateError):
    """Bad input a user can fix (exit code 2)."""

    default_hint = "fix the input named above and run the command again"


class PlanError(InputError):
    """A plan file (or set of files) is invalid. Carries every issue found, not just the first."""

    default_hint = "fix each location listed; `plangate schema` prints the plan format"

    def __init__(self, issues: list[Issue], *, hint: str | None = None) -> None:
        if not issues:
            raise ValueError("PlanError needs at least one issue")
        self.issues = list(issues)
        super().__init__("\n".join(i.render() for i in self.issues), hint=hint)


class PolicyLoadError(InputError):
    """Policies are missing or invalid. Plangate fails closed: no policy never means allow."""

    default_hint = "fix the policy file on the base branch; until then every plan is denied"

    def __init__(self, issues: list[Issue] | str, *, hint: str | None = None) -> None:
        if isinstance(issues, str):
            self.issues: list[Issue] = []
            super().__init__(issues, hint=hint)
        else:
            self.issues = list(issues)
            super().__init__("\n".join(i.render() for i in self.issues), hint=hint)


class AttestationError(PlangateError):
    """An approval attestation is missing, malformed, tampered with, expired or untrusted."""

    default_hint = (
        "get the plan approved again on its pull request; the executor refuses to mutate "
        "anything without a valid attestation for this exact plan digest"
    )

    def __init__(self, message: str, *, check: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        #: name of the verification check that failed (e.g. ``signature``, ``digest``)
        self.check = check


class GitHubError(PlangateError):
    """A GitHub API call failed."""

    default_hint = "check GitHub's status and the App's permissions; the call is retried"

    def __init__(self, message: str, *, status: int | None = None, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.status = status


class RateLimited(GitHubError):
    """GitHub asked us to slow down (primary or secondary rate limit)."""

    default_hint = "wait; Plangate retries after the time GitHub asked for"

    def __init__(self, message: str, *, retry_after: float, status: int | None = None):
        super().__init__(message, status=status)
        self.retry_after = retry_after


class GitHubUnavailable(GitHubError):
    """GitHub answered 5xx or could not be reached."""


class StepFailed(PlangateError):
    """A step failed. ``retryable`` (decided by the action, never by parsing text) drives retry."""

    default_hint = "read the step output in the run record; fix the cause and retry the run"

    def __init__(
        self,
        message: str,
        *,
        step: str,
        kind: str = "error",
        retryable: bool = True,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.step = step
        #: error kind matched against a retry policy's ``non_retryable`` list
        self.kind = kind
        self.retryable = retryable


class CompensationFailed(PlangateError):
    """A compensation (undo) failed: the saga stops and a manual rollback runbook is surfaced."""

    default_hint = "follow the manual rollback runbook printed with the run result"

    def __init__(self, message: str, *, step: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.step = step
