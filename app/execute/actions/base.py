"""The port between the executor and action implementations.

The scheduler/runner (``app.execute``) resolves ``${{ }}`` references, checks policy, records
state, applies retries and circuit breakers; an ``Action`` only does its one side effect and
reports what happened. Actions raise ``app.errors.StepFailed`` with a ``kind`` (matched against
the step's ``retry.non_retryable``) and ``retryable``; they never retry by themselves.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel

__all__ = ["Action", "ActionContext", "ActionResult", "Usage"]


@dataclass(frozen=True, slots=True)
class Usage:
    """Actual consumption of one attempt, recorded per step and summed against budgets."""

    tokens_input: int = 0
    tokens_output: int = 0
    api_calls: int = 0
    runner_minutes: float = 0.0
    money: Decimal = Decimal(0)
    model: str | None = None


@dataclass(frozen=True, slots=True)
class ActionContext:
    """What an action gets besides its inputs. ``secrets`` maps secret *names* to values."""

    plan_id: str
    plan_digest: str
    step_id: str
    attempt: int
    #: plan digest + step id (+ attempt): pass it on so external systems can dedupe
    idempotency_key: str
    correlation_id: str
    timeout: float
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
    work_dir: Path | None = None
    dry_run: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ActionResult:
    outputs: Mapping[str, Any] = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage)
    #: human-readable, size-capped, secrets redacted
    log: str = ""


class Action(Protocol):
    """One action implementation (built-in or plugin)."""

    name: str

    async def run(self, inputs: BaseModel, ctx: ActionContext) -> ActionResult:
        """Do the side effect once. Raise ``StepFailed(kind=..., retryable=...)`` on failure.

        Must honour cancellation (``asyncio.CancelledError``) promptly: the runner cancels on
        timeout and expects the subprocess/request to be stopped, not left running.
        """
        ...

    def breaker_key(self, inputs: BaseModel) -> str:
        """The service boundary for circuit breaking, e.g. ``http:api.example.com``."""
        ...
