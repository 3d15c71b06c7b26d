"""Ports the runner consumes, with the simple implementations used locally and in tests.

The approval verifier (``app.approvals.verify``), the policy engine (``app.policy``) and the audit
store (``app.audit``) are wired to these Protocols at the edge (CLI, Actions entry point), so
the runner never imports them and tests pass a one-line fake. Every port fails closed: an
exception from ``ApprovalGate.verify`` or a ``PolicyVerdict(allowed=False)`` means no mutation.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from app.errors import AttestationError
from app.execute.actions.base import Usage
from app.plan.model import Plan, Step

__all__ = [
    "AllowAllPolicy",
    "ApprovalGate",
    "EventSink",
    "FanoutSink",
    "Incident",
    "IncidentReporter",
    "JsonlEventSink",
    "ListEventSink",
    "NoApprovalGate",
    "PolicyVerdict",
    "RecordingIncidents",
    "ResourceLocks",
    "RuntimePolicy",
    "StaticApprovalGate",
    "StaticPolicy",
    "UnsafeNoApprovalGate",
]

log = logging.getLogger(__name__)


class ResourceLocks(Protocol):
    """Leased locks on a plan's ``resources`` (``app.execute.locks.LockManager`` in SQLite
    locally, ``app.execute.github_locks.GitRefLocks`` across Actions runners).

    ``acquire`` takes all or none and raises ``LockBusy`` (fail fast, or after waiting up to
    ``wait_timeout``); ``renew`` pushes the holder's leases forward and returns how many it still
    holds (0 while it held some: the lease was lost); ``release`` never raises. A backend whose
    ``renew`` does network I/O also offers ``async renew_async(holder)`` (same result, off the
    event loop); the runner's heartbeat prefers it.
    """

    lease: float

    async def acquire(
        self,
        resources: Sequence[str],
        holder: str,
        plan_id: str,
        *,
        wait: bool,
        wait_timeout: float = ...,
        poll: float = ...,
        on_wait: Callable[[list[Any]], None] | None = None,
    ) -> None: ...

    def renew(self, holder: str) -> int: ...

    def release(self, holder: str) -> None: ...


class ApprovalGate(Protocol):
    """Verifies that ``digest`` has a valid approval attestation from a trusted signer.

    Called once per run, before the first mutating step (compensations included). Returns a
    short human summary (who approved) or raises ``AttestationError`` naming the failed check.
    May do I/O (read the attestation from git); the runner calls it before any step starts.
    """

    def verify(self, plan: Plan, digest: str) -> str: ...


class NoApprovalGate:
    """Fail closed: no attestation source is configured, so nothing may mutate."""

    def __init__(self, reason: str = "no approval attestation source is configured") -> None:
        self.reason = reason

    def verify(self, plan: Plan, digest: str) -> str:
        raise AttestationError(f"plan '{plan.id}' ({digest}): {self.reason}", check="missing")


@dataclass
class StaticApprovalGate:
    """Test double: ``error`` raised if set, else ``summary`` returned; calls are recorded."""

    summary: str = "approved (test)"
    error: AttestationError | None = None
    calls: list[str] = field(default_factory=list)

    def verify(self, plan: Plan, digest: str) -> str:
        self.calls.append(digest)
        if self.error is not None:
            raise self.error
        return self.summary


class UnsafeNoApprovalGate:
    """Skips verification. Only for local experiments; logs loudly every time it is used."""

    def verify(self, plan: Plan, digest: str) -> str:
        log.warning(
            "UNSAFE: approval verification skipped for plan %s (%s) (--unsafe-no-approval)",
            plan.id,
            digest,
        )
        return "UNSAFE: approval not verified (--unsafe-no-approval)"


@dataclass(frozen=True, slots=True)
class PolicyVerdict:
    allowed: bool
    reason: str
    #: e.g. a policy cap on parallelism or a soft-limit warning; shown with the run
    notes: tuple[str, ...] = ()


class RuntimePolicy(Protocol):
    """Re-checks one mutating step right before it runs (policy from the default branch).

    ``usage`` is what the run actually used so far. Must not raise for a denial (return
    ``allowed=False`` with a reason naming the rule); an exception is treated as a denial.
    ``max_parallel`` may cap the run's parallelism (None: no cap).
    """

    max_parallel: int | None

    def check_step(self, plan: Plan, step: Step, usage: Usage) -> PolicyVerdict: ...


class AllowAllPolicy:
    """Allows everything: for tests and for plans whose steps never mutate."""

    max_parallel: int | None = None

    def check_step(self, plan: Plan, step: Step, usage: Usage) -> PolicyVerdict:
        return PolicyVerdict(True, "allowed (no runtime policy configured)")


@dataclass
class StaticPolicy:
    """Test double: steps in ``deny`` are denied with ``reason``; checks are recorded."""

    deny: Mapping[str, str] = field(default_factory=dict)
    max_parallel: int | None = None
    checked: list[str] = field(default_factory=list)

    def check_step(self, plan: Plan, step: Step, usage: Usage) -> PolicyVerdict:
        self.checked.append(step.id)
        if step.id in self.deny:
            return PolicyVerdict(False, self.deny[step.id])
        return PolicyVerdict(True, "allowed")


class EventSink(Protocol):
    """Receives run events (audit trail, progress display). Batches as it sees fit.

    ``emit`` must be cheap and must not raise for I/O trouble (buffer and report on ``flush``);
    ``flush`` is called at the end of every run and before the runner returns.
    """

    def emit(self, event_type: str, **fields: Any) -> None: ...

    def flush(self) -> None: ...


@dataclass
class ListEventSink:
    """Keeps events in memory: tests and the progress display."""

    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    flushes: int = 0

    def emit(self, event_type: str, **fields: Any) -> None:
        self.events.append((event_type, fields))

    def flush(self) -> None:
        self.flushes += 1

    def types(self) -> list[str]:
        return [t for t, _ in self.events]

    def of(self, event_type: str) -> list[dict[str, Any]]:
        return [f for t, f in self.events if t == event_type]


class JsonlEventSink:
    """Appends events as JSON Lines, batched: one write per ``batch`` events and on ``flush``.

    ``now`` stamps each event (injected: the runner's clock). The audit store replaces this
    when wired; the file keeps local runs inspectable meanwhile.
    """

    def __init__(self, path: Path, *, now: Callable[[], float], batch: int = 256) -> None:
        self.path = path
        self._now = now
        self._batch = batch
        self._buffer: list[str] = []

    def emit(self, event_type: str, **fields: Any) -> None:
        record = {"type": event_type, "at": self._now(), **fields}
        self._buffer.append(json.dumps(record, default=str, sort_keys=True))
        if len(self._buffer) >= self._batch:
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write("\n".join(self._buffer) + "\n")
        except OSError as exc:  # events are a copy; the state store is the truth
            log.error("cannot write events to %s: %s", self.path, exc)
            return
        self._buffer.clear()


class FanoutSink:
    """Sends every event to several sinks (audit + progress display)."""

    def __init__(self, sinks: Sequence[EventSink]) -> None:
        self.sinks = list(sinks)

    def emit(self, event_type: str, **fields: Any) -> None:
        for sink in self.sinks:
            sink.emit(event_type, **fields)

    def flush(self) -> None:
        for sink in self.sinks:
            sink.flush()


@dataclass(frozen=True, slots=True)
class Incident:
    """A canary abort (or another stop that needs people), with the evidence that caused it."""

    plan_id: str
    plan_digest: str
    run_id: str
    title: str
    summary: str
    failed_metrics: dict[str, Any]

    def render_markdown(self) -> str:
        body = json.dumps(self.failed_metrics, indent=2, sort_keys=True, default=str)
        return (
            f"# {self.title}\n\nPlan `{self.plan_id}` (`{self.plan_digest}`), run `{self.run_id}`."
            f"\n\n{self.summary}\n\n## Failed metrics\n\n```json\n{body}\n```\n\n"
            "See docs/runbooks.md ('A canary aborted').\n"
        )


class IncidentReporter(Protocol):
    """Opens an incident; returns where it lives (a file path, an issue URL).

    Locally a file under the data dir; in Actions mode a GitHub issue (adapter outside the core).
    Must not raise for a reporting failure: return a description of what went wrong instead,
    the abort itself has already happened.
    """

    def open_incident(self, incident: Incident) -> str: ...


@dataclass
class RecordingIncidents:
    incidents: list[Incident] = field(default_factory=list)

    def open_incident(self, incident: Incident) -> str:
        self.incidents.append(incident)
        return f"memory:{len(self.incidents)}"
