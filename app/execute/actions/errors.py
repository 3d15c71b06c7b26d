"""Failures of built-in actions that carry more than ``StepFailed`` does.

``ActionFailed`` is a ``StepFailed`` (so the runner's retry and non-retryable handling apply
unchanged) with two optional extras the runner may use: ``retry_after`` (seconds the remote
asked us to wait, from ``Retry-After`` or GitHub's rate-limit headers) and ``outputs`` (what the
attempt produced before failing, e.g. a probe's samples or a program's stderr), so a failure is
recorded with its evidence. Messages never contain secret values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.errors import StepFailed

__all__ = ["ActionFailed", "ProbeFailed"]


class ActionFailed(StepFailed):
    """A built-in action failed; see ``kind`` (stable, documented in docs/actions.md)."""

    def __init__(
        self,
        message: str,
        *,
        step: str,
        kind: str,
        retryable: bool,
        retry_after: float | None = None,
        outputs: Mapping[str, Any] | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, step=step, kind=kind, retryable=retryable, hint=hint)
        #: seconds the remote asked us to wait before trying again (None: not said)
        self.retry_after = retry_after
        #: what the attempt produced before it failed (recorded with the failure)
        self.outputs: Mapping[str, Any] = dict(outputs or {})


class ProbeFailed(ActionFailed):
    """A probe judged its metric bad: the canary must abort. Never retryable.

    ``outputs`` holds every sample and the verdict so the incident can name the failed metrics.
    """

    default_hint = (
        "the canary's metrics broke their thresholds; the plan aborts and compensates. "
        "Look at the samples in the incident before trying again"
    )

    def __init__(self, message: str, *, step: str, outputs: Mapping[str, Any]) -> None:
        super().__init__(
            message, step=step, kind="probe.threshold", retryable=False, outputs=outputs
        )
